"""A query blob that is a file: how an UPLOAD's spooled video reaches any store without being read into
memory where the store can take it as a file (the in-process embedded engine)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


class FileBlob:
    """A query blob that is a file (an upload the server spooled): the in-process engine copies it into its blob
    files without holding it in memory; anything that must send it in a message reads it (`read`)."""

    def __init__(self, path: str | os.PathLike[str], size: int | None = None) -> None:
        self.path = Path(path)
        self.size = self.path.stat().st_size if size is None else size

    def __len__(self) -> int:
        return self.size

    def read(self) -> bytes:
        return self.path.read_bytes()


def in_memory(blobs: Iterable[bytes | FileBlob]) -> list[bytes]:
    """The blobs of a query that leaves this process in one message."""
    return [b.read() if isinstance(b, FileBlob) else b for b in blobs]
