"""Upload sources: a path, bytes, a binary file, an iterator or async iterator of bytes, opened before the call
(so that an unreadable file fails as OSError before anything is sent) and read in chunks."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import AsyncIterable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

from moments_client._common import CHUNK_SIZE, AsyncSource


@dataclass
class Upload:
    """An opened upload source: its chunks (at most CHUNK_SIZE each), name and size when known."""

    filename: str
    size: int | None
    file: IO[bytes] | None = None
    iterable: Iterable[bytes] | None = None
    aiterable: AsyncIterable[bytes] | None = None
    owned: bool = False
    sent: int = 0

    def chunks(self, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        if self.file is not None:
            while not self.file.closed and (chunk := self.file.read(chunk_size)):
                yield chunk
        elif self.iterable is not None:
            for piece in self.iterable:
                yield from split(piece, chunk_size)

    def close(self) -> None:
        if self.owned and self.file is not None:
            self.file.close()


def split(piece: bytes | bytearray | memoryview, chunk_size: int) -> Iterator[bytes]:
    view = memoryview(piece)
    for i in range(0, len(view), chunk_size):
        yield bytes(view[i : i + chunk_size])


def open_upload(source: AsyncSource, filename: str | None) -> Upload:
    """Open ``source`` now, so that an unreadable file fails before the call starts (as OSError)."""
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        opened = path.open("rb")
        return Upload(filename or path.name, os.fstat(opened.fileno()).st_size, file=opened, owned=True)
    if isinstance(source, bytes | bytearray | memoryview):
        return Upload(filename or "upload", len(source), file=io.BytesIO(bytes(source)), owned=True)
    if hasattr(source, "read"):
        f = cast(IO[bytes], source)
        size = None
        try:
            if f.seekable():
                pos = f.tell()
                size = f.seek(0, io.SEEK_END) - pos
                f.seek(pos)
        except (AttributeError, OSError):
            size = None
        name = getattr(f, "name", None)
        return Upload(filename or (Path(name).name if isinstance(name, str) else "upload"), size, file=f)
    if hasattr(source, "__aiter__"):
        return Upload(filename or "upload", None, aiterable=source)  # type: ignore[arg-type]
    if isinstance(source, Iterable):
        return Upload(filename or "upload", None, iterable=source)
    raise TypeError(
        f"cannot upload a {type(source).__name__}: give a path, bytes, a binary file or an iterator of bytes"
    )


def sha256_of(upload: Upload) -> str:
    """Hash a seekable upload and rewind it (for ``sha256=True``)."""
    f = upload.file
    if f is None or not f.seekable():
        raise ValueError("sha256=True needs a path, bytes or a seekable file; pass the hex digest instead")
    pos = f.tell()
    digest = hashlib.sha256()
    while chunk := f.read(1024 * 1024):
        digest.update(chunk)
    f.seek(pos)
    return digest.hexdigest()
