"""Run the ApertureDB wire listener on an embedded store.

python -m moments_server.store.embedded --data-dir DIR [--host 127.0.0.1] [--port 55555] [--no-ssl]
    [--user U --password P]
python -m moments_server.store.embedded --data-dir DIR --new-token USER    # prints a personal token

Without --user/--password, the credentials come from DIR/wire_users.json; on first start a user
`admin` with a random password is made there and the password is printed once. Personal tokens
(DIR/wire_tokens.json) are accepted by Authenticate in place of a password (credentials.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from pathlib import Path

from .credentials import load_tokens, load_users, new_token
from .engine import Engine
from .wire import WireServer


async def main_async(args: argparse.Namespace) -> None:
    engine = Engine(args.data_dir)
    users = load_users(Path(args.data_dir), args.user, args.password)
    tokens = load_tokens(Path(args.data_dir))
    server = WireServer(engine, args.host, args.port, ssl=not args.no_ssl, users=users, tokens=tokens)
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
    p.add_argument("--new-token", metavar="USER", help="make a personal token (adbp_...) for USER, print it, exit")
    args = p.parse_args()
    if args.new_token is not None:
        print(new_token(Path(args.data_dir), args.new_token), flush=True)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
