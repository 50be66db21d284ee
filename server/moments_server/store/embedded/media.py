"""Video probing (PyAV) and the clip range formats."""

from __future__ import annotations

import io
import logging
import re
from typing import Any

from ..file_blob import FileBlob
from .errors import QueryError

log = logging.getLogger(__name__)

_TIME_RE = re.compile(r"^(?:(\d+):)?(?:(\d+):)?(\d+(?:\.\d+)?)$")


def probe_video(data: bytes | FileBlob) -> dict[str, Any]:
    """The system fields ApertureDB adds to a video; {} when the blob cannot be probed."""
    try:
        import av

        with av.open(str(data.path) if isinstance(data, FileBlob) else io.BytesIO(data), mode="r") as c:
            if not c.streams.video:
                return {}
            s = c.streams.video[0]
            if s.duration is not None and s.time_base is not None:
                duration_us = round(float(s.duration * s.time_base) * 1e6)
            elif c.duration is not None:
                duration_us = int(c.duration)  # AV_TIME_BASE is microseconds
            else:
                duration_us = 0
            fps = float(s.average_rate) if s.average_rate else 0.0
            frames = int(s.frames or 0)
            if not frames:
                frames = sum(1 for p in c.demux(s) if p.size)
            return {
                "_duration_us": duration_us,
                "_fps": fps,
                "_frame_count": frames,
                "_frame_height": int(s.codec_context.height),
                "_frame_width": int(s.codec_context.width),
            }
    except Exception as e:  # a blob PyAV cannot read is stored without the probed fields
        log.info("video probe failed: %s", e)
        return {}


# Bulk inserts send the same offsets for every video (a clip per second): parsed canonical offsets are
# cached (bounded), which took clip parsing out of the bulk-insert profile.
_CANONICAL: dict[str, int] = {}
_CANONICAL_MAX = 1 << 16


def parse_time_offset(v: Any, what: str) -> int:
    """'hh:mm:ss.uuuuuu' (also 'mm:ss.f' or 'ss.f') -> microseconds."""
    us = _CANONICAL.get(v) if type(v) is str else None
    if us is not None:
        return us
    if not isinstance(v, str):
        raise QueryError(f"{what}: expected a string 'hh:mm:ss.uuuuuu', got {v!r}")
    # Fast path for the canonical form.
    if len(v) == 15 and v[2] == ":" and v[5] == ":" and v[8] == "." and v.replace(":", "").replace(".", "").isdigit():
        us = ((int(v[0:2]) * 60 + int(v[3:5])) * 60 + int(v[6:8])) * 1_000_000 + int(v[9:15])
        if len(_CANONICAL) < _CANONICAL_MAX:
            _CANONICAL[v] = us
        return us
    m = _TIME_RE.match(v.strip())
    if not m:
        raise QueryError(f"{what}: invalid time offset {v!r} (expected 'hh:mm:ss.uuuuuu')")
    a, b, sec = m.groups()
    parts = [int(x) for x in (a, b) if x is not None]
    h, mi = ([*parts, 0, 0])[:2] if len(parts) == 2 else (0, parts[0] if parts else 0)
    return (h * 3600 + mi * 60) * 1_000_000 + round(float(sec) * 1_000_000)


def format_time_offset(us: int) -> str:
    s, micro = divmod(us, 1_000_000)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h:02d}:{m:02d}:{sec:02d}.{micro:06d}"


def _start_stop(body: dict[str, Any], key: str, cmd: str) -> dict[str, Any]:
    """A range parameter's {"start", "stop"} object, both required, nothing else."""
    r = body[key]
    if not isinstance(r, dict) or "start" not in r or "stop" not in r:
        raise QueryError(f"{cmd}: {key} needs both 'start' and 'stop'")
    extra = set(r) - {"start", "stop"}
    if extra:
        raise QueryError(f"{cmd}: {key}: unknown key {sorted(extra)[0]!r}")
    return r


