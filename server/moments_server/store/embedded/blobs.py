"""Blob files under `<data_dir>/blobs/`.

Large blobs (videos, big images) live in files; small ones (thumbnails) are stored inline in SQLite,
where the WAL commit makes them durable without one fsync per file. A file is written and fsynced
(with its directory) before the transaction that references it commits; a file no committed row
references (a crash between the write and the commit, or after the commit of a delete) is an orphan
and is removed when the store opens.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterable
from pathlib import Path

from ..file_blob import FileBlob

INLINE_MAX = 256 * 1024
COPY_CHUNK = 8 * 1024 * 1024


class BlobFiles:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        return self.root / name[:2] / name

    def write(self, data: bytes | FileBlob) -> str:
        """Write, fsync the file and its directory; return the file name. A FileBlob is copied file to file
        (in the kernel where it can: copy_file_range), never whole in memory."""
        name = uuid.uuid4().hex
        p = self.path(name)
        p.parent.mkdir(exist_ok=True)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            if isinstance(data, FileBlob):
                _copy_file(data, fd)
            else:
                view = memoryview(data)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
        dfd = os.open(p.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        return name

    def read(self, name: str) -> bytes:
        return self.path(name).read_bytes()

    def remove(self, names: Iterable[str]) -> None:
        for n in names:
            with contextlib.suppress(FileNotFoundError):
                self.path(n).unlink()

    def all_names(self) -> set[str]:
        out: set[str] = set()
        for d in self.root.iterdir():
            if d.is_dir():
                out.update(f.name for f in d.iterdir())
        return out

    def remove_orphans(self, referenced: set[str]) -> int:
        orphans = self.all_names() - referenced
        self.remove(orphans)
        return len(orphans)


def _copy_file(blob: FileBlob, out_fd: int) -> None:
    with blob.path.open("rb") as src:
        left = blob.size
        try:
            while left > 0:
                n = os.copy_file_range(src.fileno(), out_fd, min(left, 1 << 30))
                if n == 0:
                    break
                left -= n
        except OSError:  # a filesystem pair without copy_file_range: plain reads and writes, a chunk at a time
            src.seek(blob.size - left)
            while left > 0 and (chunk := src.read(min(left, COPY_CHUNK))):
                os.write(out_fd, chunk)
                left -= len(chunk)
    if left:
        raise OSError(f"{blob.path} ended {left} bytes short of its {blob.size}")
