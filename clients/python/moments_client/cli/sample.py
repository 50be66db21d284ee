"""`moments sample-video OUT`: a video of drawn shapes at known seconds, made offline (needs PyAV), for a first
search that means something."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.table import Table

from moments_client.cli.common import EXIT_OK, Subcommands, UsageError, out


def parse_shapes(spec: str) -> list[tuple[str, str]]:
    from moments_shapes import COLORS, SHAPES

    shapes = []
    for item in spec.split(","):
        color, sep, shape = item.strip().partition(":")
        if not sep or color not in COLORS or shape not in SHAPES:
            raise UsageError(
                f"--shapes {item!r}: expected color:shape with a color in {', '.join(COLORS)} and a "
                f"shape in {', '.join(SHAPES)}"
            )
        shapes.append((color, shape))
    return shapes


def cmd_sample_video(args: argparse.Namespace) -> int:
    try:
        from moments_client.sample_video import CODECS, write_shapes_video
    except ImportError as e:  # pragma: no cover - numpy/PIL are dependencies
        raise UsageError(f"sample-video needs numpy and pillow: {e}") from None
    try:
        import av  # noqa: F401
    except ImportError:
        raise UsageError("sample-video needs PyAV: pip install 'moments-client[video]'") from None
    if args.codec not in CODECS:
        raise UsageError(f"--codec must be one of {', '.join(CODECS)}")
    w, _, h = args.size.lower().partition("x")
    try:
        size = (int(w), int(h or w))
    except ValueError:
        raise UsageError(f"--size {args.size!r}: expected WIDTHxHEIGHT, e.g. 256x256") from None
    shapes = parse_shapes(args.shapes)
    path = Path(args.output)
    if path.parent and not path.parent.exists():
        raise UsageError(f"folder {path.parent} does not exist")
    schedule = write_shapes_video(
        path, shapes, seconds_each=args.seconds, fps=args.fps, size=size, codec=args.codec, seed=args.seed
    )
    if args.json:
        print(
            json.dumps(
                [
                    {"start_s": s.start_s, "end_s": s.end_s, "color": s.color, "shape": s.shape, "caption": s.caption}
                    for s in schedule
                ],
                indent=2,
            )
        )
        return EXIT_OK
    table = Table(title=f"{path} ({schedule[-1].end_s:g} s, {size[0]}x{size[1]}, {args.codec})", title_justify="left")
    for col in ("from", "to", "on screen"):
        table.add_column(col, justify="left" if col == "on screen" else "right")
    for s in schedule:
        table.add_row(f"{s.start_s:g} s", f"{s.end_s:g} s", s.caption)
    out.print(table)
    out.print(f'next: moments ingest {path}  &&  moments search "{schedule[0].caption}"')
    return EXIT_OK


def register(sub: Subcommands, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("sample-video", help="write a video of coloured shapes at known seconds (offline demo)")
    p.add_argument("output", metavar="OUT", help="e.g. demo.mp4")
    p.add_argument(
        "--shapes",
        default="red:circle,blue:square,green:triangle,yellow:cross",
        help="color:shape,... in order (default %(default)s)",
    )
    p.add_argument("--seconds", type=float, default=2.0, help="seconds each shape stays (default %(default)s)")
    p.add_argument("--fps", type=int, default=10)
    p.add_argument("--size", default="256x256", help="WIDTHxHEIGHT (default %(default)s)")
    p.add_argument("--codec", default="h264", help="h264, hevc, vp9, mpeg4 or mjpeg (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the schedule as JSON")
    p.set_defaults(func=cmd_sample_video)
