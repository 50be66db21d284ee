"""The real server over real sockets: start it, drive it with concurrent gRPC clients, read its metrics,
and profile it with py-spy (stage shares by stack)."""

from __future__ import annotations

import asyncio
import itertools
import shutil
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from moments.v1 import moments_pb2 as pb
from moments.v1 import moments_pb2_grpc as pb_grpc
from tests.bench.common import log, summarize
from tests.live import LiveServer, free_port

_ADJ = ("red", "small", "busy", "quiet", "dark", "bright", "wet", "crowded", "empty", "distant", "old", "fast")
_NOUN = ("car", "dog", "person", "bicycle", "truck", "door", "street", "parking lot", "crowd", "bird", "boat")
_WHERE = ("at night", "in the rain", "near the gate", "on the corner", "by the river", "in the hall", "at noon")


def query_texts(prefix: str = "") -> Iterator[str]:
    """Endless distinct natural-looking queries (distinct, so the server's text cache never answers)."""
    for i in itertools.count():
        a, n, w = _ADJ[i % len(_ADJ)], _NOUN[(i // 3) % len(_NOUN)], _WHERE[(i // 7) % len(_WHERE)]
        yield f"{prefix}a {a} {n} {w} number {i}"


class BenchServer(LiveServer):
    """A LiveServer that waits longer for SERVING (several worker processes each warming a ViT-B-32 on a
    few busy cores take minutes) and stops its process when it never gets there."""

    def wait_serving(self, timeout: float = 600.0) -> None:
        try:
            super().wait_serving(timeout)
        except BaseException:
            self.stop()
            raise


def start_server(model_dir: Path, store: str, workdir: Path, *flags: str) -> tuple[LiveServer, int]:
    """LiveServer with its Prometheus endpoint on a known port; returns (server, metrics_port)."""
    workdir.mkdir(parents=True, exist_ok=True)
    for attempt in range(3):
        # a free port can be taken by another process before the server binds it: try other ports
        port = free_port()
        try:
            server = BenchServer(
                model_dir, store, workdir, "--metrics-listen", f"127.0.0.1:{port}", "--log-level", "WARNING", *flags
            )
        except RuntimeError as e:
            if not any(m in str(e) for m in ("Address already in use", "cannot listen on")) or attempt == 2:
                raise
            log(f"server start: a port was taken meanwhile, retrying ({str(e).strip().splitlines()[-1]})")
            continue
        return server, port
    raise AssertionError("unreachable")


def metrics_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def metric_value(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    import re

    total = 0.0
    for line in text.splitlines():
        m = re.match(r"^(\w+)(?:\{(.*)\})?\s+(\S+)$", line)
        if not m or m.group(1) != name:
            continue
        pairs = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if labels and any(pairs.get(k) != v for k, v in labels.items()):
            continue
        total += float(m.group(3))
    return total


@dataclass
class LoadResult:
    clients: int
    wall_s: float
    latencies_s: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    timings: list[tuple[float, float, float, float]] = field(default_factory=list)  # queue, inference, store, total

    @property
    def qps(self) -> float:
        return len(self.latencies_s) / self.wall_s if self.wall_s else 0.0

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "clients": self.clients,
            "completed": len(self.latencies_s),
            "wall_s": round(self.wall_s, 3),
            "qps": round(self.qps, 3),
            "latency_ms": summarize(self.latencies_s),
            "errors": dict(self.errors),
        }
        if self.timings:
            cols = list(zip(*self.timings, strict=True))
            out["server_timing_ms"] = {
                name: summarize([v / 1e3 for v in col])
                for name, col in zip(("queue", "inference", "store", "total"), cols, strict=True)
            }
        return out


async def search_load(
    target: str,
    clients: int,
    duration_s: float | None = None,
    count: int | None = None,
    texts: Iterator[str] | None = None,
    channels: int = 4,
    top_k: int = 10,
    stop: asyncio.Event | None = None,
    images: Sequence[bytes] = (),
) -> LoadResult:
    """`clients` concurrent callers, each issuing Search back to back, for `duration_s` or `count` calls total:
    text queries, or image queries cycling through `images` when given (the server caches no image vector)."""
    texts = texts or query_texts()
    pictures = itertools.cycle(images) if images else None
    # a connection of its own per channel (gRPC shares one between same-target channels by default), so
    # that servers sharing the port (SO_REUSEPORT) each get their part of the load
    opts = [("grpc.use_local_subchannel_pool", 1)]
    chans = [grpc.aio.insecure_channel(target, options=opts) for _ in range(max(1, min(channels, clients)))]
    stubs = [pb_grpc.VideoSearchStub(c) for c in chans]
    res = LoadResult(clients, 0.0)
    remaining = [count if count is not None else 1 << 62]
    started = time.perf_counter()
    deadline = started + duration_s if duration_s is not None else float("inf")

    async def one(i: int) -> None:
        stub = stubs[i % len(stubs)]
        while time.perf_counter() < deadline and remaining[0] > 0 and not (stop and stop.is_set()):
            remaining[0] -= 1
            t = time.perf_counter()
            try:
                query = pb.SearchRequest(image=next(pictures)) if pictures else pb.SearchRequest(text=next(texts))
                query.top_k = top_k
                reply = await stub.Search(query, timeout=120)
            except grpc.aio.AioRpcError as e:
                res.errors[e.code().name] += 1
                continue
            res.latencies_s.append(time.perf_counter() - t)
            tm = reply.timing
            res.timings.append((tm.queue_ms, tm.inference_ms, tm.store_ms, tm.total_ms))

    try:
        await asyncio.gather(*(one(i) for i in range(clients)))
    finally:
        res.wall_s = time.perf_counter() - started
        for c in chans:
            await c.close()
    return res


def ingest_requests(path: Path, vid: str, fps: float = 1.0, chunk: int = 1 << 20) -> Iterator[pb.IngestRequest]:
    # Fixed windows: one frame per 1/fps, the frames the bounds and the naive pipeline embed. The server's
    # default (shot-aware windows) also keeps each shot's first frame: on the bench's videos, with a cut
    # every few seconds, 1.67 frames per video-second at 1 fps, which no bound here counts (figure 14
    # measures what shot detection costs).
    header = pb.IngestHeader(
        video_id=vid,
        filename=path.name,
        sampling=pb.SamplingOptions(fps=fps, windows=pb.WINDOWS_FIXED),
        size_bytes=path.stat().st_size,
        replace=True,
    )
    yield pb.IngestRequest(header=header)
    with path.open("rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            yield pb.IngestRequest(chunk=b)
    yield pb.IngestRequest(end=pb.IngestEnd())  # the upload is complete (as the clients end it)


async def ingest_one(stub: pb_grpc.VideoSearchStub, path: Path, vid: str, fps: float = 1.0) -> pb.IngestDone:
    done = None
    async for ev in stub.Ingest(ingest_requests(path, vid, fps), timeout=1800):
        if ev.WhichOneof("event") == "done":
            done = ev.done
    if done is None:
        raise RuntimeError(f"ingest of {vid} ended without a done event")
    return done


async def ingest_parallel(target: str, paths: list[Path], prefix: str, fps: float = 1.0) -> tuple[float, list[Any]]:
    """All `paths` as parallel Ingest streams; (wall seconds, IngestDone per video)."""
    async with grpc.aio.insecure_channel(target, options=[("grpc.max_send_message_length", 64 << 20)]) as ch:
        stub = pb_grpc.VideoSearchStub(ch)
        t = time.perf_counter()
        dones = await asyncio.gather(*(ingest_one(stub, p, f"{prefix}-{i}", fps) for i, p in enumerate(paths)))
        return time.perf_counter() - t, list(dones)


# -- profiling ----------------------------------------------------------------------------------------------

#: stack substrings → stage, first match wins (checked from the innermost frame outwards)
STAGES: tuple[tuple[str, str], ...] = (
    ("video/decode.py", "decode"),
    ("/av/", "decode"),
    ("sessions.py", "embed (onnxruntime)"),
    ("onnxruntime", "embed (onnxruntime)"),
    ("tokenizer.py", "tokenize"),
    ("preprocess.py", "image preprocess"),
    ("store/embedded", "store"),
    ("catalog/", "store"),
    ("sqlite3", "store"),
    ("spool.py", "receive/spool"),
    ("_thumbnail", "thumbnail"),
    ("grpc", "grpc/transport"),
    ("asyncio", "event loop"),
)


def classify(stack: str) -> str:
    frames = stack.split(";")
    for frame in reversed(frames):
        if frame.startswith("process "):  # py-spy --subprocesses: the process's command line, not code
            continue
        for needle, stage in STAGES:
            if needle in frame:
                return stage
    return "other"


def stage_shares(raw: str) -> dict[str, Any]:
    """py-spy `--format raw` (collapsed stacks, `stack count` per line) → samples and shares per stage."""
    counts: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        counts[classify(stack)] += int(n)
    total = sum(counts.values())
    return {
        "samples": total,
        "shares": {k: round(v / total, 4) for k, v in counts.most_common()} if total else {},
    }


def py_spy_path() -> str | None:
    venv = Path(sys.executable).parent / "py-spy"
    return str(venv) if venv.exists() else shutil.which("py-spy")


class Profile:
    """py-spy attached to `pid` for the duration of a `with` block (all threads, non-idle samples).

    ONNX Runtime's and FFmpeg's own worker threads have no Python stack and are not sampled; their
    CPU is reported separately from /proc (native_threads_cpu_s), with the process's total CPU.
    """

    def __init__(self, pid: int, out: Path, rate: int = 67) -> None:
        self.pid, self.out, self.rate = pid, out, rate
        self.proc: subprocess.Popen[bytes] | None = None
        self.result: dict[str, Any] = {}

    def _cpu(self) -> tuple[float, dict[int, float]]:
        import psutil

        p = psutil.Process(self.pid)
        t = p.cpu_times()
        per = {th.id: th.user_time + th.system_time for th in p.threads()}
        return t.user + t.system, per

    def __enter__(self) -> Profile:
        exe = py_spy_path()
        self.t0 = time.perf_counter()
        self.cpu0, self.threads0 = self._cpu()
        if exe is None:
            self.result["error"] = "py-spy is not installed (pip install py-spy)"
            return self
        self.proc = subprocess.Popen(
            [
                exe,
                "record",
                "-p",
                str(self.pid),
                "-r",
                str(self.rate),
                "-f",
                "raw",
                "-o",
                str(self.out),
                "--nonblocking",
                "--threads",
                "--subprocesses",  # a server with --workers serves from child processes
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self.t0
        try:
            cpu1, threads1 = self._cpu()
        except Exception:
            cpu1, threads1 = self.cpu0, {}
        if self.proc is not None:
            self.proc.send_signal(2)  # SIGINT: py-spy writes what it has and exits
            try:
                _, err = self.proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                _, err = self.proc.communicate()
            raw = self.out.read_text() if self.out.exists() else ""
            self.result.update(stage_shares(raw))
            py_tids = {int(m, 16) if m.startswith("0x") else int(m) for m in _thread_ids(raw)}
            if not raw:
                self.result["error"] = (err or b"").decode(errors="replace")[-500:]
        else:
            py_tids = set()
        deltas = {tid: threads1.get(tid, 0.0) - self.threads0.get(tid, 0.0) for tid in threads1}
        self.result.update(
            {
                "wall_s": round(wall, 3),
                "process_cpu_s": round(cpu1 - self.cpu0, 3),
                "cores_busy": round((cpu1 - self.cpu0) / wall, 3) if wall else None,
                "busiest_threads_cpu_s": sorted((round(v, 2) for v in deltas.values()), reverse=True)[:8],
                "profile_file": str(self.out),
            }
        )
        if py_tids:
            self.result["python_threads_seen"] = len(py_tids)


def _thread_ids(raw: str) -> set[str]:
    import re

    return set(re.findall(r"thread \((0x[0-9a-fA-F]+|\d+)\)", raw))


def run_async(coro_fn: Callable[[], Any]) -> Any:
    return asyncio.run(coro_fn())


def stop_server(server: LiveServer) -> None:
    try:
        server.stop()
    except Exception as e:  # never let a stuck server take the whole run down
        log(f"stopping the server failed: {e}")
