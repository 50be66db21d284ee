"""All server settings in one place: command-line flags over `MOMENTS_*` environment variables over defaults.

A field `max_upload_bytes` is the flag `--max-upload-bytes` and the variable MOMENTS_MAX_UPLOAD_BYTES; a boolean
`autotune_batches` is `--autotune-batches` / `--no-autotune-batches`; a nested one, `engine.omp_threads`, is
`--engine.omp-threads` and MOMENTS_ENGINE__OMP_THREADS. The command line is pydantic-settings' own
(parse_settings); `python -m moments_server --help` lists every flag.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from moments_server.store import defaults as store_defaults

# An UPLOAD's final query through a remote store: room for the frames beside the video, and protobuf's bound.
FRAMES_ROOM_BYTES = 64 * 1024**2
PROTOBUF_MAX_BYTES = 2**31 - 1


class EngineSettings(BaseModel):
    """The embedded store's engine (store/embedded/engine.py), in the process that owns the store and in each
    worker's read replica."""

    model_config = ConfigDict(extra="forbid")

    # The defaults, and why they are what they are: store/defaults.py.
    omp_threads: int = Field(
        default=store_defaults.OMP_THREADS, description="FAISS threads per search; 0 = OpenMP's default (all cores)"
    )
    deferred_index: bool = Field(
        default=store_defaults.DEFERRED_INDEX,
        description="HNSW sets insert new vectors into their graph in the background",
    )
    read_cache_rows: int = Field(
        default=store_defaults.READ_CACHE_ROWS, description="object rows the engine's read cache keeps; 0 = off"
    )

    @field_validator("omp_threads", "read_cache_rows")
    @classmethod
    def _not_negative(cls, v: int) -> int:
        if v < 0:
            raise ValueError("must be >= 0")
        return v


