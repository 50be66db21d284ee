"""The whole-server check, one prepared command (issue 10): on a GPU host within 5 minutes of device time,
rehearsed on the CPU by tests/bench/test_server_check.py so that it cannot rot.

    python -m tests.bench.server_check --out DIR [--device cuda|cpu|auto] [--small] [--workers N] ...

1. prepares in parallel: ViT-B-32 with random weights exported here (`python -m moments_export --model
   ViT-B-32 --random-weights --fp16 no`, or `--export-fp16 yes`; `--model-dir` uses a given one, `--small`
   the shapes-demo test model) and `--streams` 720p h264 videos made with PyAV; then an embedded store of
   `--frames` synthetic CLIP-like frames in the server's data model (tests/bench/data.py);
2. the server's own Embedder alone in this process, `--clients` max concurrent callers (the baseline);
3. the server (`python -m moments_server`, `--workers` passed when it offers the flag) on that store:
   Search QPS, p50 and p99 at each `--clients` level, the load from `--client-procs` client processes;
4. the host's bare decode bound (PyAV, the same videos, one process per core), then Ingest of the streams
   at 1 fps, alone and with `--ingest-search-clients` searching at the same time.

Writes `server-check-<device>-<date>.json` and `.md` into --out after every phase (a phase that fails or
has no time left under --budget-s is recorded as such, and the rest still runs or is skipped with the
reason), so an interrupted run keeps what it measured. The Markdown names the device (nvidia-smi's name,
or the CPU model). See tests/bench/README.md for the exact device command.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.bench.common import REPO, Figure, Goal, _clean, log, machine_info, markdown, now_date

SAMPLE_FPS = 1.0


class Check:
    """The run's state: results so far, the time budget, the result files."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.started = time.monotonic()
        self.meta: dict[str, Any] = {
            "date": now_date(),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": " ".join(["python", "-m", "tests.bench.server_check", *sys.argv[1:]]),
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        }
        self.figures: list[Figure] = []
        self.phases: dict[str, Any] = {}
        self.errors: list[str] = []
        self.paths: tuple[Path, Path] | None = None

    def left(self) -> float:
        return self.args.budget_s - (time.monotonic() - self.started)

    def phase(self, name: str, need_s: float, fn: Callable[[], Any]) -> Any:
        """Run one phase, timed; skipped when less than `need_s` of the budget is left; errors recorded."""
        if self.left() < need_s:
            self.phases[name] = {"skipped": f"{self.left():.0f} s of the budget left, the phase needs ~{need_s:.0f}"}
            log(f"skip {name}: {self.phases[name]['skipped']}")
            self.save()
            return None
        log(f"== {name} ({self.left():.0f} s of the budget left)")
        t = time.monotonic()
        try:
            out = fn()
            self.phases[name] = {"seconds": round(time.monotonic() - t, 1)}
            return out
        except Exception as e:
            self.errors.append(f"{name}: {traceback.format_exc()[-3000:]}")
            self.phases[name] = {"seconds": round(time.monotonic() - t, 1), "error": f"{type(e).__name__}: {e}"}
            log(f"{name} failed: {e}")
            return None
        finally:
            self.save()

    def save(self) -> tuple[Path, Path]:
        out: Path = self.args.out
        out.mkdir(parents=True, exist_ok=True)
        self.meta["duration_s"] = round(time.monotonic() - self.started, 1)
        if self.paths is None:
            dev = slugify(self.meta.get("device", "unknown"))
            stem = f"server-check-{dev}-{self.meta['date']}" + ("-small" if self.args.small else "")
            self.paths = out / f"{stem}.json", out / f"{stem}.md"
        j, md = self.paths
        for f in self.figures:
            f.evaluate()
        doc = {
            "meta": self.meta,
            "phases": self.phases,
            "figures": [f.as_json() for f in self.figures],
            "errors": self.errors,
        }
        j.write_text(json.dumps(_clean(doc), indent=2) + "\n")
        md_meta = {**self.meta, "quick": self.args.small}
        text = markdown(md_meta, self.figures).replace(" (quick)", " (small)", 1)
        text = text.replace("# Moments benchmark", "# Moments whole-server check", 1)
        model = self.meta.get("server_info", {}).get("model", {})
        served = f" (server: {model.get('provider')}, {model.get('precision')})" if model else ""
        text += f"\nDevice: **{self.meta.get('device')}**{served}. Phases (s): " + ", ".join(
            f"{k} {v.get('seconds', v.get('skipped', ''))}" for k, v in self.phases.items()
        )
        if self.errors:
            text += "\n\nErrors:\n\n" + "\n".join(f"- {e.splitlines()[-1][:300]}" for e in self.errors)
        md.write_text(text + "\n")
        return j, md


