"""`moments embed TEXT... | --image FILE...`: the model's vectors, as JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from moments_client.cli.common import EXIT_OK, Subcommands, UsageError, client_of


def cmd_embed(args: argparse.Namespace) -> int:
    images: list[bytes] = []
    for path in args.image:
        try:
            images.append(Path(path).read_bytes())
        except OSError as e:
            raise UsageError(f"cannot read image {path}: {e.strerror or e}") from None
    with client_of(args) as client:
        result = client.embed(texts=args.texts or None, images=images or None)
    print(
        json.dumps(
            {
                "model": result.model,
                "dimensions": result.dimensions,
                "embeddings": [[round(float(x), 6) for x in row] for row in result.vectors],
            }
        )
    )
    return EXIT_OK


def register(sub: Subcommands, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("embed", parents=[common], help="the model's vectors for texts or images, as JSON")
    p.add_argument("texts", nargs="*")
    p.add_argument("--image", action="append", default=[], metavar="FILE")
    p.set_defaults(func=cmd_embed)
