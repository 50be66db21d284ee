"""`python -m moments_server [flags]`: run the gRPC server (flags or MOMENTS_* environment variables)."""

from __future__ import annotations

import asyncio
import os
import sys

# The aperturedb SDK's import writes a log file unless told not to; the server starts quietly.
os.environ.setdefault("ADB_LOG_FILE", "")

from moments_server import logs
from moments_server.config import parse_settings
from moments_server.inference.manifest import ModelDirError


def main(argv: list[str] | None = None) -> int:
    settings = parse_settings(argv)
    logs.setup(settings.log_level, settings.log_json)
    from moments_server.app import serve

    try:
        asyncio.run(serve(settings))
    except ModelDirError as e:
        print(f"moments-server: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
