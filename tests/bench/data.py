"""Benchmark data: synthetic clustered frame vectors written into embedded stores, and textured test videos.

Stores are written through the store's query language, one transaction per synthetic video (its Video,
one Clip and one Descriptor per 1 fps frame: exactly the server's data model, built with the server's own
query builders), and cached under `.cache/bench-stores/` (building 1M HNSW descriptors takes minutes on
2 cores); the build's insert rate is kept with the store. Videos are cached under `.cache/bench-videos/`.
"""

from __future__ import annotations

import functools
import json
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tests.bench.common import CACHE, log

STORE_RECIPE = "v3"  # v3: HNSW graphs rebuilt in shuffled order after the fill (vectors.Rebuild)
FRAMES_PER_VIDEO = 1000
N_TOPICS = 256
LATENT = 48  # intrinsic dimension of the synthetic embedding space
MEAN_WEIGHT = 0.8  # a shared direction, as CLIP's embeddings are anisotropic (random pairs at cos ~0.4)
ISO_NOISE = 0.15


# -- vectors -------------------------------------------------------------------------------------------
#
# CLIP-like clustered vectors: x = normalize(MEAN_WEIGHT * m + normalize(z @ P) + ISO_NOISE * n), where z
# is a latent of dimension LATENT: a topic (one of N_TOPICS) + the video's own offset + a drift along the
# video's timeline (neighbouring frames alike, as in a shot) + per-frame noise; P projects it to `dim`.


def _normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(n, 1e-12)


