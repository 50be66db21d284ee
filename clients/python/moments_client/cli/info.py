"""`moments info`: the serving model, store and limits."""

from __future__ import annotations

import argparse
import json

from rich.table import Table

from moments_client.cli.common import EXIT_OK, Subcommands, client_of, fmt_bytes, out


def cmd_info(args: argparse.Namespace) -> int:
    with client_of(args) as client:
        info = client.info()
    if args.json:
        print(json.dumps(info.to_json(), indent=2))
        return EXIT_OK
    table = Table(title=f"Moments at {args.target}", title_justify="left", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value", overflow="fold")
    m, lim = info.model, info.limits
    rows = [
        ("model", f"{m.name} ({m.pretrained})" if m.pretrained and m.pretrained != m.name else m.name),
        ("dimensions", str(m.dimensions)),
        ("image size", f"{m.image_size} px"),
        ("precision", m.precision),
        ("provider", m.provider),
        ("graph", "fused" if m.fused else "unfused"),
        ("CUDA graphs", "on" if m.cuda_graphs else "off"),
        ("buckets (text)", " ".join(map(str, m.text_buckets)) or "-"),
        ("buckets (image)", " ".join(map(str, m.image_buckets)) or "-"),
        ("fingerprint", m.fingerprint),
        ("descriptor set", info.descriptor_set),
        ("store", info.store),
        ("max top_k", str(lim.max_top_k)),
        ("max upload", fmt_bytes(lim.max_upload_bytes)),
        ("max fps", f"{lim.max_fps:g}"),
        ("max frames", str(lim.max_frames)),
        ("batch (text/image)", f"{lim.text_max_batch}/{lim.image_max_batch}"),
    ]
    if lim.max_metadata_keys:  # servers before these limits do not report them
        rows += [
            (
                "metadata per video",
                f"{lim.max_metadata_keys} keys, {fmt_bytes(lim.max_metadata_value_bytes)} a value, "
                f"{fmt_bytes(lim.max_metadata_bytes)} in all",
            ),
            ("query text", f"{lim.max_query_chars} characters"),
            ("query image", f"{fmt_bytes(lim.max_image_bytes)}, {lim.max_image_pixels / 1e6:g} megapixels"),
            (
                "video",
                f"{lim.max_video_pixels / 1e6:g} megapixels, {lim.max_video_duration_s / 3600:g} h, "
                f"sides up to {lim.max_video_aspect}:1",
            ),
            ("max response", fmt_bytes(lim.max_response_bytes)),
            ("concurrent ingests", str(lim.max_concurrent_ingests)),
        ]
    rows += [
        ("version", info.version),
    ]
    for k, v in rows:
        table.add_row(k, v)
    out.print(table)
    return EXIT_OK


def register(sub: Subcommands, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("info", parents=[common], help="the serving model, store and limits")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)
