"""`moments ingest URL --id ID` (the server pulls a network stream) and `moments stop ID`."""

from __future__ import annotations

import argparse
import json
import signal
import threading

import grpc
from rich.markup import escape

from moments_client import cli
from moments_client.errors import MomentsError
from moments_client.types import IngestCommitted, IngestDone, IngestPull

SCHEMES = ("rtsp://", "rtsps://", "http://", "https://", "udp://")


def is_url(source: str) -> bool:
    return "://" in source


def cmd_ingest_url(args: argparse.Namespace) -> int:
    """The server pulls the URL as a live video; progress shows the committed media time and how far commits
    lag what the server has read. Ctrl-C asks the server to stop the pull: the video ends complete."""
    url = args.paths[0]
    if len(args.paths) != 1 or not args.id:
        cli.err.print("[red]error:[/red] a pull takes one URL and --id VIDEO_ID (moments ingest rtsp://... --id cam-7)")
        return cli.EXIT_USAGE
    if not url.lower().startswith(SCHEMES):
        cli.err.print(f"[red]error:[/red] the server pulls {', '.join(SCHEMES)} URLs, not {escape(url)}")
        return cli.EXIT_USAGE
    done: IngestDone | None = None
    read_s = 0.0
    with cli.client_of(args) as client:
        events = client.ingest_url_events(
            url,
            args.id,
            cli.parse_meta(args.meta),
            fps=args.fps,
            keyframes=args.keyframes,
            segment_s=args.segment_s,
            replace=args.replace,
            thumbnails=args.thumbnails,
        )
        stopping: list[threading.Thread] = []

        def request_stop() -> None:
            try:
                client.stop_ingest(args.id)
            except MomentsError as e:  # it had ended, or another server process runs it: Ctrl-C again leaves
                cli.err.print(f"[yellow]{e.code.name}: {escape(e.message)}[/yellow]")

        def on_sigint(signum: int, frame: object) -> None:
            # the first Ctrl-C asks the server to stop the pull (the events go on until `done`); a second leaves
            if stopping:
                raise KeyboardInterrupt
            cli.err.print("[yellow]stopping the pull...[/yellow]")
            stopping.append(threading.Thread(target=request_stop, daemon=True))
            stopping[0].start()

        previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            for event in events:
                if isinstance(event, IngestPull):
                    read_s = event.media_s
                    if event.error and not args.quiet:
                        cli.err.print(
                            f"[yellow]source lost ({escape(event.error)}); reconnect {event.reconnects} "
                            f"in {event.retry_in_s:.1f} s[/yellow]"
                        )
                elif isinstance(event, IngestCommitted) and not args.quiet:
                    lag = max(read_s - event.media_s, 0.0)
                    cli.err.print(
                        f"committed {event.media_s:7.1f} s of video, {event.frames} frames, "
                        f"{cli.fmt_bytes(event.bytes)}, {event.segments} segments (lag {lag:.1f} s)"
                    )
                elif isinstance(event, IngestDone):
                    done = event
        except MomentsError as e:
            cli.err.print(f"[red]error:[/red] {e.code.name}: {escape(e.message)}")
            return cli.EXIT_UNREACHABLE if e.code == grpc.StatusCode.UNAVAILABLE else cli.EXIT_FAILED
        finally:
            signal.signal(signal.SIGINT, previous)
    if done is not None:
        summary = {"video_id": args.id, "state": done.video.state, "frames": done.frames}
        summary["duration_s"] = done.video.duration_s
        print(json.dumps(summary) if args.json else f"{args.id}: {done.video.state}, {done.frames} frames")
    return cli.EXIT_OK


def cmd_stop(args: argparse.Namespace) -> int:
    """`moments stop cam-7`: end the running pull (or live stream) of a video cleanly."""
    with cli.client_of(args) as client:
        try:
            video = client.stop_ingest(args.video_id)
        except MomentsError as e:
            cli.err.print(f"[red]error:[/red] {e.code.name}: {escape(e.message)}")
            return cli.EXIT_FAILED
    if video is None:
        print(f"{args.video_id}: stopped, nothing was committed")
    else:
        summary = {"video_id": video.video_id, "state": video.state, "frames": video.frames}
        print(json.dumps(summary) if args.json else f"{video.video_id}: {video.state}, {video.frames} frames")
    return cli.EXIT_OK


def add_stop_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("stop", parents=[common], help="end a running pull (or live stream) cleanly")
    p.add_argument("video_id", metavar="VIDEO_ID")
    p.add_argument("--json", action="store_true", help="print the video as JSON")
    p.set_defaults(func=cmd_stop)
