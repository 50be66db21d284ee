"""Shared pieces of the benchmark: timers, percentiles, machine/version facts, figures with goals, result files.

Everything here above the "resources" line is pure (no model, no server) and is what
`tests/bench/test_bench_quick.py` checks, so the harness cannot rot without a test failing.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import socket
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.conftest import REPO

CACHE = REPO / ".cache"
RESULTS = REPO / "tests" / "bench" / "results"
_T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[bench {time.perf_counter() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


# -- timing and statistics --------------------------------------------------------------------------------


def percentile(samples: Sequence[float], p: float) -> float:
    """Linear-interpolated percentile (numpy's default 'linear' method); NaN for no samples."""
    if not samples:
        return math.nan
    if not 0 <= p <= 100:
        raise ValueError(f"percentile must be in [0, 100], not {p}")
    xs = sorted(samples)
    pos = (len(xs) - 1) * p / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(samples_s: Sequence[float], scale: float = 1e3) -> dict[str, float]:
    """{n, p50, p90, p99, mean, min, max} of seconds, reported in ms (scale=1e3) by default."""
    if not samples_s:
        return {"n": 0}
    return {
        "n": len(samples_s),
        "p50": round(percentile(samples_s, 50) * scale, 3),
        "p90": round(percentile(samples_s, 90) * scale, 3),
        "p99": round(percentile(samples_s, 99) * scale, 3),
        "mean": round(sum(samples_s) / len(samples_s) * scale, 3),
        "min": round(min(samples_s) * scale, 3),
        "max": round(max(samples_s) * scale, 3),
    }


class Stopwatch:
    def __init__(self) -> None:
        self.started = time.perf_counter()

    @property
    def s(self) -> float:
        return time.perf_counter() - self.started


def time_calls(fn: Any, n: int, warmup: int = 3) -> list[float]:
    """Run fn() warmup + n times; the n timings in seconds."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def hist_from_prometheus(text: str, metric: str, labels: dict[str, str]) -> dict[str, float]:
    """Per-bucket counts (not cumulative) of one Prometheus histogram series: {"le=1": n, ..., "sum": s}."""
    cumulative: list[tuple[float, float]] = []
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith(metric):
            continue
        m = re.match(r"^(\w+)\{(.*)\}\s+(\S+)$", line)
        if not m:
            continue
        name, lab, val = m.groups()
        pairs = dict(re.findall(r'(\w+)="([^"]*)"', lab))
        if any(pairs.get(k) != v for k, v in labels.items()):
            continue
        if name == metric + "_bucket":
            le = pairs["le"]
            cumulative.append((math.inf if le == "+Inf" else float(le), float(val)))
        elif name == metric + "_sum":
            out["sum"] = float(val)
        elif name == metric + "_count":
            out["count"] = float(val)
    cumulative.sort()
    prev = 0.0
    for le, c in cumulative:
        key = "le=+Inf" if math.isinf(le) else f"le={le:g}"
        out[key] = c - prev
        prev = c
    return out


def hist_diff(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: round(v - before.get(k, 0.0), 6) for k, v in after.items()}


# -- figures and goals ----------------------------------------------------------------------------------

_OPS = {"<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b, ">": lambda a, b: a > b}


@dataclass
class Goal:
    """`subject op threshold`, where subject is the figure's value or its ratio to the baseline."""

    text: str
    op: str
    threshold: float
    subject: str = "value"  # "value" | "ratio"

    def check(self, value: float | None, ratio: float | None) -> bool | None:
        if self.op not in _OPS:
            raise ValueError(f"unknown goal operator {self.op!r}")
        x = value if self.subject == "value" else ratio
        if x is None or (isinstance(x, float) and math.isnan(x)):
            return None
        return bool(_OPS[self.op](x, self.threshold))


@dataclass
class Figure:
    id: str
    title: str
    value: float | None
    unit: str
    baseline: str = ""
    baseline_value: float | None = None
    goal: Goal | None = None
    ratio: float | None = None
    met: bool | None = None
    reason: str = ""
    skipped: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def evaluate(self) -> Figure:
        """Fill ratio (value / baseline) and met from the goal."""
        if self.value is not None and self.baseline_value not in (None, 0):
            self.ratio = round(float(self.value) / float(self.baseline_value), 4)  # type: ignore[arg-type]
        if self.goal is not None and not self.skipped:
            self.met = self.goal.check(self.value, self.ratio)
        return self

    def as_json(self) -> dict[str, Any]:
        d = asdict(self)
        return _clean(d)


def _clean(x: Any) -> Any:
    """JSON-safe: NaN/inf → None, numpy scalars → Python, tuples → lists."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    if hasattr(x, "item") and callable(x.item):
        x = x.item()
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return None
    if isinstance(x, Path):
        return str(x)
    return x


def skipped(fid: str, title: str, why: str, **params: Any) -> Figure:
    return Figure(fid, title, None, "", skipped=why, params=params)


def failed(fid: str, title: str, err: BaseException) -> Figure:
    return Figure(fid, title, None, "", met=None, reason=f"the figure failed: {type(err).__name__}: {err}")


# -- result files -----------------------------------------------------------------------------------------


def slug(s: str, limit: int = 48) -> str:
    out = re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-")
    return out[:limit].strip("-") or "unknown"


def machine_slug(info: dict[str, Any]) -> str:
    gpu = info.get("gpu") or ""
    base = f"{info.get('cpu_count', 0)}cpu-{slug(info.get('cpu_model', 'cpu'), 32)}"
    return f"{base}-{slug(gpu, 24)}" if gpu else base


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if abs(v) >= 100:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.3g}"
    return str(v)


def markdown(meta: dict[str, Any], figures: Iterable[Figure]) -> str:
    m = meta.get("machine", {})
    model = meta.get("model")
    model_text = f"{model.get('name', '?')} ({model.get('weights', '?')})" if model else "none (these figures use none)"
    lines = [
        f"# Moments benchmark — {meta.get('date', '')}{' (quick)' if meta.get('quick') else ''}",
        "",
        f"Machine: {m.get('cpu_model', '?')}, {m.get('cpu_count', '?')} CPUs, "
        f"{m.get('memory_gib', '?')} GiB; GPU: {m.get('gpu') or 'none'}. "
        f"Model: {model_text}. "
        f"Run took {_fmt(meta.get('duration_s'))} s. Versions and every parameter are in the JSON beside this file.",
        "",
        "| # | figure | value | baseline (same run) | ratio | goal | met | measured reason |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for f in figures:
        if f.skipped:
            lines.append(f"| {f.id} | {f.title} | skipped | | | {f.goal.text if f.goal else ''} | – | {f.skipped} |")
            continue
        value = f"{_fmt(f.value)} {f.unit}".strip()
        base = f"{f.baseline}: {_fmt(f.baseline_value)}" if f.baseline else ""
        met = {True: "met", False: "**not met**", None: "–"}[f.met]
        reason = f.reason.replace("|", "/").replace("\n", " ")
        lines.append(
            f"| {f.id} | {f.title} | {value} | {base} | {_fmt(f.ratio)} | {f.goal.text if f.goal else ''} "
            f"| {met} | {reason} |"
        )
    return "\n".join(lines) + "\n"


def _results_paths(out_dir: Path, meta: dict[str, Any]) -> tuple[Path, Path]:
    stem = f"{machine_slug(meta.get('machine', {}))}-{meta.get('date', 'undated')}"
    if meta.get("quick"):
        stem += "-quick"
    return out_dir / f"{stem}.json", out_dir / f"{stem}.md"


def merged(out_dir: Path, meta: dict[str, Any], figures: Sequence[Figure]) -> tuple[dict[str, Any], list[Figure]]:
    """The day's results file with this run's figures in place of those with the same id (`--merge`): the
    earlier run's meta is kept, and this run's is listed under `merged_runs`."""
    j, _ = _results_paths(out_dir, meta)
    if not j.exists():
        return meta, list(figures)
    doc = json.loads(j.read_text())
    old = [Figure(**{**d, "goal": Goal(**d["goal"]) if d.get("goal") else None}) for d in doc["figures"]]
    new = {f.id: f for f in figures}
    out = [new.pop(f.id, f) for f in old] + list(new.values())
    base = doc["meta"]
    runs = [r for r in base.get("merged_runs", []) if r.get("started_at") != meta.get("started_at")]
    base["merged_runs"] = [*runs, {k: meta.get(k) for k in ("started_at", "only", "command", "figure_seconds")}]
    return base, out


def write_results(out_dir: Path, meta: dict[str, Any], figures: Sequence[Figure]) -> tuple[Path, Path]:
    """`<machine>-<date>[-quick].json` and `.md` in out_dir; returns both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    j, md = _results_paths(out_dir, meta)
    doc = {"meta": _clean(meta), "figures": [f.as_json() for f in figures]}
    tmp = j.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, j)
    md.write_text(markdown(meta, figures))
    return j, md


