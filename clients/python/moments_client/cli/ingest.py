"""`moments ingest PATH...`: upload files and folders (recursive) in parallel streams, with a progress bar each
and a summary; a URL or --live goes to :mod:`moments_client.cli.live`."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from rich.markup import escape
from rich.table import Table

from moments_client.cli import live
from moments_client.cli.common import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, Subcommands, err, out, parse_meta
from moments_client.cli.jobs import Job, collect, readable
from moments_client.cli.uploads import upload


def cmd_ingest(args: argparse.Namespace) -> int:
    if any(live.is_url(p) for p in args.paths):
        return live.cmd_ingest_url(args)
    if args.live:
        return live.cmd_ingest_live(args)
    meta = parse_meta(args.meta)
    jobs = collect(args.paths, args.id_from)
    result = upload(args, meta, readable(jobs))
    for job in jobs:
        if job.status == "pending":  # never started (Ctrl-C)
            job.status, job.reason = "failed", "skipped: cancelled (Ctrl-C)"
    failed = [j for j in jobs if j.status != "ok"]
    print_summary(jobs, failed, as_json=args.json)
    if failed:
        for j in failed:
            err.print(f"[red]failed[/red] {escape(str(j.path))}: {escape(j.reason)}")
        if result.interrupted:
            return 130
        if result.unreachable and len(failed) == len(jobs):
            return EXIT_UNREACHABLE
        return EXIT_FAILED
    return EXIT_OK


def print_summary(jobs: Sequence[Job], failed: Sequence[Job], as_json: bool) -> None:
    if as_json:
        print(
            json.dumps(
                {
                    "ingested": [
                        {
                            "path": str(j.path),
                            "video_id": j.video_id,
                            "frames": j.frames,
                            "duration_s": j.duration_s,
                            "seconds": round(j.seconds, 3),
                        }
                        for j in jobs
                        if j.status == "ok"
                    ],
                    "failed": [{"path": str(j.path), "video_id": j.video_id, "reason": j.reason} for j in failed],
                },
                indent=2,
            )
        )
    else:
        table = Table(title="ingest summary", title_justify="left")
        for col in ("file", "video_id", "status", "frames", "duration", "time", "reason"):
            table.add_column(col, overflow="fold", justify="right" if col in ("frames", "duration", "time") else "left")
        for j in jobs:
            ok = j.status == "ok"
            table.add_row(
                escape(str(j.path)),
                j.video_id,
                "[green]ok" if ok else "[red]failed",
                str(j.frames) if ok else "",
                f"{j.duration_s:.1f} s" if ok else "",
                f"{j.seconds:.2f} s" if j.seconds else "",
                escape(j.reason),
            )
        out.print(table)
        out.print(f"{len(jobs) - len(failed)} ingested, {len(failed)} failed")


def register(sub: Subcommands, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "ingest", parents=[common], help="upload videos (files or folders, recursive), or have the server pull a URL"
    )
    p.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="video files, or folders searched recursively; or one rtsp://, rtsps://, http(s):// (HLS) or udp:// "
        "URL that the server pulls as a live video (needs --id; Ctrl-C or `moments stop ID` ends it cleanly)",
    )
    p.add_argument("--parallel", "-j", type=int, default=2, help="concurrent upload streams (default %(default)s)")
    p.add_argument(
        "--id-from",
        choices=("name", "path"),
        default="name",
        help="video id from the file name (default) or its path under the folder given",
    )
    p.add_argument(
        "--meta",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="metadata for every video (repeatable); numbers, true/false, dates are typed",
    )
    p.add_argument("--replace", action="store_true", help="replace videos whose id exists")
    p.add_argument("--fps", type=float, default=1.0, help="frames per second to sample (default %(default)s)")
    p.add_argument("--max-frames", type=int, default=0, help="stop after this many frames per video (0 = no limit)")
    p.add_argument(
        "--keyframes",
        action="store_true",
        help="keep only keyframes (at most one per 1/fps window): far less decoding, frames as far apart as keyframes",
    )
    p.add_argument("--thumbnails", action="store_true", help="store a small JPEG per sampled frame")
    p.add_argument(
        "--live",
        action="store_true",
        help="stream one source that may never end ('-' = standard input, e.g. ffmpeg ... -f mpegts -), "
        "committed and searchable every --segment-s seconds of video; needs --id; Ctrl-C ends it cleanly",
    )
    p.add_argument("--id", help="the video id (--live, a URL)")
    p.add_argument(
        "--segment-s",
        type=float,
        default=0.0,
        help="--live, a URL: seconds of video per commit (0 = the server's default)",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON (no progress bars)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_ingest)
