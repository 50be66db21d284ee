"""`moments videos ls|get|rm`: list, show or delete stored videos."""

from __future__ import annotations

import argparse
import json

import grpc
from rich.markup import escape
from rich.table import Table

from moments_client.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    Subcommands,
    client_of,
    err,
    fmt_bytes,
    fmt_meta,
    fmt_time,
    out,
)
from moments_client.errors import MomentsError


def cmd_videos_ls(args: argparse.Namespace) -> int:
    with client_of(args) as client:
        videos = list(client.list_videos(page_size=args.page_size))
    if args.json:
        print(json.dumps([v.to_json() for v in videos], indent=2))
        return EXIT_OK
    table = Table(title=f"{len(videos)} videos", title_justify="left")
    for col in ("video_id", "file", "duration", "frames", "size", "video", "ingested", "metadata"):
        numeric = col in ("duration", "frames", "size")
        table.add_column(col, overflow="fold", justify="right" if numeric else "left", no_wrap=numeric)
    for v in videos:
        table.add_row(
            v.video_id,
            escape(v.filename),
            f"{v.duration_s:.1f} s",
            str(v.frames),
            fmt_bytes(v.size_bytes),
            f"{v.codec} {v.width}x{v.height}",
            fmt_time(v.ingested_at),
            escape(fmt_meta(v.metadata)),
        )
    out.print(table)
    return EXIT_OK


def cmd_videos_get(args: argparse.Namespace) -> int:
    with client_of(args) as client:
        video = client.get_video(args.video_id)
    print(json.dumps(video.to_json(), indent=2))
    return EXIT_OK


def cmd_videos_rm(args: argparse.Namespace) -> int:
    code = EXIT_OK
    with client_of(args) as client:
        for vid in args.video_ids:
            try:
                frames = client.delete_video(vid)
                out.print(f"deleted {vid} ({frames} frames)")
            except MomentsError as e:
                if e.code == grpc.StatusCode.UNAVAILABLE:
                    raise
                err.print(f"[red]error:[/red] {vid}: {e.code.name}: {escape(e.message)}")
                code = EXIT_FAILED
    return code


def register(sub: Subcommands, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("videos", parents=[common], help="list, show or delete stored videos")
    vsub = p.add_subparsers(dest="videos_command", required=True, metavar="ls|get|rm")
    q = vsub.add_parser("ls", parents=[common], help="list stored videos")
    q.add_argument("--json", action="store_true")
    q.add_argument("--page-size", type=int, default=100)
    q.set_defaults(func=cmd_videos_ls)
    q = vsub.add_parser("get", parents=[common], help="one video's record as JSON")
    q.add_argument("video_id")
    q.set_defaults(func=cmd_videos_get)
    q = vsub.add_parser("rm", parents=[common], help="delete videos with their frames")
    q.add_argument("video_ids", nargs="+", metavar="ID")
    q.set_defaults(func=cmd_videos_rm)
