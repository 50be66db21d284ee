"""The ingests that run until they are stopped: `moments ingest - --live --id ID` (standard input, a file or a
FIFO streamed as a live video), `moments ingest URL --id ID` (the server pulls a network stream) and
`moments stop ID`. Ctrl-C ends either cleanly: what was committed stays and the video is complete."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Iterator

import grpc
from rich.markup import escape

from moments_client.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    Subcommands,
    client_of,
    err,
    fmt_bytes,
    parse_meta,
)
from moments_client.errors import MomentsError
from moments_client.types import IngestCommitted, IngestDone, IngestPull, Video

SCHEMES = ("rtsp://", "rtsps://", "http://", "https://", "udp://")


def is_url(source: str) -> bool:
    return "://" in source


def _stdin_or_file(path: str, stop: threading.Event, chunk: int = 1 << 16) -> Iterator[bytes]:
    """The bytes of a live source (`-` = standard input, or a file or FIFO) until it ends or `stop` is set."""
    with open(sys.stdin.fileno(), "rb", closefd=False) if path == "-" else open(path, "rb") as f:
        while not stop.is_set():
            data = f.read1(chunk) if hasattr(f, "read1") else f.read(chunk)
            if not data:
                return
            yield data


def print_committed(event: IngestCommitted, lag: float) -> None:
    err.print(
        f"committed {event.media_s:7.1f} s of video, {event.frames} frames, "
        f"{fmt_bytes(event.bytes)}, {event.segments} segments (lag {lag:.1f} s)"
    )


def stream_failed(e: MomentsError) -> int:
    err.print(f"[red]error:[/red] {e.code.name}: {escape(e.message)}")
    return EXIT_UNREACHABLE if e.code == grpc.StatusCode.UNAVAILABLE else EXIT_FAILED


def print_video(video: Video, frames: int, as_json: bool) -> None:
    """The video an ingest or `moments stop` ended: one line, or one JSON object."""
    summary = {"video_id": video.video_id, "state": video.state, "frames": frames, "duration_s": video.duration_s}
    print(json.dumps(summary) if as_json else f"{video.video_id}: {video.state}, {frames} frames")


def print_done(args: argparse.Namespace, done: IngestDone | None) -> int:
    if done is not None:
        print_video(done.video, done.frames, args.json)
    return EXIT_OK


def cmd_ingest_live(args: argparse.Namespace) -> int:
    """`moments ingest - --live --id cam-7`: stream standard input (or a file/FIFO) as a live video; Ctrl-C ends
    the stream cleanly (what was sent is committed and the video is complete)."""
    if len(args.paths) != 1 or not args.id:
        err.print("[red]error:[/red] --live takes one source ('-' for standard input) and --id VIDEO_ID")
        return EXIT_USAGE
    stop = threading.Event()
    started = time.monotonic()
    done = None
    with client_of(args) as client:
        events = client.ingest_events(
            _stdin_or_file(args.paths[0], stop),
            args.id,
            parse_meta(args.meta),
            fps=args.fps,
            live=True,
            segment_s=args.segment_s,
            replace=args.replace,
            thumbnails=args.thumbnails,
            filename=args.paths[0] if args.paths[0] != "-" else "stdin",
        )
        try:
            while True:
                try:
                    event = next(events)
                except StopIteration:
                    break
                except KeyboardInterrupt:
                    stop.set()  # the sender ends the stream at its next chunk; the server completes the video
                    err.print("[yellow]ending the stream...[/yellow]")
                    continue
                if isinstance(event, IngestCommitted) and not args.quiet:
                    print_committed(event, max(time.monotonic() - started - event.media_s, 0.0))
                elif isinstance(event, IngestDone):
                    done = event
        except MomentsError as e:
            return stream_failed(e)
    return print_done(args, done)


def cmd_ingest_url(args: argparse.Namespace) -> int:
    """The server pulls the URL as a live video; progress shows the committed media time and how far commits
    lag what the server has read. Ctrl-C asks the server to stop the pull: the video ends complete."""
    url = args.paths[0]
    if len(args.paths) != 1 or not args.id:
        err.print("[red]error:[/red] a pull takes one URL and --id VIDEO_ID (moments ingest rtsp://... --id cam-7)")
        return EXIT_USAGE
    if not url.lower().startswith(SCHEMES):
        err.print(f"[red]error:[/red] the server pulls {', '.join(SCHEMES)} URLs, not {escape(url)}")
        return EXIT_USAGE
    done: IngestDone | None = None
    read_s = 0.0
    with client_of(args) as client:
        events = client.ingest_url_events(
            url,
            args.id,
            parse_meta(args.meta),
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
                err.print(f"[yellow]{e.code.name}: {escape(e.message)}[/yellow]")

        def on_sigint(signum: int, frame: object) -> None:
            # the first Ctrl-C asks the server to stop the pull (the events go on until `done`); a second leaves
            if stopping:
                raise KeyboardInterrupt
            err.print("[yellow]stopping the pull...[/yellow]")
            stopping.append(threading.Thread(target=request_stop, daemon=True))
            stopping[0].start()

        previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            for event in events:
                if isinstance(event, IngestPull):
                    read_s = event.media_s
                    if event.error and not args.quiet:
                        err.print(
                            f"[yellow]source lost ({escape(event.error)}); reconnect {event.reconnects} "
                            f"in {event.retry_in_s:.1f} s[/yellow]"
                        )
                elif isinstance(event, IngestCommitted) and not args.quiet:
                    print_committed(event, max(read_s - event.media_s, 0.0))
                elif isinstance(event, IngestDone):
                    done = event
        except MomentsError as e:
            return stream_failed(e)
        finally:
            signal.signal(signal.SIGINT, previous)
    return print_done(args, done)


def cmd_stop(args: argparse.Namespace) -> int:
    """`moments stop cam-7`: end the running pull (or live stream) of a video cleanly."""
    with client_of(args) as client:
        try:
            video = client.stop_ingest(args.video_id)
        except MomentsError as e:
            err.print(f"[red]error:[/red] {e.code.name}: {escape(e.message)}")
            return EXIT_FAILED
    if video is None:
        print(f"{args.video_id}: stopped, nothing was committed")
    else:
        print_video(video, video.frames, args.json)
    return EXIT_OK


def register(sub: Subcommands, common: argparse.ArgumentParser) -> None:
    """`moments stop`; the live and pull ingests are `moments ingest`'s (its --live, --id and --segment-s)."""
    p = sub.add_parser("stop", parents=[common], help="end a running pull (or live stream) cleanly")
    p.add_argument("video_id", metavar="VIDEO_ID")
    p.add_argument("--json", action="store_true", help="print the video as JSON")
    p.set_defaults(func=cmd_stop)
