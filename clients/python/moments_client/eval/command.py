"""``moments eval SET.json``: retrieval quality of a live server on a labelled set (tables, JSON, a PNG).

Registered by :mod:`moments_client.cli` through :func:`add_parser`; this module imports nothing beyond the
standard library at start, so the ``eval`` extra (pydantic, matplotlib) is needed only when the command runs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "cmd_eval"]


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "eval",
        parents=[common],
        help="measure search quality on a labelled set (HIT@k, recall@k, mAP, nDCG@10, temporal IoU)",
        description="Search every query of a labelled set (docs/eval.md) on the server and score the moments. "
        "Demo set: python -m moments_client.eval.corpus DIR, then moments eval DIR/set.json --ingest",
    )
    p.add_argument("set", metavar="SET.json", help="the labelled set (docs/eval.md)")
    p.add_argument("--ingest", action="store_true", help="upload the set's videos first (replacing stored ones)")
    p.add_argument("--fps", type=float, default=1.0, help="--ingest: frames per second to sample (default 1)")
    p.add_argument("--parallel", "-j", type=int, default=2, help="--ingest: concurrent uploads (default 2)")
    p.add_argument("--top-k", "-k", type=int, default=10, help="moments asked per query (default %(default)s)")
    p.add_argument("--merge", action="store_true", help="search with merge_adjacent")
    p.add_argument("--merge-tolerance", type=float, metavar="SCORE", help="with --merge: the merge tolerance")
    p.add_argument("--group", action="store_true", help="search with group_by_video (one moment per video)")
    p.add_argument("--min-score", type=float, help="search with this min_score")
    p.add_argument(
        "--iou-threshold",
        type=float,
        default=0.0,
        help="a moment matches a relevant range only at this temporal IoU or more (default 0: any overlap)",
    )
    p.add_argument(
        "--all-videos",
        action="store_true",
        help="search the whole library (moments of videos outside the set count as not relevant); "
        "default: only the set's videos",
    )
    p.add_argument("--json", metavar="OUT", help="write the report as JSON ('-': standard output, no tables)")
    p.add_argument("--plot", metavar="PNG", help="write the recall@k curve and the IoU histogram to this PNG")
    p.add_argument("--per-query", action="store_true", help="print every query's row (default: the misses)")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    from moments_client.cli.common import EXIT_OK, UsageError, client_of, err, out

    try:
        from moments_client.eval import labels, report, runner
    except ImportError as e:
        raise UsageError(f"moments eval needs pydantic: pip install 'moments-client[eval]' ({e})") from None
    if args.top_k < 1:
        raise UsageError("--top-k must be at least 1")
    if not 0 <= args.iou_threshold <= 1:
        raise UsageError("--iou-threshold must be within [0, 1]")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise UsageError("--plot needs matplotlib: pip install 'moments-client[eval]'") from None
    labelled = labels.load_set(args.set)
    opts = runner.EvalOptions(
        top_k=args.top_k,
        merge_adjacent=args.merge,
        merge_tolerance=args.merge_tolerance,
        group_by_video=args.group,
        min_score=args.min_score,
        iou_threshold=args.iou_threshold,
        set_videos_only=not args.all_videos,
    )
    quiet = args.json == "-"
    with client_of(args) as client:
        if args.ingest:

            def done(video_id: str, seconds: float) -> None:
                if not quiet:
                    err.print(f"ingested {video_id} in {seconds:.1f} s")

            runner.ingest_set(client, labelled, fps=args.fps, parallel=args.parallel, on_done=done)
        result = runner.run_eval(client, labelled, opts)
    result["set"]["path"] = str(Path(args.set))
    if args.json:
        text = json.dumps(result, indent=2)
        if quiet:
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    if args.plot:
        from moments_client.eval.plot import write_plot

        write_plot(args.plot, [("", result)], title=result["set"]["name"] or str(args.set))
    if quiet:
        return EXIT_OK
    out.print(report.aggregate_table(result))
    missed = report.misses(result)
    if args.per_query:
        out.print(report.query_table(result))
    elif missed:
        shown = " (the 10 worst shown; --per-query: all)" if len(missed) > 10 else ""
        out.print(
            report.query_table(result, missed[:10], f"{len(missed)} queries whose top moment is not relevant{shown}")
        )
    if args.json:
        err.print(f"report: {args.json}")
    if args.plot:
        err.print(f"plot: {args.plot}")
    return EXIT_OK
