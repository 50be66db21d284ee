"""`moments search TEXT`: the moments that match a text, an image or a composed query, as a table or JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.table import Table

from moments_client.cli.common import EXIT_OK, Subcommands, UsageError, client_of, err, fmt_meta, out, parse_where


def cmd_search(args: argparse.Namespace) -> int:
    # the query's arguments are checked by client.search: its ValueError is shown as a usage error (exit 2)
    image = None
    if args.image is not None:
        try:
            image = Path(args.image).read_bytes()
        except OSError as e:
            raise UsageError(f"cannot read image {args.image}: {e.strerror or e}") from None
    where = parse_where(args.where)
    with client_of(args) as client:
        result = client.search(
            text=args.text,
            image=image,
            top_k=args.top_k,
            video_ids=args.video or None,
            start_s=args.start,
            end_s=args.end,
            where=where,
            merge_adjacent=args.merge,
            group_by_video=args.group,
            min_score=args.min_score,
            merge_tolerance=args.merge_tolerance,
            page_token=args.page_token,
            include_thumbnails=args.thumbnails is not None,
            complete_only=args.complete_only,
            image_weight=args.image_weight,
            any_texts=args.any,
            negative_texts=args.negative,
            max_per_video=args.max_per_video,
            relative_score=args.within,
        )
    if args.thumbnails is not None:
        folder = Path(args.thumbnails)
        folder.mkdir(parents=True, exist_ok=True)
        for i, m in enumerate(result, 1):
            if m.thumbnail_jpeg:
                (folder / f"{i:02d}-{m.video_id}-{m.best_frame_s:.1f}s.jpg").write_bytes(m.thumbnail_jpeg)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
        return EXIT_OK
    terms = ([repr(args.text)] if args.text is not None else []) + ([f"image {args.image}"] if args.image else [])
    terms += [f"or {t!r}" for t in args.any] + [f"not {t!r}" for t in args.negative]
    query = " ".join(terms)
    table = Table(title=f"{len(result)} moments for {query}", title_justify="left")
    for col, justify in (
        ("#", "right"),
        ("video", "left"),
        ("from", "right"),
        ("to", "right"),
        ("best", "right"),
        ("score", "right"),
        ("metadata", "left"),
    ):
        table.add_column(col, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for i, m in enumerate(result, 1):
        table.add_row(
            str(i),
            m.video_id,
            f"{m.start_s:.1f} s",
            f"{m.end_s:.1f} s",
            f"{m.best_frame_s:.1f} s",
            f"{m.score:.3f}",
            fmt_meta(m.metadata),
        )
    out.print(table)
    if result.trimmed:
        out.print("fewer moments than asked: the page reached the server's response limit")
    if result.next_page_token:
        out.print(f"more: --page-token {result.next_page_token}")
    t = result.timing
    err.print(
        f"[dim]{t.total_ms:.1f} ms (queue {t.queue_ms:.1f}, inference {t.inference_ms:.1f}, "
        f"store {t.store_ms:.1f})[/dim]"
    )
    return EXIT_OK


def register(sub: Subcommands, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("search", parents=[common], help="find moments matching a text or an image")
    p.add_argument("text", nargs="?", help="what to look for, e.g. 'a red circle'")
    p.add_argument("--image", metavar="FILE", help="search with a JPEG/PNG (with a text too: their weighted mix)")
    p.add_argument(
        "--image-weight",
        type=float,
        metavar="W",
        help="with a text and --image: the image's share of the query, 0..1 (default 0.5)",
    )
    p.add_argument(
        "--any", action="append", default=[], metavar="TEXT", help="or this text: a frame scores its best match"
    )
    p.add_argument(
        "--not",
        dest="negative",
        action="append",
        default=[],
        metavar="TEXT",
        help="push down frames that match this text (repeatable)",
    )
    p.add_argument("--max-per-video", type=int, default=0, metavar="N", help="at most N moments per video")
    p.add_argument("--within", type=float, metavar="D", help="only moments scoring within D of the best one")
    p.add_argument("--top-k", "-k", type=int, default=10, help="moments to return (default %(default)s)")
    p.add_argument("--video", action="append", default=[], metavar="ID", help="only this video (repeatable)")
    p.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="COND",
        help="metadata condition (repeatable): key=value, key!=value, key>=value, key<value, 'key in a,b'",
    )
    p.add_argument("--start", type=float, help="only frames at or after this second")
    p.add_argument("--end", type=float, help="only frames at or before this second")
    p.add_argument("--complete-only", action="store_true", help="leave out live (and interrupted) streams")
    p.add_argument("--merge", action="store_true", help="merge adjacent hits of a video into one moment")
    p.add_argument(
        "--merge-tolerance",
        type=float,
        metavar="SCORE",
        help="with --merge: how far from a moment's best score a frame may score and still join it",
    )
    p.add_argument("--group", action="store_true", help="at most one moment per video")
    p.add_argument("--min-score", type=float, help="drop moments scoring below this")
    p.add_argument("--page-token", help="the next page of a previous search")
    p.add_argument(
        "--thumbnails",
        metavar="DIR",
        help="save each moment's best frame as a JPEG in DIR (videos ingested with --thumbnails)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_search)
