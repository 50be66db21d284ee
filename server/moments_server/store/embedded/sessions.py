"""The wire listener's authentication: Authenticate (username + password, or a personal `adbp_` token, see
credentials.py), RefreshToken, and the session tokens that queries carry."""

from __future__ import annotations

import secrets
import threading
import time
from typing import Any


class Sessions:
    def __init__(
        self, users: dict[str, str] | None, session_ttl: int, refresh_ttl: int, tokens: dict[str, str] | None = None
    ) -> None:
        self.users = users
        self.tokens = tokens or {}
        self.session_ttl = session_ttl
        self.refresh_ttl = refresh_ttl
        self._sessions: dict[str, float] = {}
        self._refresh: dict[str, float] = {}
        self._lock = threading.Lock()

    def _issue(self) -> dict[str, Any]:
        now = time.monotonic()
        st, rt = "adbs_" + secrets.token_hex(24), "adbr_" + secrets.token_hex(24)
        with self._lock:
            self._sessions[st] = now + self.session_ttl
            self._refresh[rt] = now + self.refresh_ttl
        return {
            "refresh_token": rt,
            "refresh_token_expires_in": self.refresh_ttl,
            "session_token": st,
            "session_token_expires_in": self.session_ttl,
            "status": 0,
        }

    def authenticate(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            return {"info": "Authenticate takes an object", "status": -1}
        if self.users is None:
            return self._issue()
        user, pw = body.get("username"), body.get("password")
        if pw is None and "token" in body:
            return self._token(body["token"], user)
        if (
            isinstance(user, str)
            and isinstance(pw, str)
            and user in self.users
            and secrets.compare_digest(self.users[user], pw)
        ):
            return self._issue()
        return {"info": "Authentication failed: invalid username or password", "status": -1}

    def _token(self, token: Any, user: Any) -> dict[str, Any]:
        """A personal token; a username sent beside it (the SDK sends its configured one, often "") must be
        the token's user when it is not empty."""
        owner = None
        if isinstance(token, str):
            for known, who in self.tokens.items():  # compare_digest each: no early exit on a prefix
                if secrets.compare_digest(known.encode(), token.encode()):
                    owner = who
        if owner is None or (user not in (None, "") and user != owner):
            return {"info": "Authentication failed: invalid token", "status": -1}
        return self._issue()

    def refresh(self, body: Any) -> dict[str, Any]:
        rt = body.get("refresh_token") if isinstance(body, dict) else None
        with self._lock:
            exp = self._refresh.pop(rt, None) if isinstance(rt, str) else None
        if exp is None or exp < time.monotonic():
            return {"info": "Invalid or expired refresh token", "status": -1}
        return self._issue()

    def valid(self, token: str) -> bool:
        if self.users is None:
            return True
        with self._lock:
            exp = self._sessions.get(token)
            if exp is not None and exp < time.monotonic():
                del self._sessions[token]
                exp = None
        return exp is not None
