"""An upload spooled to a temporary file as it arrives, bounded in size, hashed on the way."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


class UploadTooLarge(Exception):
    """The upload passed the server's bound (RESOURCE_EXHAUSTED)."""


class Spool:
    def __init__(self, directory: Path | None, max_bytes: int, suffix: str = "") -> None:
        fd, name = tempfile.mkstemp(prefix="moments-upload-", suffix=suffix, dir=directory)
        self._file = os.fdopen(fd, "wb")
        self.path = Path(name)
        self.max_bytes = max_bytes
        self.size = 0
        self._sha = hashlib.sha256()

    def write(self, chunk: bytes) -> None:
        if self.size + len(chunk) > self.max_bytes:
            raise UploadTooLarge(
                f"upload exceeds the server's limit of {self.max_bytes} bytes (received {self.size + len(chunk)})"
            )
        self._file.write(chunk)
        self._sha.update(chunk)
        self.size += len(chunk)

    def finish(self) -> str:
        """Close the file; returns the hex sha256 of everything written."""
        self._file.close()
        return self._sha.hexdigest()

    def read_bytes(self) -> bytes:
        return self.path.read_bytes()

    def discard(self) -> None:
        if not self._file.closed:
            self._file.close()
        self.path.unlink(missing_ok=True)