def clip_range(body: dict[str, Any]) -> dict[str, Any]:
    """Validate AddClip's range; return the clip's system properties."""
    given = [k for k in ("frame_number_range", "time_offset_range", "time_fraction_range") if k in body]
    if len(given) != 1:
        raise QueryError(
            "AddClip: exactly one of frame_number_range, time_offset_range or time_fraction_range "
            f"must be specified (got {len(given)})"
        )
    key = given[0]
    r = _start_stop(body, key, "AddClip")
    if key == "frame_number_range":
        a, b = r["start"], r["stop"]
        if not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in (a, b)):
            raise QueryError("AddClip: frame_number_range start/stop must be non-negative integers")
        rt, start, stop, echo = 1, a, b, {"start": a, "stop": b}
    elif key == "time_offset_range":
        a = parse_time_offset(r["start"], "AddClip: time_offset_range.start")
        b = parse_time_offset(r["stop"], "AddClip: time_offset_range.stop")
        rt, start, stop = 3, a, b
        # echoed in the canonical form (a canonical input is its own canonical form)
        echo = {
            "start": r["start"] if r["start"] in _CANONICAL else format_time_offset(a),
            "stop": r["stop"] if r["stop"] in _CANONICAL else format_time_offset(b),
        }
    else:
        a, b = r["start"], r["stop"]
        if not all(isinstance(x, int | float) and not isinstance(x, bool) and 0 <= x <= 1 for x in (a, b)):
            raise QueryError("AddClip: time_fraction_range start/stop must be numbers in [0, 1]")
        rt, start, stop, echo = 2, float(a), float(b), {"start": float(a), "stop": float(b)}
    if start > stop:
        raise QueryError(f"AddClip: {key} start is after stop")
    return {
        "_range_type": rt,
        "_range_start": start,
        "_range_stop": stop,
        "_" + key: echo,
    }


IN_RANGE_KEYS = ("in_frame_number_range", "in_time_offset_range", "in_time_fraction_range")
_UNIT = {"in_frame_number_range": 1, "in_time_fraction_range": 2, "in_time_offset_range": 3}


def in_range(body: dict[str, Any], cmd: str) -> tuple[int, float, float] | None:
    """FindClip's `in_*_range`: -> (range type, start, stop) in that type's unit, or None when absent."""
    given = [k for k in IN_RANGE_KEYS if k in body]
    if not given:
        return None
    if len(given) > 1:
        raise QueryError(f"{cmd}: at most one of {', '.join(IN_RANGE_KEYS)} (got {', '.join(given)})")
    key = given[0]
    r = _start_stop(body, key, cmd)
    rt = _UNIT[key]
    if rt == 3:
        a, b = (float(parse_time_offset(r[x], f"{cmd}: {key}.{x}")) for x in ("start", "stop"))
    else:
        a, b = r["start"], r["stop"]
        ok = (
            (lambda x: isinstance(x, int) and x >= 0)
            if rt == 1
            else (lambda x: isinstance(x, int | float) and 0 <= x <= 1)
        )
        if not all(ok(x) and not isinstance(x, bool) for x in (a, b)):
            what = "non-negative integers" if rt == 1 else "numbers in [0, 1]"
            raise QueryError(f"{cmd}: {key} start/stop must be {what}")
    if a > b:
        raise QueryError(f"{cmd}: {key} start is after stop")
    return rt, float(a), float(b)


FRAMES, FRACTION, TIME_US = 1, 2, 3  # _range_type values


def _us_per_unit(unit: int, video: dict[str, Any] | None) -> float | None:
    """Microseconds per frame / per whole video / per microsecond; None when the video lacks the field."""
    if unit == TIME_US:
        return 1.0
    v = float((video or {}).get("_fps" if unit == FRAMES else "_duration_us") or 0)
    if not v:
        return None
    return 1e6 / v if unit == FRAMES else v


def clip_inside(clip: dict[str, Any], video: dict[str, Any] | None, want: tuple[int, float, float]) -> bool:
    """Whether a clip's range lies fully inside `want`, converting between frames, microseconds and
    fractions with its video's probed `_fps` and `_duration_us` when the units differ (a clip whose
    video lacks what the conversion needs is not inside)."""
    rt, lo, hi = want
    ct, a, b = clip.get("_range_type"), clip.get("_range_start"), clip.get("_range_stop")
    if ct not in (FRAMES, FRACTION, TIME_US) or a is None or b is None:
        return False
    a, b = float(a), float(b)
    if ct != rt:
        src, dst = _us_per_unit(ct, video), _us_per_unit(rt, video)
        if src is None or dst is None:
            return False
        # a frame range's stop frame is inclusive: it ends where the next frame starts
        stop_us = (b + (1 if ct == FRAMES else 0)) * src
        a, b = a * src / dst, stop_us / dst - (1 if rt == FRAMES else 0)
    eps = 1e-9 * max(1.0, abs(hi))
    return a >= lo - eps and b <= hi + eps
