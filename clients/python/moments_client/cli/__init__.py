"""The ``moments`` command: ingest videos, search them, and look after the library.

    moments sample-video demo.mp4          # shapes at known seconds (works offline)
    moments ingest demo.mp4                # or folders, recursively, with --parallel N streams
    moments ingest rtsp://cam/live --id cam-7   # the server pulls a camera (or http(s) HLS, udp); Ctrl-C ends it
    moments search "a red circle"          # a table; --json for scripts
    moments eval set.json --ingest         # search quality on a labelled set (docs/eval.md)

Exit codes: 0 ok; 1 the server refused a call, or some files failed to ingest; 2 bad usage or an unreadable
local file; 3 the server is unreachable or did not answer in time.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

import grpc
from rich.markup import escape

from moments_client.cli.common import (
    DEFAULT_TARGET,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    UsageError,
    client_of,
    err,
    fmt_bytes,
    fmt_meta,
    fmt_time,
    fmt_value,
    out,
    parse_meta,
    parse_value,
    parse_where,
    upload_rate,
)
from moments_client.errors import MomentsError

# What a command module needs, importable from here too (`from moments_client import cli; cli.err.print(...)`).
__all__ = [
    "DEFAULT_TARGET",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "UsageError",
    "build_parser",
    "client_of",
    "err",
    "fmt_bytes",
    "fmt_meta",
    "fmt_time",
    "fmt_value",
    "main",
    "out",
    "parse_meta",
    "parse_value",
    "parse_where",
    "upload_rate",
]


def server_options(suppress: bool) -> argparse.ArgumentParser:
    # The subcommands take the same options (so `moments search --target X` works too); theirs default to
    # SUPPRESS so that they never overwrite a value given before the subcommand.
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("server")

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    g.add_argument(
        "--target",
        default=default(os.environ.get("MOMENTS_TARGET", DEFAULT_TARGET)),
        help=f"host:port of the server, or several comma-separated (balanced round-robin) (env MOMENTS_TARGET; "
        f"default {DEFAULT_TARGET})",
    )
    g.add_argument(
        "--token",
        default=default(os.environ.get("MOMENTS_TOKEN")),
        help="bearer token, sent as 'authorization: Bearer <token>' (env MOMENTS_TOKEN)",
    )
    g.add_argument(
        "--timeout",
        type=float,
        default=default(float(os.environ.get("MOMENTS_TIMEOUT", 30))),
        help="deadline of each call in seconds, ingest excepted (env MOMENTS_TIMEOUT; default 30)",
    )
    g.add_argument(
        "--tls", action="store_true", default=default(False), help="use TLS with the system's root certificates"
    )
    g.add_argument(
        "--ca-cert",
        metavar="PEM",
        default=default(os.environ.get("MOMENTS_CA_CERT")),
        help="use TLS with this CA bundle (env MOMENTS_CA_CERT)",
    )
    g.add_argument(
        "--client-cert",
        metavar="PEM",
        default=default(os.environ.get("MOMENTS_CLIENT_CERT")),
        help="client certificate for servers that require one (mTLS; env MOMENTS_CLIENT_CERT)",
    )
    g.add_argument(
        "--client-key",
        metavar="PEM",
        default=default(os.environ.get("MOMENTS_CLIENT_KEY")),
        help="its private key (env MOMENTS_CLIENT_KEY)",
    )
    return p


def build_parser() -> argparse.ArgumentParser:
    # One module a command (or a family: `videos ls|get|rm`); each adds its subcommands with register(sub, common),
    # listed in `moments --help` in this order. Imported here, so that a command module may import this package.
    from moments_client.cli import embed, info, ingest, live, sample, search, videos
    from moments_client.eval.command import add_parser as add_eval_parser

    common = server_options(suppress=True)
    parser = argparse.ArgumentParser(
        prog="moments",
        parents=[server_options(suppress=False)],
        description="Find the moments in a video library that match a sentence or a picture.",
        epilog="exit codes: 0 ok, 1 the server refused or some files failed, 2 usage or unreadable local file, "
        "3 server unreachable",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in (ingest, live, search, info, videos, embed, sample):
        command.register(sub, common)
    add_eval_parser(sub, common)  # moments eval: its own package (moments_client.eval)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except UsageError as e:
        err.print(f"[red]error:[/red] {escape(str(e))}")
        return EXIT_USAGE
    except MomentsError as e:
        if e.code == grpc.StatusCode.UNAVAILABLE:
            err.print(
                f"[red]error:[/red] cannot reach the Moments server at {args.target}: {escape(e.message)}\n"
                "Is it running? Start one with `make serve`, or point --target (or MOMENTS_TARGET) at it."
            )
            return EXIT_UNREACHABLE
        if e.code == grpc.StatusCode.DEADLINE_EXCEEDED:
            err.print(
                f"[red]error:[/red] the server at {args.target} did not answer within {args.timeout:g} s "
                f"({e.method}); raise --timeout or check the server"
            )
            return EXIT_UNREACHABLE
        if e.code == grpc.StatusCode.UNAUTHENTICATED:
            err.print(f"[red]error:[/red] {escape(e.message)} (give --token or MOMENTS_TOKEN)")
            return EXIT_FAILED
        err.print(f"[red]error:[/red] {e.method}: {e.code.name}: {escape(e.message)}")
        return EXIT_FAILED
    except ValueError as e:  # client-side validation (a video id, a filter)
        err.print(f"[red]error:[/red] {escape(str(e))}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
