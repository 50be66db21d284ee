"""The resume pump says a stream is complete (SOURCE_END, for which a call sends IngestRequest.end) only once its
source has ended by itself: never to a call that a newer one superseded (a resume), nor when the upload is
stopped before its source ended."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator

from moments_client._resume import SOURCE_END, Buffer, Pump


def one(piece: bytes) -> tuple[bytes, ...]:
    return (piece,)


def held(release: threading.Event) -> Iterator[bytes]:
    """b"abc", then b"def" once released (a camera between two reads)."""
    yield b"abc"
    release.wait(60)
    yield b"def"


def test_a_call_ends_with_source_end_once_the_source_has_ended() -> None:
    pump = Pump(Buffer(), 4, lambda: iter([b"abcdef", b"gh"]), one)
    *pieces, last = list(pump.pieces(0))
    assert b"".join(pieces) == b"abcdefgh" and last is SOURCE_END and SOURCE_END not in pieces


def test_a_superseded_call_is_never_told_the_stream_is_complete() -> None:
    release = threading.Event()
    pump = Pump(Buffer(), 64, lambda: held(release), one)
    first = pump.pieces(0)
    assert next(first) == b"abc"
    resumed = pump.pieces(0)  # a resumed call: the first one's link broke
    assert next(resumed) == b"abc"
    release.set()
    assert list(resumed) == [b"def", SOURCE_END]
    assert list(first) == []  # it stops reading and says nothing of the end


def test_a_stopped_upload_is_not_complete() -> None:
    release = threading.Event()
    pump = Pump(Buffer(), 64, lambda: held(release), one)
    reading = pump.pieces(0)
    assert next(reading) == b"abc"
    pump.stop()
    assert list(reading) == []
    assert not pump.buffer.complete
    release.set()


def test_the_async_pump_says_the_same() -> None:
    async def run() -> None:
        async def source() -> AsyncIterator[bytes]:
            yield b"abc"
            yield b"def"

        pump = Pump(Buffer(), 64, source, one)
        pieces = [piece async for piece in pump.apieces(0)]
        assert pieces[-1] is SOURCE_END and b"".join(pieces[:-1]) == b"abcdef"

        gate = asyncio.Event()

        async def stalled() -> AsyncIterator[bytes]:
            yield b"abc"
            await gate.wait()
            yield b"def"

        pump = Pump(Buffer(), 64, stalled, one)
        reading = pump.apieces(0)
        assert await anext(reading) == b"abc"
        pump.stop()  # the upload is over before its source ended
        assert [piece async for piece in reading] == []

    asyncio.run(run())