class Settings(BaseSettings):
    """Moments video search server."""

    model_config = SettingsConfigDict(
        env_prefix="MOMENTS_",
        env_nested_delimiter="__",
        extra="forbid",
        cli_prog_name="moments-server",
        cli_kebab_case=True,
        cli_implicit_flags=True,
    )

    listen: str = "127.0.0.1:50051"
    metrics_listen: str = Field("127.0.0.1:9464", description="host:port for Prometheus; port 0 disables it")
    model_dir: Path = Path("models/shapes-demo")
    store: str = Field("embedded:./data", description="embedded:DIR or aperturedb://user:pass@host:port[?ssl=0|1]")
    # Where ingest spools uploads; defaults to the system temp dir.
    spool_dir: Path | None = None
    # Engine of the descriptor set when the server creates it: Flat is exact (about 10 ms a query at 100k
    # frames on 2 cores); HNSW is approximate and the choice for millions of frames.
    descriptor_engine: str = "Flat"
    # Server processes sharing the listening port (workers.py): each has its own onnxruntime sessions and
    # gRPC server; the embedded store has one owner (the launching process) and a read replica in each
    # worker. 0 = one per two cores (see workers.auto_workers).
    workers: int = Field(1, description="server processes sharing the port; 0 = one per two cores")
    # Set by the launcher for its workers: the embedded store DIR is followed as a read replica and
    # writes go to this ApertureDB URL (the owner's wire listener on loopback).
    store_writer: str = ""
    # Set by the launcher: this process is worker N of several sharing the port (-1: it serves alone).
    worker_index: int = -1
    # Also serve the embedded store over ApertureDB's wire protocol on host:port (empty = off). Its user: the
    # one given here, else the store dir's wire_users.json (made at first start, the password printed once);
    # personal tokens (adbp_...) from wire_tokens.json (python -m moments_server.store.embedded --new-token).
    store_listen: str = ""
    store_listen_user: str = ""
    store_listen_password: str = ""
    # The listener's connections at once, and how long a connection not yet authenticated may take for each
    # frame (store/defaults.py).
    store_listen_max_connections: int = Field(
        store_defaults.WIRE_MAX_CONNECTIONS, description="--store-listen's connections at once"
    )
    store_listen_pre_auth_timeout_s: float = Field(
        store_defaults.WIRE_PRE_AUTH_TIMEOUT_S,
        description="seconds --store-listen waits for each frame of a connection not yet authenticated",
    )
    # The embedded engine's options (--engine.omp-threads, MOMENTS_ENGINE__OMP_THREADS, ...).
    engine: EngineSettings = Field(default_factory=EngineSettings)
    # SDK connections to an aperturedb:// store (each worker's to its owner too); adb_full_import runs the
    # aperturedb package's __init__ as well (its PyPI version check and log handlers; store/aperturedb_sdk.py).
    store_pool_size: int = Field(store_defaults.SDK_POOL_SIZE, description="SDK connections to an aperturedb:// store")
    adb_full_import: bool = Field(False, description="import the aperturedb package's __init__ (a PyPI check)")
    # Health follows a remote store (store/watch.py): GetStatus every store_probe_every_s, NOT_SERVING when it
    # does not answer within store_probe_timeout_s.
    store_probe_every_s: float = Field(1.0, description="seconds between health probes of a remote store")
    store_probe_timeout_s: float = Field(10.0, description="seconds a remote store has to answer a probe")
    worker_restart_backoff_s: float = Field(2.0, description="seconds before a worker that died starts again")
    # TLS for the gRPC listener (PEM files). With a client CA, callers must present a certificate it
    # signed (mTLS). Without TLS the server listens on loopback only, unless allow_insecure (say, behind a
    # proxy that terminates TLS).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    allow_insecure: bool = False
    # With a token set, every VideoSearch call must carry `authorization: Bearer <token>`.
    auth_token: str = ""
    # The server processes' event loop. Under 64 search clients (shapes-demo, 2 cores, 5 alternating pairs of
    # runs) uvloop took less server CPU per search than asyncio's own loop in every pair, 5-14 % (0.444-0.592
    # vs 0.476-0.653 ms), and served more QPS: the loop's work per gRPC call and per wake-up is in C.
    event_loop: Literal["uvloop", "asyncio"] = Field("uvloop", description="the server's event loop")
    log_level: str = "INFO"
    log_json: bool = False

    # Inference
    device: str = Field("auto", description="auto | cpu | cuda")
    intra_op_threads: int = Field(0, description="onnxruntime threads per session; 0 = all cores")
    # onnxruntime's worker threads spin between ops by default; with both towers, the decoder and the event
    # loop sharing a few cores, spinning threads take the CPU the others need.
    ort_spinning: bool = False
    # Fused attention graphs (when the export wrote them): auto serves them on CUDA only, where their kernels
    # pay; on the CPU they measured no faster (bench figure 8). yes | no forces the choice.
    fused_graphs: Literal["auto", "yes", "no"] = "auto"
    # CUDA graphs, one per warmed bucket (inference/cuda_graphs.py): auto captures them on CUDA when every node of
    # a tower's graph runs on the CUDA provider, and falls back to plain runs (logged) where a session or its
    # first capture fails; yes makes that failure (or serving on the CPU) an error at start; no never captures.
    cuda_graphs: Literal["auto", "yes", "no"] = "auto"
    # Batch caps per tower; None = the provider's default (inference/policy.py: 32/32 on the CPU, 512 text and
    # 256 image on CUDA). Autotune picks the best bucket up to the cap; Info reports what it chose.
    text_max_batch: int | None = Field(None, description="text tower's batch cap; default: the provider's")
    image_max_batch: int | None = Field(None, description="image tower's batch cap; default: the provider's")
    # How long a batch waits for company after its first request. Requests that arrive while the tower is busy
    # batch anyway; on a CPU a longer wait only adds latency to a lone query.
    max_delay_ms: float = 0.5
    # Time each batch size at start and cap each tower's batch at its best throughput (max_batch is the bound).
    autotune_batches: bool = True
    max_queue: int = 4096
    text_cache_size: int = 4096

    # Serving defaults: a search's top_k when the request leaves it 0; how many frames a merging or grouping
    # search fetches per moment it returns (it goes deeper, doubling, while the page is not exact); ListVideos'
    # page size when the request leaves it 0, and its bound; how often ingest reports progress; gRPC keepalive
    # (a dead link fails a stalled stream in keepalive_time + keepalive_timeout instead of hanging).
    default_top_k: int = 10
    search_overfetch: int = 4
    default_page_size: int = 100
    max_page_size: int = 1000
    progress_every_s: float = 0.25
    keepalive_time_ms: int = 30_000
    keepalive_timeout_ms: int = 10_000
    min_ping_interval_ms: int = 10_000
    # While searches are pending or recent (recent_search_s), the image tower's ingest batches hold at most
    # ingest_batch_while_searching frames and wait up to ingest_defer_s for the text tower's searches. None =
    # the provider's default (inference/policy.py): on the CPU, where the towers share the cores, 2 frames and
    # 0.5 s; on CUDA 64 frames and no waiting (waiting starved ingest on the card).
    ingest_batch_while_searching: int | None = Field(
        None, description="ingest frames per batch while searches are about; default: the provider's"
    )
    recent_search_s: float = 2.0
    # How much lower (a nice increment, 0-19) ingest work runs than searches: the image tower's threads and the
    # upload decoders, so that a query gets the cores first while an ingest batch runs (inference/priority.py).
    # None = the provider's default: 10 on the CPU, 0 on CUDA.
    ingest_nice: int | None = Field(None, description="nice increment of ingest's threads (0-19)")
    ingest_defer_s: float | None = Field(
        None, description="seconds ingest waits for pending searches (0 = never); default: the provider's"
    )
    # Image queries through an image-tower session of their own at normal priority (inference/policy.py): on
    # the CPU they neither queue behind nor run at the priority of ingest batches, for a second copy of the
    # image tower's weights in memory. None = the provider's default: yes on the CPU, no on CUDA.
    image_search_session: bool | None = Field(
        None, description="a second image-tower session for image queries; default: the provider's"
    )

    # Limits
    max_top_k: int = 100
    max_filter_video_ids: int = 1000
    max_filter_conditions: int = 32
    max_page_depth: int = 1000
    max_upload_bytes: int = 2 * 1024**3
    max_message_bytes: int = 8 * 1024**2
    # Every response is sized to this (a client's default receive limit is 4 MiB): Search and ListVideos pages
    # are trimmed to fit (next_page_token goes on from the first moment left out), a lone video is refused.
    max_response_bytes: int = Field(4 * 1024**2 - 64 * 1024, description="largest response the server sends")
    # Caller metadata per video; it is copied onto every frame, so it is bounded (checked at the header).
    max_metadata_keys: int = 64
    max_metadata_key_chars: int = Field(64, description="1..64")
    max_metadata_value_bytes: int = 4096
    max_metadata_bytes: int = 16 * 1024
    # Query images: encoded bytes and decoded pixels (checked from the header, before decoding).
    max_image_bytes: int = 8 * 1024**2
    max_image_pixels: int = 50_000_000
    max_query_chars: int = 1000
    # Composed searches: weighted parts, any_texts and negative_texts together (each one kNN or embedding).
    max_query_parts: int = 16
    # Videos: width x height and duration, checked when the upload is probed, before decoding.
    max_video_pixels: int = 4096 * 4096
    max_video_duration_s: float = 6 * 3600.0
    # Frames are scaled to the model's size by their shorter side: a 2 x 4,000,000 video would scale to gigabytes.
    max_video_aspect: int = Field(8, description="longest side over shortest, at most")
    max_fps: float = 30.0
    max_frames: int = 36_000
    max_embed_items: int = 256
    max_concurrent_ingests: int = 8
    # The retry pushback (gRPC's grpc-retry-pushback-ms trailer) on RESOURCE_EXHAUSTED for a full queue or
    # ingest slots, and on UNAVAILABLE: how long a caller waits before it tries again.
    retry_after_ms: int = 250
    # UPLOAD: the windows of a header that leaves SamplingOptions.windows unset: "shots" (shot-aware: shots
    # are detected while decoding, video/shots.py) or "fixed" (1/fps each). Measured (tests/bench/shots.py):
    # mean temporal IoU of merged moments 1.0 against 0.72 for fixed windows on generated videos with cuts
    # off whole seconds; detection adds about 4 ms CPU per video-second of 360p h264 (a third of the skip
    # decode's 13 ms).
    default_windows: Literal["shots", "fixed"] = "shots"
    # Shot detection: shot_detect_fps > 0 makes the skip decode also decode the first frame of each
    # 1/shot_detect_fps window (a shot after the last kept frame of a GOP is otherwise seen only from the
    # next decoded frame on); 4 doubles the decode's CPU on 360p h264 (13 -> 28 ms per video-second), so it
    # is off by default. shot_threshold: the content detector's cut threshold (PySceneDetect's
    # ContentDetector, weighted mean HSV difference between frames, 0-255; its default 27).
    shot_detect_fps: float = 0.0
    shot_threshold: float = 27.0
    # A cut closer than shot_min_s to the previous one (or to the start) is not one (flashes, strobes); the
    # detector compares frames scaled to shot_width pixels across (its CPU is about proportional to the pixels).
    shot_min_s: float = Field(0.5, description="seconds a shot lasts at least")
    shot_width: int = Field(96, description="pixels across of the frames the shot detector compares")
    # A cut the content detector reports stands only if the colours changed too (video/shots.py): the
    # Bhattacharyya distance of the hue-saturation histograms, 0 (same) to 1; 0 turns the check off.
    shot_color_change: float = Field(0.3, description="colour change a shot cut needs, 0-1; 0 = off")
    # LIVE ingest: seconds of video per committed segment (a header may ask for another within the bounds).
    live_segment_s: float = 4.0
    live_segment_min_s: float = 0.5
    live_segment_max_s: float = 60.0
    # LIVE and FRAMES: an interrupted stream idle this long can no longer be resumed; the server's
    # housekeeping (every upload_ttl_s / 4, at most a minute apart) drops its resume state.
    upload_ttl_s: float = Field(24 * 3600.0, description="seconds an idle interrupted stream stays resumable")
    # The largest query message an aperturedb:// store takes (ApertureDB's C++ server default: 256 MiB): an
    # UPLOAD's video is one blob of its final query (see max_stored_video_bytes).
    store_message_bytes: int = 256 * 1024**2
    # PULL ingest (IngestHeader.source_url): consecutive failed tries to (re)connect before a pull gives up
    # (the count restarts once the source delivers again), the first wait between tries (doubling up to
    # pull_backoff_max_s), and the network timeout of each connect and read.
    pull_retries: int = 5
    pull_backoff_s: float = 0.5
    pull_backoff_max_s: float = 8.0
    pull_timeout_s: float = 10.0
    # An Ingest request stream that ends without IngestEnd (a sender that predates it) is taken as complete only
    # if no cancellation arrives within this time: grpc.aio ends a request stream alike on the sender's close
    # and on a cancelled call, and cancels the handler a moment later (transport/servicer.py). Measured:
    # without it, 1 in 8 runs of test_frames' dropped-stream test had a broken stream's held frame committed.
    ingest_end_settle_s: float = Field(
        0.05, ge=0, description="seconds a stream without IngestEnd waits before it is complete"
    )
    store_threads: int = 8
    grace_s: float = 10.0

    @field_validator("workers")
    @classmethod
    def _not_negative(cls, v: int) -> int:
        if v < 0:
            raise ValueError("must be >= 0 (0 = one per two cores)")
        return v

    @field_validator("text_max_batch", "image_max_batch", "ingest_batch_while_searching")
    @classmethod
    def _positive_or_default(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError("must be > 0 (leave it unset for the provider's default)")
        return v

    @field_validator("ingest_nice")
    @classmethod
    def _nice(cls, v: int | None) -> int | None:
        if v is not None and not 0 <= v <= 19:
            raise ValueError("must be between 0 and 19 (a nice increment; unset = the provider's default)")
        return v

    @field_validator("ingest_defer_s")
    @classmethod
    def _defer(cls, v: float | None) -> float | None:
        if v is not None and v < 0:
            raise ValueError("must be >= 0 (0 = ingest never waits; unset = the provider's default)")
        return v

    @field_validator(
        "max_top_k",
        "max_queue",
        "store_threads",
        "max_response_bytes",
        "max_metadata_keys",
        "max_metadata_value_bytes",
        "max_metadata_bytes",
        "max_image_bytes",
        "max_image_pixels",
        "max_query_chars",
        "max_query_parts",
        "max_video_pixels",
        "max_video_aspect",
        "retry_after_ms",
        "max_video_duration_s",
        "upload_ttl_s",
        "store_message_bytes",
        "pull_backoff_s",
        "pull_backoff_max_s",
        "pull_timeout_s",
        "shot_threshold",
        "shot_min_s",
        "shot_width",
        "store_listen_max_connections",
        "store_listen_pre_auth_timeout_s",
        "store_pool_size",
        "store_probe_every_s",
        "store_probe_timeout_s",
    )
    @classmethod
    def _positive(cls, v: float) -> float:
        if not v > 0:
            raise ValueError("must be > 0")
        return v

    @field_validator("max_metadata_key_chars")
    @classmethod
    def _key_chars(cls, v: int) -> int:
        if not 1 <= v <= 64:
            raise ValueError("must be between 1 and 64 (the store's key pattern)")
        return v

    @field_validator("shot_color_change")
    @classmethod
    def _distance(cls, v: float) -> float:
        if not 0.0 <= v <= 1.0:
            raise ValueError("must be between 0 and 1 (a Bhattacharyya distance)")
        return v

    @property
    def max_stored_video_bytes(self) -> int:
        """The largest UPLOAD the store takes (Limits.max_stored_video_bytes). The in-process embedded store
        copies the video from the spool file: max_upload_bytes. A remote store gets it in its final query's
        one message, which also carries the frames' vectors and thumbnails (up to 64 MiB are left for them):
        aperturedb:// takes store_message_bytes; the workers of a multi-process server write through their
        owner's wire listener, which takes max_upload_bytes + 64 MiB, but no protobuf message is 2 GiB."""
        if self.store.startswith("aperturedb://"):
            message = self.store_message_bytes
        elif self.store_writer:
            message = min(self.max_upload_bytes + FRAMES_ROOM_BYTES, PROTOBUF_MAX_BYTES)
        else:
            return self.max_upload_bytes
        return max(0, min(self.max_upload_bytes, message - min(FRAMES_ROOM_BYTES, message // 4)))

    @property
    def threads(self) -> int:
        return self.intra_op_threads or (os.cpu_count() or 1)


class SettingsError(ValueError):
    """A setting's value is refused: the message names its flag and variable, what is wrong, and the value."""


def _refusal(err: Any) -> str:
    path = [str(p) for p in err["loc"]]
    flag = "--" + ".".join(p.replace("_", "-") for p in path)
    env = "MOMENTS_" + "__".join(p.upper() for p in path)
    what = str(err["msg"]).removeprefix("Value error, ")
    return f"{flag} ({env}): {what}, not {err['input']!r}"


def parse_settings(argv: list[str] | None = None) -> Settings:
    """Settings from the command line (argv, else sys.argv[1:]) over MOMENTS_* environment variables over
    defaults. An unknown flag, or --help, exits (2, 0) as argparse does; when a flag is given twice the last
    one wins (the launcher appends its workers' flags after the user's). A value a setting refuses raises
    SettingsError naming each such setting (the server prints it and exits 2, without a traceback)."""
    args = sys.argv[1:] if argv is None else argv
    try:
        # BaseSettings.__init__ takes the _cli_* options; mypy sees only the fields (pydantic's dataclass_transform)
        return Settings(_cli_parse_args=args)  # type: ignore[call-arg]
    except ValidationError as e:
        raise SettingsError("; ".join(_refusal(err) for err in e.errors())) from None