def slugify(s: str) -> str:
    from tests.bench.common import slug

    return slug(s, 32)


def device_name(device: str) -> str:
    """nvidia-smi's name of the card when the check runs on one, else the CPU model."""
    from tests.bench.common import _cpu_model

    if device != "cpu":
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=30
            )
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip().splitlines()[0]
        except (OSError, subprocess.TimeoutExpired):
            pass
    return f"{_cpu_model()} ({os.cpu_count()} CPUs)"


def cuda_library_env() -> None:
    """Put the CUDA/cuDNN libraries of torch's nvidia-* wheels on LD_LIBRARY_PATH, so that the server
    process (which does not import torch) can create CUDA sessions with onnxruntime-gpu."""
    try:
        import nvidia
    except ImportError:
        return
    dirs = sorted({str(p) for root in nvidia.__path__ for p in Path(root).glob("**/lib") if p.is_dir()})
    if dirs:
        old = os.environ.get("LD_LIBRARY_PATH")
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(dirs + ([old] if old else []))


# -- preparation --------------------------------------------------------------------------------------------


def start_export(work: Path, fp16: str) -> tuple[subprocess.Popen[bytes], Path]:
    out = work / "model"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO / "export"), str(REPO / "clients" / "python"), *filter(None, [env.get("PYTHONPATH")])]
    )
    cmd = [sys.executable, "-m", "moments_export", "--model", "ViT-B-32", "--random-weights", "--fp16", fp16]
    log_file = (work / "export.log").open("wb")
    proc = subprocess.Popen([*cmd, "--out", str(out)], cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    return proc, out


def _make_one(args: tuple[int, int, int, int, str]) -> str:
    from tests.bench.data import VideoSpec, make_video

    w, h, seconds, seed, root = args
    return str(make_video(VideoSpec(w, h, seconds, 30, "h264", seed), Path(root)))


def make_videos(n: int, seconds: int, root: Path, size: tuple[int, int] = (1280, 720)) -> list[Path]:
    """`n` distinct textured h264 videos made with PyAV, in parallel processes."""
    import multiprocessing as mp

    jobs = [(size[0], size[1], seconds, seed, str(root)) for seed in range(n)]
    with mp.get_context("spawn").Pool(min(n, os.cpu_count() or 1)) as pool:
        return [Path(p) for p in pool.map(_make_one, jobs, chunksize=1)]


def build_store(model: Path, frames: int, out: Path, engine: str) -> dict[str, Any]:
    from moments_server.inference.manifest import load_manifest
    from tests.bench.data import FRAMES_PER_VIDEO, StoreSpec
    from tests.bench.data import build_store as build

    m = load_manifest(model)
    per = min(FRAMES_PER_VIDEO, frames)
    spec = StoreSpec(max(1, frames // per), per, m.embed_dim, 0, m.descriptor_set, m.identity(), engine)
    return build(spec, out)


# -- measurements -------------------------------------------------------------------------------------------


def split_clients(clients: int, procs: int) -> tuple[int, int]:
    """(processes, callers each) for `clients` callers over at most `procs` client processes."""
    p = max(1, min(procs, clients))
    while clients % p:
        p -= 1
    return p, clients // p


def search_level(target: str, clients: int, procs: int, duration: float) -> tuple[Any, dict[str, Any]]:
    from tests.bench.load import query_texts, search_load
    from tests.bench.multiload import multiproc_search_load

    if clients == 1:
        res = asyncio.run(search_load(target, 1, duration_s=duration, texts=query_texts("one ")))
        return res, {"client_processes": 1, "callers_per_process": 1}
    p, c = split_clients(clients, procs)
    return multiproc_search_load(target, p, c, duration)


def qps_figure(fid: str, title: str, res: Any, facts: dict[str, Any], **kw: Any) -> Figure:
    s = res.summary()
    lat = s["latency_ms"]
    f = Figure(fid, title, round(res.qps, 2), "QPS", details={"result": s, "clients": facts}, **kw)
    f.details["p50_ms"], f.details["p99_ms"] = lat.get("p50"), lat.get("p99")
    f.reason = f"p50 {lat.get('p50')} ms, p99 {lat.get('p99')} ms, errors {s['errors'] or 0}"
    return f


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.bench.server_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder for the JSON and Markdown results")
    p.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"), help="the server's --device")
    p.add_argument("--small", action="store_true", help="the CPU rehearsal: shapes-demo, ~1k frames, seconds")
    p.add_argument("--model-dir", type=Path, help="use this model instead of exporting ViT-B-32")
    p.add_argument(
        "--export-fp16", default="no", choices=("no", "yes", "auto"), help="the export's --fp16 (default no)"
    )
    p.add_argument("--frames", type=int, help="frames in the store (default 100,000; --small 1,000)")
    p.add_argument("--engine", default="HNSW", choices=("HNSW", "Flat"), help="the store's descriptor engine")
    p.add_argument("--clients", help="search client levels (default 1,64,512; --small 1,8)")
    p.add_argument("--client-procs", type=int, help="client processes for the load (default cores/4, 1..8)")
    p.add_argument("--search-s", type=float, help="seconds per search level (default 6; --small 1.5)")
    p.add_argument("--streams", type=int, help="concurrent ingest streams (default 16; --small 2)")
    p.add_argument("--video-s", type=int, help="seconds of each 720p h264 video (default 10; --small 2)")
    p.add_argument("--ingest-search-clients", type=int, help="searching clients during ingest (default 64; --small 8)")
    p.add_argument("--workers", type=int, help="server worker processes (passed when the server has --workers)")
    p.add_argument("--server-arg", action="append", default=[], help="an extra server flag (repeatable)")
    p.add_argument("--budget-s", type=float, default=270.0, help="stop starting phases past this (default 270)")
    p.add_argument("--work", type=Path, help="scratch folder (default: a temporary one, removed at the end)")
    a = p.parse_args(argv)
    small = a.small
    a.frames = a.frames or (1000 if small else 100_000)
    a.clients = [int(x) for x in (a.clients or ("1,8" if small else "1,64,512")).split(",")]
    a.client_procs = a.client_procs or max(1, min(8, (os.cpu_count() or 4) // 4))
    a.search_s = a.search_s or (1.5 if small else 6.0)
    a.streams = a.streams or (2 if small else 16)
    a.video_s = a.video_s or (2 if small else 10)
    a.ingest_search_clients = a.ingest_search_clients or (8 if small else 64)
    os.environ.setdefault("ADB_LOG_FILE", "")
    if a.device != "cpu":
        cuda_library_env()
    work = a.work or Path(tempfile.mkdtemp(prefix="server-check-"))
    work.mkdir(parents=True, exist_ok=True)
    ck = Check(a)
    ck.meta["device"] = device_name(a.device)
    try:
        ck.meta["machine"] = machine_info()
    except Exception as e:  # the facts are nice to have; the check goes on without them
        ck.meta["machine"] = {"cpu_count": os.cpu_count(), "error": repr(e)}
    ck.save()
    try:
        run_check(ck, work)
    finally:
        j, md = ck.save()
        log(f"wrote {j} and {md} in {ck.meta['duration_s']} s")
        if a.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if ck.errors else 0


def run_check(ck: Check, work: Path) -> None:
    from tests.bench.ingest_decode import bare_decode_bound
    from tests.bench.load import ingest_parallel, start_server, stop_server
    from tests.bench.multiload import multiproc_search_load, workers_flags

    a = ck.args
    st: dict[str, Any] = {}

    def prepare() -> None:
        export = None
        if a.model_dir:
            st["model"] = a.model_dir
        elif a.small:
            from tests.bench.model import shapes_model

            st["model"] = shapes_model()
        else:
            export, st["model"] = start_export(work, a.export_fp16)
        t = time.monotonic()
        st["videos"] = make_videos(a.streams, a.video_s, work / "videos")
        ck.meta["make_videos_s"] = round(time.monotonic() - t, 1)
        if export is not None and export.wait() != 0:
            raise RuntimeError(f"the export failed:\n{(work / 'export.log').read_text()[-3000:]}")
        from moments_server.inference.manifest import load_manifest

        m = load_manifest(st["model"])
        how = "given (--model-dir)" if a.model_dir else "shapes-demo test model" if a.small else "random init"
        ck.meta["model"] = {"name": m.name, "weights": how, "dir": str(st["model"]), "fingerprint": m.fingerprint}
        ck.meta["store"] = build_store(st["model"], a.frames, work / "store", a.engine)

    ck.phase("prepare", 10 if a.small else 150, prepare)
    if "model" not in ck.meta or "store" not in ck.meta:
        ck.errors.append("nothing measured: the preparation did not finish")
        return
    model, store = st["model"], work / "store"
    top = max(a.clients)

    def alone() -> None:
        from tests.bench.embedder_alone import EmbedderAlone

        with EmbedderAlone(model, a.device) as e:
            st["alone"] = e.measure(top, a.search_s)
            ck.meta["embedder_alone"] = {"provider": e.provider, "text_max_batch": e.text_max_batch}

    ck.phase("embedder_alone", 20, alone)

    flags, how = workers_flags(a.workers)
    ck.meta["server_workers"] = how
    server_flags = [*flags, "--device", a.device, "--log-level", "INFO", *a.server_arg]
    ck.meta["server_flags"] = server_flags
    server = None

    def start() -> None:
        nonlocal server
        server, _ = start_server(model, f"embedded:{store}", work / "server", *server_flags)
        ck.meta["server_log_serving"] = [
            line for line in server.output().splitlines() if "serving" in line or "tower:" in line
        ][-4:]
        import grpc
        from google.protobuf.json_format import MessageToDict

        from moments.v1 import moments_pb2 as pb
        from moments.v1 import moments_pb2_grpc as pb_grpc

        with grpc.insecure_channel(server.target) as ch:
            ck.meta["server_info"] = MessageToDict(pb_grpc.VideoSearchStub(ch).Info(pb.InfoRequest(), timeout=30))

    ck.phase("server_start", 30, start)
    if server is None:
        return
    try:
        for clients in a.clients:

            def level(clients: int = clients) -> None:
                res, facts = search_level(server.target, clients, a.client_procs, a.search_s)
                st[f"c{clients}"] = res
                kw: dict[str, Any] = {}
                if clients == top and "alone" in st:
                    kw = {
                        "baseline": f"the server's Embedder alone in one process, {top} concurrent callers",
                        "baseline_value": round(st["alone"].qps, 2),
                        "goal": Goal("≥ 0.7 × the Embedder alone (H200 goal)", ">=", 0.7, "ratio"),
                    }
                elif clients > 1:
                    kw = {"goal": Goal("≥ 10,000 QPS (H200 goal, with p99 ≤ 20 ms)", ">=", 10_000.0)}
                f = qps_figure(
                    f"search.c{clients}",
                    f"Search through gRPC, {clients} client{'s' if clients > 1 else ''}, {a.frames:,} frames",
                    res,
                    facts,
                    **kw,
                )
                if clients == top and "alone" in st:
                    f.details["embedder_alone"] = st["alone"].summary()
                ck.figures.append(f)

            ck.phase(f"search_c{clients}", a.search_s + 10, level)

        def decode_bound() -> None:
            st["bound"] = bare_decode_bound(st["videos"])

        ck.phase("bare_decode_bound", 15, decode_bound)

        def ingest(with_search: bool) -> None:
            prefix = "ingest-s" if with_search else "ingest"
            search_res: list[Any] = []

            async def both() -> tuple[float, list[Any]]:
                if not with_search:
                    return await ingest_parallel(server.target, st["videos"], prefix, SAMPLE_FPS)
                # the searches span the time the ingest alone took; the ingest starts once they run
                p, c = split_clients(a.ingest_search_clients, a.client_procs)
                span, started = st.get("ingest_wall", a.search_s), threading.Event()
                load = asyncio.ensure_future(
                    asyncio.to_thread(multiproc_search_load, server.target, p, c, span, started=started)
                )
                await asyncio.to_thread(started.wait, 180)
                out = await ingest_parallel(server.target, st["videos"], prefix, SAMPLE_FPS)
                search_res.append(await load)
                return out

            wall, dones = asyncio.run(both())
            secs = sum(d.video.duration_s for d in dones)
            frames = sum(d.frames for d in dones)
            vps = round(secs / wall, 3)
            details: dict[str, Any] = {
                "wall_s": round(wall, 3),
                "video_s": secs,
                "frames": frames,
                "frames_per_s": round(frames / wall, 1),
                "video": f"1280x720 h264 30 fps, {a.video_s} s each",
            }
            if not with_search:
                st["ingest_wall"], st["ingest_vps"] = wall, vps
                bound = st.get("bound")
                f = Figure(
                    "ingest",
                    f"Ingest 720p h264 at 1 fps, {a.streams} concurrent streams",
                    vps,
                    "video-s/s",
                    baseline=f"bare PyAV decode of the same videos, {bound['processes']} processes" if bound else "",
                    baseline_value=bound["video_s_per_s"] if bound else None,
                    goal=Goal("≥ 0.85 × bare decode bound (H200 goal)", ">=", 0.85, "ratio") if bound else None,
                    details={**details, "bare_decode": bound},
                    reason=f"{frames / wall:.1f} frames/s",
                )
                ck.figures.append(f)
                return
            res, facts = search_res[0]
            s = res.summary()
            idle = st.get(f"c{a.ingest_search_clients}")
            f = Figure(
                "ingest+search",
                f"Ingest of the same streams with {a.ingest_search_clients} clients searching",
                vps,
                "video-s/s",
                baseline="the same ingest alone",
                baseline_value=st.get("ingest_vps"),
                details={**details, "search_during_ingest": s, "search_clients": facts},
            )
            idle_p99 = idle.summary()["latency_ms"].get("p99") if idle else None
            f.reason = (
                f"searches during the ingest: {res.qps:.1f} QPS, p50 {s['latency_ms'].get('p50')} ms, p99 "
                f"{s['latency_ms'].get('p99')} ms (idle p99 at {a.ingest_search_clients} clients: {idle_p99} ms)"
            )
            ck.figures.append(f)

        ck.phase("ingest", 20, lambda: ingest(False))
        ck.phase("ingest_with_search", 20, lambda: ingest(True))
    finally:
        ck.meta["server_log_tail"] = server.output()[-2000:]
        stop_server(server)


if __name__ == "__main__":
    sys.exit(main())
