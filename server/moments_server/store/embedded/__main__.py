"""Run the ApertureDB wire listener on an embedded store.

python -m moments_server.store.embedded --data-dir DIR [--host 127.0.0.1] [--port 55555] [--no-ssl]
    [--user U --password P]

Without --user/--password, the credentials come from DIR/wire_users.json; on first start a user
`admin` with a random password is made there and the password is printed once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
from pathlib import Path

from .engine import Engine
from .wire import WireServer


def load_users(data_dir: Path, user: str | None, password: str | None) -> dict[str, str]:
    if user and password:
        return {user: password}
    path = data_dir / "wire_users.json"
    if path.exists():
        users: dict[str, str] = json.loads(path.read_text())
        return users
    pw = secrets.token_urlsafe(18)
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"admin": pw}, f)
    print(f"Created wire user 'admin' with password: {pw}  (stored in {path})", flush=True)
    return {"admin": pw}


async def main_async(args: argparse.Namespace) -> None:
    engine = Engine(args.data_dir)
    users = load_users(Path(args.data_dir), args.user, args.password)
    server = WireServer(engine, args.host, args.port, ssl=not args.no_ssl, users=users)
    await server.start()
    print(f"listening on {args.host}:{server.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()
    engine.close()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m moments_server.store.embedded")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=55555)
    p.add_argument("--no-ssl", action="store_true")
    p.add_argument("--user")
    p.add_argument("--password")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
