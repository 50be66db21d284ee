"""An upload spooled to a temporary file as it arrives, bounded in size, hashed on the way.

Spool files are named `moments-upload-<pid>-<random><suffix>`: a server killed mid-ingest leaves its files
behind, and the next start removes those whose process is gone (`sweep`), never a live server's.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)
PREFIX = "moments-upload-"
_OWNED = re.compile(r"^moments-upload-(\d+)-")
# Files of servers before the pid was in the name: removed when older than this.
LEGACY_AGE_S = 24 * 3600.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def sweep(directory: Path | None, at_start: bool = True) -> tuple[int, int]:
    """Remove spool files left by servers that are gone. Returns (files, bytes) removed.

    at_start: before this process spools anything (its own pid's files are an earlier process's); later
    calls leave this process's files alone."""
    folder = Path(directory) if directory is not None else Path(tempfile.gettempdir())
    if at_start:  # a configured spool dir that does not exist yet is made (an error here stops the start)
        folder.mkdir(parents=True, exist_ok=True)
    files = size = 0
    try:
        entries = list(folder.glob(PREFIX + "*"))
    except OSError:
        return 0, 0
    now = time.time()
    for path in entries:
        match = _OWNED.match(path.name)
        try:
            stat = path.stat()
            if match:
                pid = int(match.group(1))
                # At start this process has no upload yet: a file under its own pid is from an earlier process
                # that had the same pid (a restarted container's pid 1).
                if pid == os.getpid() and not at_start:
                    continue
                if pid != os.getpid() and _alive(pid):
                    continue
            elif now - stat.st_mtime < LEGACY_AGE_S:
                continue
            path.unlink()
        except OSError:
            continue
        files += 1
        size += stat.st_size
    if files:
        log.info("removed %d spool files (%d bytes) left by stopped servers in %s", files, size, folder)
    return files, size


class UploadTooLarge(Exception):
    """The upload passed the server's bound (RESOURCE_EXHAUSTED)."""


class Spool:
    def __init__(self, directory: Path | None, max_bytes: int, suffix: str = "") -> None:
        fd, name = tempfile.mkstemp(prefix=f"{PREFIX}{os.getpid()}-", suffix=suffix, dir=directory)
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

    def discard(self) -> None:
        if not self._file.closed:
            self._file.close()
        self.path.unlink(missing_ok=True)
