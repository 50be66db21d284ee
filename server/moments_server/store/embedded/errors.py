"""The one exception type the engine raises for a refused query."""

from __future__ import annotations


class QueryError(Exception):
    """A query that ApertureDB would refuse: becomes `{"status": -1, "info": message, ...}`."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
