"""Figure 12: LIVE ingest (issue 12), shapes-demo on the embedded store, one MPEG-TS camera stream.

- 12.lag: how long after the last byte of a sampled frame arrives its moment is searchable. The stream is
  sent at its own pace (real time: each packet when its timestamp comes), sampled at 1 fps with 1-second
  segments; a frame is searchable when the server reports the commit of its segment (`committed`: the
  transaction has committed before the event is sent; a Search per commit checks that its second is found).
  Baseline: none (an absolute goal): p95 ≤ 2 s.
- 12.rss: server RSS over a long stream fed faster than real time (30 min of video in the full run): growth
  after warm-up (the first fifth) must stay ≤ 50 MB; the spool folder is checked empty (live streams keep
  only their unstored bytes, in memory, bounded by back-pressure).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import grpc

from moments.v1 import moments_pb2 as pb
from moments.v1 import moments_pb2_grpc as pb_grpc
from tests.bench.common import CACHE, Figure, Goal, log, percentile, rss_mib

NEEDS_MODEL = False  # shapes-demo, not the bench's ViT-B-32
SHAPES = [("red", "circle"), ("blue", "square"), ("green", "triangle"), ("yellow", "cross")]


def make_stream(path: Path, seconds: int, size: tuple[int, int]) -> Path:
    from moments_client.sample_video import write_shapes_video

    if not path.exists():
        tmp = path.with_suffix(".tmp.ts")
        per = 2.0
        shapes = [SHAPES[i % len(SHAPES)] for i in range(int(seconds / per))]
        write_shapes_video(tmp, shapes, seconds_each=per, fps=10, size=size, codec="h264")
        tmp.rename(path)
    return path


def packet_schedule(path: Path) -> list[tuple[float, int, float | None]]:
    """(packet time in s from the start, byte offset just after the packet, pts in s) in file order."""
    import av

    out: list[tuple[float, int, float | None]] = []
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        tb = float(stream.time_base)
        start = None
        for p in c.demux(stream):
            if p.pos is None or p.size == 0:
                continue
            t = float(p.dts if p.dts is not None else p.pts or 0) * tb
            start = t if start is None else start
            pts = float(p.pts) * tb if p.pts is not None else None
            out.append((t - start, p.pos + p.size, pts))
    return out


def stream_events(target: str, path: Path, video_id: str, realtime: bool, rss_of: int | None = None) -> dict[str, Any]:
    """Send `path` as a live stream; -> when each byte offset was sent and when each commit arrived."""
    data = path.read_bytes()
    schedule = packet_schedule(path) if realtime else []
    sent_at: list[tuple[int, float]] = []  # (bytes sent so far, wall time)
    rss: list[tuple[float, float]] = []
    t0 = time.perf_counter()

    def requests() -> Any:
        yield pb.IngestRequest(
            header=pb.IngestHeader(video_id=video_id, mode=pb.INGEST_MODE_LIVE, segment_s=1.0, replace=True)
        )
        done = 0
        if realtime:
            for t, end, _ in schedule:
                wait = t0 + t - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                if end > done:
                    yield pb.IngestRequest(chunk=data[done:end])
                    done = end
                    sent_at.append((done, time.perf_counter()))
        for i in range(done, len(data), 1 << 16):
            yield pb.IngestRequest(chunk=data[i : i + (1 << 16)])
            sent_at.append((min(i + (1 << 16), len(data)), time.perf_counter()))
        yield pb.IngestRequest(end=pb.IngestEnd())  # the stream is complete (as the clients end it)

    stop = threading.Event()

    def sample_rss() -> None:
        while not stop.wait(0.2):
            if rss_of is not None:
                rss.append((time.perf_counter() - t0, rss_mib(rss_of)))

    sampler = threading.Thread(target=sample_rss, daemon=True)
    sampler.start()
    commits: list[tuple[float, float]] = []  # (media_s committed, wall time)
    with grpc.insecure_channel(target) as ch:
        stub = pb_grpc.VideoSearchStub(ch)
        for ev in stub.Ingest(requests(), timeout=7200):
            if ev.WhichOneof("event") == "committed":
                commits.append((ev.committed.media_s, time.perf_counter()))
                if realtime and len(commits) % 5 == 0:  # the committed second is found (not timed)
                    hit = stub.Search(
                        pb.SearchRequest(text="a red circle", top_k=50, filters=pb.SearchFilters(video_ids=[video_id])),
                        timeout=30,
                    )
                    if not hit.moments:
                        raise RuntimeError(f"committed {ev.committed.media_s} s but Search finds nothing")
            elif ev.WhichOneof("event") == "done":
                state = ev.done.video.state
    stop.set()
    sampler.join()
    return {"sent_at": sent_at, "commits": commits, "schedule": schedule, "rss": rss, "t0": t0, "state": state}


def lags(run: dict[str, Any]) -> list[float]:
    """Per sampled second k: commit time of media_s >= k + 1 minus the time the bytes of its frame were sent."""
    sent_at, commits, schedule = run["sent_at"], run["commits"], run["schedule"]
    out = []
    k = 0
    while True:
        frame = next((end for _, end, pts in schedule if pts is not None and pts >= k), None)
        if frame is None:
            break
        sent = next((t for n, t in sent_at if n >= frame), None)
        done = next((t for m, t in commits if m >= k + 1 - 1e-6), None)
        if sent is None or done is None:
            break
        out.append(max(done - sent, 0.0))
        k += 1
    return out


def run(ctx: Any) -> list[Figure]:
    from tests.bench.load import start_server, stop_server
    from tests.bench.model import shapes_model

    model = shapes_model()
    seconds = 30 if ctx.quick else 120
    long_s = 600 if ctx.quick else 1800
    work = ctx.work / "live"
    videos = CACHE / "bench-videos" / "live"  # made once, kept like the other bench videos
    for d in (work, videos):
        d.mkdir(parents=True, exist_ok=True)
    cam = make_stream(videos / f"cam-{seconds}s.ts", seconds, (320, 240))
    long = make_stream(videos / f"long-{long_s}s.ts", long_s, (160, 120))
    server, _ = start_server(model, f"embedded:{work / 'data'}", work / "server")
    figs = []
    try:
        log(f"  12.lag: a {seconds} s MPEG-TS stream sent in real time, 1 fps, 1 s segments")
        r = stream_events(server.target, cam, "cam-lag", realtime=True)
        lag = lags(r)
        figs.append(
            Figure(
                "12.lag",
                "live: searchable lag after a sampled frame's last byte arrives (p95), 1 fps, shapes-demo",
                round(percentile(lag, 95), 3) if lag else None,
                "s",
                goal=Goal("p95 ≤ 2 s", "<=", 2.0),
                params={"stream_s": seconds, "segment_s": 1.0, "sample_fps": 1.0, "size": "320x240"},
                details={
                    "p50_s": round(percentile(lag, 50), 3) if lag else None,
                    "max_s": round(max(lag), 3) if lag else None,
                    "seconds_measured": len(lag),
                    "state": r["state"],
                },
                reason="commit events arrive after the transaction commits; a Search every 5 commits found the video",
            )
        )
        log(f"  12.rss: a {long_s} s stream fed as fast as the server takes it")
        r = stream_events(server.target, long, "cam-long", realtime=False, rss_of=server.proc.pid)
        samples = r["rss"]
        warm = [m for t, m in samples if t >= samples[-1][0] / 5] if samples else []
        growth = round(max(warm) - warm[0], 1) if len(warm) > 1 else None
        spool = [p for p in (work / "server").glob("moments-*") if p.is_file()]
        figs.append(
            Figure(
                "12.rss",
                f"live: server RSS growth after warm-up over a {long_s // 60}-minute stream fed faster than real time",
                growth,
                "MB",
                goal=Goal("≤ 50 MB", "<=", 50.0),
                params={"stream_s": long_s, "size": "160x120", "segment_s": 1.0},
                details={
                    "rss_mib": [(round(t, 1), round(m, 1)) for t, m in samples[:: max(1, len(samples) // 60)]],
                    "wall_s": round(samples[-1][0], 1) if samples else None,
                    "commits": len(r["commits"]),
                    "state": r["state"],
                    "spool_files_left": len(spool),
                },
                reason="RSS sampled every 0.2 s; spool files left: " + str(len(spool)),
            )
        )
    finally:
        stop_server(server)
    return figs
