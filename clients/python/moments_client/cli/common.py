"""What every `moments` command shares: exit codes, the consoles, the client from the server options, and the
parsing and formatting of metadata values, times and sizes."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeAlias

from rich.console import Console

from moments_client.client import Client
from moments_client.types import MetaValue

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
DEFAULT_TARGET = "127.0.0.1:50051"


def _console(stderr: bool) -> Console:
    # Tables stay readable when piped: rich would use 80 columns; take COLUMNS, or a wide page.
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() or os.environ.get("COLUMNS") else 160
    return Console(stderr=stderr, highlight=False, emoji=False, width=width)


out = _console(stderr=False)
err = _console(stderr=True)


class UsageError(Exception):
    """Bad arguments or an unreadable local file (exit 2)."""


def client_of(args: argparse.Namespace) -> Client:
    """The client that the server options (--target, --token, --tls, ...) describe."""
    tls: bool | str | None = args.ca_cert or (True if args.tls else None)
    if bool(args.client_cert) != bool(args.client_key):
        raise SystemExit("moments: --client-cert and --client-key go together")
    cert = (args.client_cert, args.client_key) if args.client_cert else None
    return Client(args.target, token=args.token or None, tls=tls, client_cert=cert, timeout=args.timeout)


# ----------------------------------------------------------------------------------------------- values


_WHERE = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_.-]*)\s*(==|!=|>=|<=|=|>|<|\s+in\s+)\s*(.*)$", re.DOTALL)


def parse_value(text: str) -> MetaValue:
    """``true``/``false`` → bool, a number → float, an RFC 3339 date-time → datetime, ``"quoted"`` → str."""
    s = text.strip()
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "\"'":
        return s[1:-1]
    if s.lower() in ("true", "false"):
        return s.lower() == "true"
    try:
        return float(s)
    except ValueError:
        pass
    if re.match(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}", s):
        try:
            return datetime.fromisoformat(s)
        except ValueError:
            pass
    return s


def parse_where(items: Sequence[str]) -> list[tuple[str, str, Any]]:
    """``key=value``, ``key!=value``, ``key>=value`` (also ``>``, ``<``, ``<=``), ``key in a,b,c``."""
    triples: list[tuple[str, str, Any]] = []
    for item in items:
        m = _WHERE.match(item)
        if not m:
            raise UsageError(f"--where {item!r}: expected key=value, key!=value, key>=value, ... or 'key in a,b'")
        key, op, raw = m.group(1), m.group(2).strip(), m.group(3)
        if key == "video_id":
            raise UsageError(f"--where {item!r}: video ids are not metadata; use --video ID (repeatable)")
        if op == "in":
            triples.append((key, "in", [parse_value(v) for v in raw.split(",") if v.strip()]))
        else:
            triples.append((key, "==" if op == "=" else op, parse_value(raw)))
    return triples


def parse_meta(items: Sequence[str]) -> dict[str, MetaValue]:
    meta: dict[str, MetaValue] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--meta {item!r}: expected key=value")
        meta[key.strip()] = parse_value(raw)
    return meta


def fmt_value(v: MetaValue) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, datetime):
        return v.isoformat()
    return v


def fmt_meta(meta: dict[str, MetaValue]) -> str:
    return " ".join(f"{k}={fmt_value(v)}" for k, v in meta.items())


def fmt_time(rfc3339: str) -> str:
    """An RFC 3339 instant as `YYYY-MM-DD HH:MM:SS` in local time (as given when it does not parse)."""
    try:
        return datetime.fromisoformat(rfc3339).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return rfc3339


def upload_rate(received: int, seconds: float) -> str:
    """Bytes received over the seconds the upload has taken, e.g. "1.2 MiB/s"."""
    return f"{fmt_bytes(received / seconds)}/s" if seconds > 0 and received > 0 else ""


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            break
        n /= 1024
    return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"


#: What each command module's ``register(sub, common)`` receives: the subcommands to add its own to.
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
