"""Pulling a network stream: read a URL with PyAV and remux its video packets, without decoding, into one
MPEG-TS byte stream that survives reconnects.

Each (re)connection is a session; the remuxer shifts a session's timestamps so that they follow on from
the last packet of the one before (a new RTSP session restarts its clock), and starts it at a keyframe, so
that the bytes are one continuous stream that the LIVE decoder reads like a caller's. The output muxer
lives as long as the pull, so the stream has one header and continuous MPEG-TS counters.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from urllib.parse import urlsplit, urlunsplit

import av
import av.error

log = logging.getLogger(__name__)

# scheme -> the FFmpeg protocols a source of that scheme may use (its whitelist: an HLS playlist naming
# file:// segments, or an RTSP server redirecting elsewhere, cannot make the server read a local file)
PROTOCOLS: dict[str, str] = {
    "rtsp": "rtsp,rtp,srtp,udp,tcp",
    "rtsps": "rtsps,rtsp,rtp,srtp,udp,tcp,tls",
    "http": "http,https,tcp,tls,crypto,httpproxy",
    "https": "http,https,tcp,tls,crypto,httpproxy",
    "udp": "udp",
}
FLUSH_BYTES = 256 * 1024  # hand the remuxed bytes on at this size, or
FLUSH_S = 0.1  # after this long
OUT_TB = Fraction(1, 90000)  # MPEG-TS's clock


class SourceError(Exception):
    """The source cannot be read (unreachable, broken, or gone for good after the retries)."""


class NoVideo(Exception):
    """The source opened but holds no video stream: retrying does not help."""


class Stopped(Exception):
    """The pull was asked to stop while it waited."""


def redacted(url: str) -> str:
    """The URL without user and password, for logs, messages and the video's filename."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def open_options(scheme: str) -> dict[str, str]:
    options = {"protocol_whitelist": PROTOCOLS[scheme]}
    if scheme in ("rtsp", "rtsps"):
        options["rtsp_transport"] = "tcp"  # UDP RTP loses packets on any busy link; TCP is in order
    if scheme == "udp":
        options["overrun_nonfatal"] = "1"  # a late reader drops packets rather than failing
        options["fifo_size"] = "50000"
    return options


@dataclass
class PullStatus:
    media_s: float = 0.0  # media time remuxed so far
    reconnects: int = 0
    error: str = ""
    retry_in_s: float = 0.0


