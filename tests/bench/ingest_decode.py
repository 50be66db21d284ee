"""Figure 11: ingest video-s/s of several concurrent 720p h264 streams at 1 fps, end to end through gRPC,
against the host's bare decode bound measured in the same run: the same videos decoded by PyAV (every
frame, no conversion, no embedding) in parallel processes, one per core, each decoding whole videos
single-threaded from a shared list (the stream videos, repeated until every core has one). That is the
video-seconds per second this host can decode; an ingest that decodes every frame cannot beat it (one that
skips frames can). Goal ≥ 0.85×.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from pathlib import Path
from typing import Any

from tests.bench.common import Figure, Goal, log


def _decode_all(path: str) -> tuple[int, float, float]:
    """(frames, duration s, CPU s) of one whole video decoded on this process's one thread."""
    import av

    cpu = time.process_time()
    with av.open(path) as c:
        s = c.streams.video[0]
        s.thread_type = "NONE"
        s.codec_context.thread_count = 1
        n = sum(1 for _ in c.decode(s))
        tb = s.time_base
        dur = float(s.duration * tb) if s.duration and tb else float(c.duration or 0) / 1e6
    return n, dur, time.process_time() - cpu


def _noop(_: int) -> int:
    import av  # noqa: F401  (imported before the clock starts)

    return os.getpid()


def bare_decode_bound(paths: list[Path], procs: int | None = None) -> dict[str, Any]:
    """The host's decode bound for these videos: `procs` (default: one per core) processes decoding them."""
    procs = procs or os.cpu_count() or 1
    jobs = [str(p) for p in paths] * max(1, -(-procs // max(1, len(paths))))
    with mp.get_context("spawn").Pool(procs) as pool:
        pool.map(_noop, range(procs * 2), chunksize=1)  # every worker up and av imported
        t = time.perf_counter()
        res = pool.map(_decode_all, jobs, chunksize=1)
        wall = time.perf_counter() - t
    video_s = sum(d for _, d, _ in res)
    return {
        "processes": procs,
        "decodes": len(jobs),
        "frames": sum(n for n, _, _ in res),
        "video_s": round(video_s, 3),
        "wall_s": round(wall, 3),
        "video_s_per_s": round(video_s / wall, 3),
        "frames_per_s": round(sum(n for n, _, _ in res) / wall, 1),
        "cpu_s_per_video_s": round(sum(c for _, _, c in res) / video_s, 4),
        # what the processes would reach with every core to themselves (the machine may be shared)
        "cpu_bound_video_s_per_s": round(procs * video_s / max(sum(c for _, _, c in res), 1e-9), 3),
    }


def stream_videos(streams: int, seconds: int) -> list[Path]:
    from tests.bench.data import VideoSpec, make_video

    return [make_video(VideoSpec(1280, 720, seconds, 30, "h264", seed)) for seed in range(streams)]


def run(ctx: Any) -> list[Figure]:
    from tests.bench.load import Profile, ingest_parallel, run_async, start_server, stop_server
    from tests.bench.multiload import worker_runs
    from tests.bench.serving import server_cpu_s

    streams, seconds = ctx.sizes["decode_streams"], ctx.sizes["decode_seconds"]
    log(f"test videos: {streams} × 720p h264, {seconds} s (cached after the first run)")
    videos = stream_videos(streams, seconds)
    figs: list[Figure] = []
    for sfx, flags, how in worker_runs(ctx, figs, "11.ingest-vs-decode", "ingest vs decode bound, {w} server workers"):
        log("  bare decode bound (PyAV, one process per core)")
        bound = bare_decode_bound(videos)
        server, _ = start_server(ctx.model(), f"embedded:{ctx.work / f'decode-store{sfx}'}", ctx.work / "dec", *flags)
        try:
            log(f"  end to end: {streams} parallel Ingest streams at 1 fps")
            cpu0 = server_cpu_s(server.proc.pid)
            with Profile(server.proc.pid, ctx.work / f"profile-ingest-decode{sfx}.txt") as prof:
                wall, dones = run_async(lambda t=server.target, sfx=sfx: ingest_parallel(t, videos, f"dec{sfx}", 1.0))
            busy = round((server_cpu_s(server.proc.pid) - cpu0) / wall, 3)
        finally:
            stop_server(server)
        secs = sum(d.video.duration_s for d in dones)
        frames = sum(d.frames for d in dones)
        e2e = round(secs / wall, 3)
        f = Figure(
            f"11.ingest-vs-decode{sfx}",
            f"ingest 720p h264 at 1 fps, {streams} concurrent streams, vs the bare decode bound",
            e2e,
            "video-s/s",
            baseline=f"bare PyAV decode of the same videos, {bound['processes']} processes (one per core)",
            baseline_value=bound["video_s_per_s"],
            goal=Goal("≥ 0.85 × bare decode bound", ">=", 0.85, "ratio"),
            params={
                "streams": streams,
                "seconds": seconds,
                "video": "1280x720 h264 30 fps, keyframe every 2 s",
                "sample_fps": 1.0,
                "model": ctx.manifest().name,
                "server_workers": how,
            },
            details={
                "bare_decode": bound,
                "end_to_end": {
                    "wall_s": round(wall, 3),
                    "video_s": secs,
                    "frames": frames,
                    "frames_per_s": round(frames / wall, 2),
                    "server_cores_busy": busy,
                    "server_timings_s": [
                        {"decode": round(d.timings.decode_s, 3), "embed": round(d.timings.embed_s, 3)} for d in dones
                    ],
                    "profile": prof.result,
                },
            },
        )
        shares = ", ".join(f"{k} {v:.0%}" for k, v in list(prof.result.get("shares", {}).items())[:4])
        f.reason = (
            f"{frames / wall:.1f} frames/s embedded; bare decode {bound['cpu_s_per_video_s']:.3f} CPU-s per "
            f"video-s on {bound['processes']} processes; server cores busy {busy}; server profile: {shares}"
        )
        if "image_best" in ctx.shared:
            b, fps = ctx.shared["image_best"]
            f.reason += f"; bare image tower (figure 3) {fps:.0f} frames/s at batch {b}"
        figs.append(f)
    return figs
