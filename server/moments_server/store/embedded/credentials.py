"""Who may use the wire listener, kept in the store's data dir (files mode 0600):

- `wire_users.json` {user: password}: made at first start with a user `admin` and a random password,
  printed once, unless credentials are given (config or flags);
- `wire_tokens.json` {token: user}: personal tokens (`adbp_…`, ApertureDB's prefix) that `Authenticate`
  accepts instead of a password, as the SDK's `Connector(token=...)` sends them. Made with
  `python -m moments_server.store.embedded --data-dir DIR --new-token USER` and read at start.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

USERS_FILE = "wire_users.json"
TOKENS_FILE = "wire_tokens.json"
TOKEN_PREFIX = "adbp_"


def _write_private(path: Path, data: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def load_users(data_dir: Path, user: str | None, password: str | None) -> dict[str, str]:
    """The given user, else the stored users, else a new `admin` with a random password (printed once)."""
    if user and password:
        return {user: password}
    path = data_dir / USERS_FILE
    if path.exists():
        users: dict[str, str] = json.loads(path.read_text())
        return users
    pw = secrets.token_urlsafe(18)
    _write_private(path, {"admin": pw})
    print(f"Created wire user 'admin' with password: {pw}  (stored in {path})", flush=True)
    return {"admin": pw}


def load_tokens(data_dir: Path) -> dict[str, str]:
    path = data_dir / TOKENS_FILE
    if not path.exists():
        return {}
    tokens: dict[str, str] = json.loads(path.read_text())
    return tokens


def new_token(data_dir: Path, user: str) -> str:
    """A new personal token for `user`, stored beside the others; a running listener reads it at its next start."""
    if not user:
        raise ValueError("a personal token needs a user name")
    tokens = load_tokens(data_dir)
    token = TOKEN_PREFIX + secrets.token_hex(24)
    tokens[token] = user
    _write_private(data_dir / TOKENS_FILE, tokens)
    return token