class _Sink(io.RawIOBase):
    """Where the muxer writes: collects bytes until they are taken."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        self.data.extend(b)
        return len(b)

    def take(self) -> bytes:
        out = bytes(self.data)
        self.data.clear()
        return out


class Remuxer:
    """Video packets of successive sessions -> one MPEG-TS stream with continuous timestamps."""

    def __init__(self) -> None:
        self.sink = _Sink()
        # flush_packets: each packet reaches the sink at once (a low-bitrate camera would otherwise wait
        # for the muxer's buffer to fill, seconds of delay)
        self.container = av.open(self.sink, mode="w", format="mpegts", options={"flush_packets": "1"})
        self.stream: av.VideoStream | None = None
        self.codec = ""
        self.next_ts = 0  # output ticks where the next session starts
        self.end_ts = 0  # past the last packet written (its pts + duration)
        self.last_dts: int | None = None
        self.dropped = 0
        self._in_tb = Fraction(1, 90000)
        self._first: int | None = None  # the session's first input timestamp
        self._frame = Fraction(1, 25)  # one frame, in seconds

    def start_session(self, stream: av.VideoStream) -> None:
        name = stream.codec_context.name
        if self.stream is None:
            self.stream = self.container.add_stream_from_template(stream)
            self.codec = name
        elif name != self.codec:
            raise NoVideo(f"the source's video codec changed from {self.codec} to {name} on reconnecting")
        self._in_tb = Fraction(stream.time_base) if stream.time_base else Fraction(1, 90000)
        rate = stream.average_rate or stream.guessed_rate
        self._frame = 1 / Fraction(rate) if rate else Fraction(1, 25)
        self._first = None
        self.next_ts = self.end_ts

    @property
    def media_s(self) -> float:
        return float(self.end_ts * OUT_TB)

    def mux(self, packet: av.Packet) -> None:
        assert self.stream is not None
        if self._first is None and not packet.is_keyframe:
            return  # a decoder can only start a session at a keyframe
        ts_in = packet.dts if packet.dts is not None else packet.pts
        if self._first is None:
            self._first = ts_in if ts_in is not None else 0
        out_tb = OUT_TB

        def ticks(ts: int | None) -> int | None:
            if ts is None:
                return None
            assert self._first is not None
            return self.next_ts + round((ts - self._first) * self._in_tb / out_tb)

        pts, dts = ticks(packet.pts), ticks(packet.dts)
        if pts is None and dts is None:  # RTP's first packets may carry none: the session's start, or next
            pts = dts = self.next_ts if self.last_dts is None or self.last_dts < self.next_ts else self.last_dts + 1
        if dts is None:
            dts = pts
        if pts is None:
            pts = dts
        assert pts is not None and dts is not None
        if self.last_dts is not None and dts <= self.last_dts:
            dts = self.last_dts + 1  # an unknown dts taken from a reordered pts: keep decode order monotonic
        if pts < dts:
            self.dropped += 1  # a reordered frame whose times are unknown: dropped rather than mis-timed
            return
        duration = round(packet.duration * self._in_tb / out_tb) if packet.duration else round(self._frame / out_tb)
        packet.stream = self.stream
        packet.pts, packet.dts = pts, dts
        packet.time_base = out_tb
        self.container.mux(packet)
        self.last_dts = dts
        self.end_ts = max(self.end_ts, pts + max(duration, 1))

    def close(self) -> bytes:
        """End the stream (the muxer's trailer); -> the last bytes."""
        try:
            if self.stream is not None:
                self.container.close()
        except av.error.FFmpegError as e:
            log.warning("closing the remuxed stream: %s", e)
        return self.sink.take()


class Puller:
    """Reads `url` in the calling thread until stopped, the source ends, or it stays unreachable; hands
    the remuxed bytes to `on_bytes` (which may block: that is the back-pressure) and the pull's status to
    `on_status`."""

    def __init__(
        self,
        url: str,
        on_bytes: Callable[[bytes], None],
        on_status: Callable[[PullStatus], None],
        *,
        retries: int,
        backoff_s: float,
        backoff_max_s: float,
        timeout_s: float,
    ) -> None:
        self.url = url
        self.scheme = urlsplit(url).scheme.lower()
        self.on_bytes, self.on_status = on_bytes, on_status
        self.retries, self.backoff_s, self.backoff_max_s, self.timeout_s = retries, backoff_s, backoff_max_s, timeout_s
        self.stop = threading.Event()
        self.status = PullStatus()
        self._last_flush = time.monotonic()
        self._last_status = 0.0

    def run(self) -> None:
        remuxer = Remuxer()
        failures = 0
        try:
            while not self.stop.is_set():
                try:
                    delivered, ended = self._session(remuxer)
                except av.error.FFmpegError as e:
                    delivered, ended, error = False, False, _describe(e)
                else:
                    error = "the source ended the stream"
                if ended or self.stop.is_set():
                    return  # a source with an end (VOD) reached it, or a stop
                failures = 0 if delivered else failures + 1
                if failures > self.retries:
                    raise SourceError(f"cannot pull {redacted(self.url)}: {error} ({failures} tries)")
                wait = min(self.backoff_s * 2 ** max(failures - 1, 0), self.backoff_max_s)
                self.status.error, self.status.retry_in_s = error, wait
                self.status.reconnects += 1
                log.warning("pull of %s broke (%s); reconnecting in %.1f s", redacted(self.url), error, wait)
                self.on_status(self.status)
                if self.stop.wait(wait):
                    return
        finally:
            tail = remuxer.close()
            if tail:
                self.on_bytes(tail)
            if remuxer.dropped:
                log.info("pull of %s: %d reordered packets had no timestamps", redacted(self.url), remuxer.dropped)

    def _session(self, remuxer: Remuxer) -> tuple[bool, bool]:
        """One connection: -> (whether it delivered packets, whether the source ended for good)."""
        container = av.open(
            self.url, mode="r", options=open_options(self.scheme), timeout=(self.timeout_s, self.timeout_s)
        )
        delivered = False
        try:
            if not container.streams.video:
                raise NoVideo(f"{redacted(self.url)} holds no video stream")
            stream = container.streams.video[0]
            remuxer.start_session(stream)
            # a source with a known duration (a VOD playlist, a file over http) has an end; a live one
            # (RTSP, UDP, a live playlist) that stops has broken
            finite = container.duration is not None and self.scheme in ("http", "https")
            for packet in container.demux(stream):
                if self.stop.is_set():
                    return delivered, True
                if packet.size == 0:
                    continue  # the demuxer's end-of-stream flush packet
                remuxer.mux(packet)
                if not delivered and remuxer.last_dts is not None:
                    delivered = True
                    self.status.error, self.status.retry_in_s = "", 0.0
                self._flush(remuxer)
            self._flush(remuxer, force=True)
            return delivered, finite
        finally:
            container.close()

    def _flush(self, remuxer: Remuxer, force: bool = False) -> None:
        now = time.monotonic()
        if remuxer.sink.data and (force or len(remuxer.sink.data) >= FLUSH_BYTES or now - self._last_flush >= FLUSH_S):
            self._last_flush = now
            self.on_bytes(remuxer.sink.take())
        if now - self._last_status >= 0.5 or force:
            self._last_status = now
            self.status.media_s = remuxer.media_s
            self.on_status(self.status)


def _describe(e: av.error.FFmpegError) -> str:
    """FFmpeg's reason without the URL it names (which may hold credentials)."""
    text = str(getattr(e, "strerror", "") or e)
    if "exit requested" in text.lower():  # PyAV's timeout interrupts FFmpeg so
        return "timed out"
    return text