@functools.lru_cache(maxsize=4)
def _space(seed: int, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    g = np.random.default_rng([seed, 1_000_003])
    proj = g.standard_normal((LATENT, dim)).astype(np.float32)
    mean = _normalize(g.standard_normal(dim))
    tops = g.standard_normal((N_TOPICS, LATENT)).astype(np.float32)
    return proj, mean, tops


def _embed(seed: int, dim: int, z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    proj, mean, _ = _space(seed, dim)
    iso = _normalize(rng.standard_normal((len(z), dim)))
    return _normalize(MEAN_WEIGHT * mean + _normalize(z @ proj) + ISO_NOISE * iso)


def topics(seed: int, dim: int) -> np.ndarray:
    """The topic latents (kept for the callers' signatures; the space is cached per seed and dim)."""
    return _space(seed, dim)[2]


def video_vectors(seed: int, video: int, frames: int, dim: int, topic_centers: np.ndarray | None = None) -> np.ndarray:
    """Frames of one synthetic video: clustered around the video's centre, which sits near one topic."""
    tops = _space(seed, dim)[2]
    rng = np.random.default_rng([seed, video])
    centre = tops[int(rng.integers(len(tops)))] + 0.6 * rng.standard_normal(LATENT)
    drift = np.cumsum(rng.standard_normal((frames, LATENT)) * 0.08, axis=0)
    z = (centre + drift + 0.25 * rng.standard_normal((frames, LATENT))).astype(np.float32)
    return _embed(seed, dim, z, rng)


def query_vectors(seed: int, n: int, dim: int, n_videos: int) -> np.ndarray:
    """Queries from the data's distribution: half near one stored video's frame (image-like queries), half
    near a topic only (text-like queries, which sit farther from every frame)."""
    tops = _space(seed, dim)[2]
    rng = np.random.default_rng([seed, 7_777_777])
    out = []
    for i in range(n):
        if i % 2 == 0:
            v = int(rng.integers(n_videos))
            f = int(rng.integers(FRAMES_PER_VIDEO))
            base = video_vectors(seed, v, f + 1, dim)[f]
            out.append(base + 0.03 * rng.standard_normal(dim))
        else:
            z = tops[int(rng.integers(len(tops)))] + 0.6 * rng.standard_normal(LATENT)
            out.append(_embed(seed, dim, z[None, :].astype(np.float32), rng)[0])
    return _normalize(np.stack(out))


# -- stores --------------------------------------------------------------------------------------------


@dataclass
class StoreSpec:
    n_videos: int
    frames: int
    dim: int
    seed: int
    set_name: str
    identity: dict[str, Any]
    engine: str = "HNSW"

    @property
    def n(self) -> int:
        return self.n_videos * self.frames

    @property
    def key(self) -> str:
        fp = str(self.identity.get("fingerprint", ""))[:8]
        return f"{STORE_RECIPE}-{self.n}-{self.n_videos}x{self.frames}-d{self.dim}-s{self.seed}-{self.engine}-{fp}"


def video_id(v: int) -> str:
    return f"bench-{v:05d}"


def video_commands(spec: StoreSpec, v: int, vectors: np.ndarray) -> tuple[list[dict[str, Any]], list[bytes]]:
    """One synthetic video as the server writes it (Video, Clips, Descriptors), via the server's builders."""
    from moments_server.catalog import queries
    from moments_server.catalog.model import FrameRecord, VideoRecord

    frames = [FrameRecord(float(i), float(i), float(i + 1)) for i in range(len(vectors))]
    rec = VideoRecord(
        video_id=video_id(v),
        filename=f"{video_id(v)}.mp4",
        duration_s=float(len(vectors)),
        fps=30.0,
        width=1280,
        height=720,
        codec="h264",
        container="mp4",
        ingested_at="2026-01-01T00:00:00.000+00:00",
        frames=len(vectors),
        size_bytes=16,
        sha256="0" * 64,
        metadata={"camera": f"cam-{v % 10}"},
    )
    blobs = [np.ascontiguousarray(x, dtype="<f4").tobytes() for x in vectors]
    return queries.add_video(rec, b"synthetic video blob", frames, blobs, None, spec.set_name, replace=False)


def set_commands(spec: StoreSpec) -> list[dict[str, Any]]:
    from moments_server.catalog import queries

    props = {f"moments_{k}": v for k, v in spec.identity.items()}
    return queries.add_descriptor_set(spec.set_name, spec.dim, spec.engine, props)


def fill(
    query: Callable[[list[dict[str, Any]], list[bytes]], tuple[Any, list[bytes]]],
    spec: StoreSpec,
    videos: range,
    progress_every: int = 50,
) -> dict[str, float]:
    """Write `videos` through `query` (in-process engine or SDK); returns timing stats."""
    tc = topics(spec.seed, spec.dim)
    gen_s = 0.0
    started = time.perf_counter()
    for j, v in enumerate(videos):
        t = time.perf_counter()
        cmds, blobs = video_commands(spec, v, video_vectors(spec.seed, v, spec.frames, spec.dim, tc))
        gen_s += time.perf_counter() - t
        resp, _ = query(cmds, blobs)
        if not isinstance(resp, list):
            raise RuntimeError(f"store refused the synthetic video {v}: {str(resp)[:500]}")
        if progress_every and j and j % progress_every == 0:
            done = j * spec.frames
            log(f"  store fill: {done:,} descriptors, {done / (time.perf_counter() - started - gen_s):,.0f}/s")
    total = time.perf_counter() - started
    n = len(videos) * spec.frames
    return {
        "descriptors": n,
        "clips": n,
        "transactions": len(videos),
        "commands_per_transaction": 1 + 2 * spec.frames,
        "seconds": round(total, 3),
        "generate_s": round(gen_s, 3),
        "descriptors_per_s": round(n / max(total - gen_s, 1e-9), 1),
    }


def build_store(spec: StoreSpec, out: Path) -> dict[str, Any]:
    """Write the store for `spec` into the new directory `out` (timed) and let its index settle; build facts."""
    from moments_server.store.embedded import Engine

    engine = Engine(out)
    try:
        resp, _ = engine.query(set_commands(spec))
        if not isinstance(resp, list):
            raise RuntimeError(f"AddDescriptorSet failed: {resp}")
        stats = fill(engine.query, spec, range(spec.n_videos))
        t = time.perf_counter()
        engine.wait_indexed(rebuilds=True)  # the graph a store settles on once its writes stop
        stats["index_settle_s"] = round(time.perf_counter() - t, 3)
        t = time.perf_counter()
    finally:
        engine.close()
    stats["close_s"] = round(time.perf_counter() - t, 3)
    return {"spec": spec.__dict__ | {"n": spec.n, "key": spec.key}, "build": stats, "built_at": time.time()}


def cached_store(spec: StoreSpec) -> tuple[Path, dict[str, Any]]:
    """The store for `spec`, built on first use (timed) and reused after. Returns (data_dir, build facts)."""
    root = CACHE / "bench-stores"
    out = root / spec.key
    marker = out / "bench-store.json"
    if marker.is_file():
        facts = json.loads(marker.read_text())
        facts["reused"] = True
        return out, facts
    tmp = root / (spec.key + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    log(f"building the {spec.n:,}-descriptor store (cached after this run): {tmp}")
    facts = build_store(spec, tmp)
    (tmp / "bench-store.json").write_text(json.dumps(facts, indent=2))
    tmp.rename(out)
    facts["reused"] = False
    return out, facts


def copy_store(src: Path, dst: Path) -> Path:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    return dst


# -- videos ----------------------------------------------------------------------------------------------


VIDEO_RECIPE = "v2"  # bump when _textured_frames or the encoder options change


@dataclass(frozen=True)
class VideoSpec:
    width: int
    height: int
    seconds: int
    fps: int
    codec: str  # key of moments_client.sample_video.CODECS
    seed: int
    encoder_defaults: bool = False  # the encoder's own settings (x264: preset medium, keyint 250), not the recipe's

    @property
    def suffix(self) -> str:
        return {"h264": "mp4", "hevc": "mp4", "vp9": "webm", "mpeg4": "avi", "mjpeg": "avi"}[self.codec]

    @property
    def name(self) -> str:
        size = f"{self.width}x{self.height}"
        enc = "-encdefaults" if self.encoder_defaults else ""
        return f"{VIDEO_RECIPE}-{self.codec}{enc}-{size}-{self.fps}fps-{self.seconds}s-s{self.seed}.{self.suffix}"


def _textured_frames(spec: VideoSpec) -> Iterator[np.ndarray]:
    """Camera-like content: a panning, zooming textured scene, moving blobs, sensor noise, slow light change.

    Incompressible enough that the decoder does real work (static frames decode unrealistically fast).
    """
    rng = np.random.default_rng(spec.seed)
    h, w = spec.height, spec.width
    # a large smooth-plus-detailed texture to pan across
    big_h, big_w = h + 512, w + 1024
    coarse = rng.integers(0, 255, (big_h // 16 + 2, big_w // 16 + 2, 3), dtype=np.uint8)
    tex = np.repeat(np.repeat(coarse, 16, axis=0), 16, axis=1)[:big_h, :big_w].astype(np.int16)
    tex += rng.integers(-40, 40, (big_h, big_w, 3), dtype=np.int16)
    tex = np.clip(tex, 0, 255).astype(np.uint8)
    n = spec.seconds * spec.fps
    yy, xx = np.mgrid[0:h, 0:w]
    noise = rng.integers(-6, 7, (17, h, w, 1), dtype=np.int16)  # sensor noise: a pool cycled over the frames
    blobs = [
        (
            rng.uniform(0, w),
            rng.uniform(0, h),
            rng.uniform(-6, 6),
            rng.uniform(-4, 4),
            rng.uniform(30, 90),
            rng.integers(0, 255, 3),
        )
        for _ in range(4)
    ]
    for i in range(n):
        ox = int((i * 3) % 1024)
        oy = int(256 + 200 * np.sin(i / 90))
        frame = tex[oy : oy + h, ox : ox + w].copy()
        for bx, by, vx, vy, r, col in blobs:
            cx, cy = (bx + vx * i) % w, (by + vy * i) % h
            x0, x1, y0, y1 = int(max(cx - r, 0)), int(min(cx + r, w)), int(max(cy - r, 0)), int(min(cy + r, h))
            if x1 > x0 and y1 > y0:
                m = (xx[y0:y1, x0:x1] - cx) ** 2 + (yy[y0:y1, x0:x1] - cy) ** 2 < r * r
                frame[y0:y1, x0:x1][m] = col
        f16 = frame.astype(np.int16)
        f16 += noise[i % len(noise)]
        f16 += int(20 * np.sin(i / 120))
        np.clip(f16, 0, 255, out=f16)
        yield f16.astype(np.uint8)


def make_video(spec: VideoSpec, root: Path | None = None) -> Path:
    """The cached test video for `spec` (written on first use) in `root` (default `.cache/bench-videos`)."""
    import av

    from moments_client.sample_video import CODECS

    root = root or CACHE / "bench-videos"
    root.mkdir(parents=True, exist_ok=True)
    path = root / spec.name
    if path.is_file():
        return path
    tmp = root / ("tmp-" + spec.name)
    encoder, pix_fmt = CODECS[spec.codec]
    started = time.perf_counter()
    with av.open(str(tmp), mode="w") as container:
        stream = container.add_stream(encoder, rate=spec.fps)
        stream.width, stream.height, stream.pix_fmt = spec.width, spec.height, pix_fmt
        # keyframe every 2 s, as cameras and web video usually do
        opts = {"g": str(2 * spec.fps)}
        if encoder == "libx264":
            opts |= {"preset": "veryfast", "crf": "23"}
        elif encoder == "libx265":
            opts |= {"preset": "ultrafast", "crf": "26", "x265-params": "log-level=error"}
        elif encoder == "libvpx-vp9":
            opts |= {"deadline": "realtime", "cpu-used": "8", "crf": "32", "b": "0"}
        stream.options = {k: v for k, v in opts.items() if k == "x265-params"} if spec.encoder_defaults else opts
        for rgb in _textured_frames(spec):
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.rename(path)
    log(f"wrote {path.name} ({path.stat().st_size / 2**20:.1f} MiB) in {time.perf_counter() - started:.0f} s")
    return path