# -- machine and versions ---------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(mod: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(mod)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    import sqlite3

    mem = 0.0
    try:
        import psutil

        mem = psutil.virtual_memory().total / 2**30
    except ImportError:
        pass
    gpu = None
    try:
        from moments_server.inference.sessions import cuda_usable

        if cuda_usable():
            import subprocess

            gpu = (
                subprocess.run(
                    ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True
                )
                .stdout.strip()
                .splitlines()[0]
            )
    except Exception:
        gpu = None
    import onnxruntime as ort

    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gib": round(mem, 1),
        "gpu": gpu,
        "onnxruntime_providers": ort.get_available_providers(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "versions": {
            m: _version(m)
            for m in (
                "onnxruntime",
                "onnxruntime-gpu",
                "faiss-cpu",
                "av",
                "grpcio",
                "torch",
                "open_clip_torch",
                "numpy",
                "protobuf",
                "tokenizers",
                "aperturedb",
                "pillow",
                "py-spy",
                "pyinstrument",
            )
        },
        "loadavg_start": list(os.getloadavg()),
    }


# -- processes -------------------------------------------------------------------------------------------


def rss_mib(pid: int | None = None) -> float:
    import psutil

    return psutil.Process(pid or os.getpid()).memory_info().rss / 2**20


class PeakRss:
    """Samples a process's RSS every `every` s in a thread; `.peak` MiB."""

    def __init__(self, pid: int | None = None, every: float = 0.2) -> None:
        self.pid = pid or os.getpid()
        self.every = every
        self.peak = 0.0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, rss_mib(self.pid))
            except Exception:
                return
            self._stop.wait(self.every)

    def __enter__(self) -> PeakRss:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


@contextmanager
def quiet_env() -> Iterator[None]:
    os.environ.setdefault("ADB_LOG_FILE", "")
    yield


def now_date() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")
