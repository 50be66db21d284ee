"""`python -m moments_server [flags]`: run the gRPC server (flags or MOMENTS_* environment variables)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

# The aperturedb SDK's import writes a log file unless told not to; the server starts quietly.
os.environ.setdefault("ADB_LOG_FILE", "")

from moments_server import logs
from moments_server.config import SettingsError, parse_settings
from moments_server.errors import ListenError
from moments_server.inference.manifest import ModelDirError

T = TypeVar("T")


def run_loop(main: Coroutine[Any, Any, T], event_loop: str) -> T:
    """asyncio.run on the event loop the settings name (config.event_loop)."""
    if event_loop == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        settings = parse_settings(argv)
    except SettingsError as e:
        print(f"moments-server: {e}", file=sys.stderr)
        return 2
    logs.setup(settings.log_level, settings.log_json)
    from moments_server.app import serve
    from moments_server.workers import serve_workers

    try:
        if settings.workers != 1 and settings.worker_index < 0:
            serve_workers(settings, argv)
        else:
            run_loop(serve(settings), settings.event_loop)
    except (ModelDirError, ListenError) as e:
        print(f"moments-server: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
