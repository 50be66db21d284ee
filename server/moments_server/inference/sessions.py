"""onnxruntime sessions for the two towers: CUDA (fp16 files when recommended) when usable, else CPU."""

from __future__ import annotations

import ctypes
import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import onnxruntime as ort

from moments_server.inference.cuda_graphs import GRAPH_ID_KEY, cuda_graph_choice
from moments_server.inference.device_io import DeviceIO
from moments_server.inference.manifest import ModelManifest
from moments_server.inference.policy import CUDA
from moments_server.inference.priority import in_lowered_thread

log = logging.getLogger(__name__)


@functools.cache
def cuda_usable() -> bool:
    """True when onnxruntime has the CUDA provider AND a CUDA device answers (asked once per process: the
    policy and the towers' sessions are decided on the same answer).

    Asking onnxruntime-gpu for CUDA on a machine without a GPU logs errors, so the driver is asked first.
    """
    if CUDA not in ort.get_available_providers():
        return False
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    count = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return False
    return count.value > 0


@dataclass
class Tower:
    """One ONNX tower with its input/output names; `run`/`embed` are called from one worker thread at a time.

    Each tower is a session of its own, run from its own batcher thread (batcher.MicroBatcher), so on CUDA the two
    towers do not share a compute stream: onnxruntime's CUDA provider gives each run a stream of its own unless
    the session is handed one (`user_compute_stream`; core/providers/cuda/cuda_stream_handle.cc,
    RegisterCudaStreamHandles), and streams of different sessions are not ordered against each other. A text
    search therefore does not queue behind a running image batch on the card; it shares the card's SMs with it.
    """

    name: str
    session: ort.InferenceSession
    input_name: str
    output_name: str
    precision: str
    provider: str
    fused: bool = False
    cuda_graphs: bool = False
    # Device-resident I/O per warmed bucket (use_buckets; the CUDA policy pads batches to buckets).
    io: DeviceIO | None = None
    # A session like this one without CUDA graphs, for the fallback when a first capture fails (and, given
    # nice=..., for twin()).
    plain_session: Callable[..., ort.InferenceSession] | None = None
    cuda_graphs_setting: str = "auto"
    _run_options: ort.RunOptions | None = None  # run()'s on CUDA, built once

    @property
    def device(self) -> str:
        return "cuda" if self.provider == CUDA else "cpu"

    def twin(self, nice: int = 0) -> Tower:
        """The same graph in a session of its own whose threads run at `nice` (0: the creating thread's), for
        work that must not share this session's threads or queue (image queries beside ingest: policy.py).
        Served without buckets: the CPU's way (pad_to_buckets is the CUDA policy's)."""
        if self.plain_session is None:
            raise RuntimeError(f"the {self.name} tower cannot build another session of itself")
        return replace(self, session=self.plain_session(nice=nice), cuda_graphs=False, io=None, _run_options=None)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Any batch size, without the buckets' buffers (autotune's fallback, the benches, the tests)."""
        if self.provider == CUDA:
            # IO binding: the input is copied to the device once and the output comes back once,
            # without onnxruntime's per-call staging of numpy buffers.
            binding = self.session.io_binding()
            binding.bind_cpu_input(self.input_name, np.ascontiguousarray(batch))
            binding.bind_output(self.output_name, "cpu")
            if self._run_options is None:
                self._run_options = ort.RunOptions()
                if self.cuda_graphs:  # these buffers change every call: never capture them
                    self._run_options.add_run_config_entry(GRAPH_ID_KEY, "-1")
            self.session.run_with_iobinding(binding, self._run_options)
            out = binding.copy_outputs_to_cpu()[0]
        else:
            out = self.session.run([self.output_name], {self.input_name: batch})[0]
        return np.asarray(out, dtype=np.float32)

    def use_buckets(
        self, sizes: Sequence[int], item_shape: tuple[int, ...], out_dim: int, lengths: Sequence[int] = ()
    ) -> None:
        """Serve through device-resident buffers of these batch sizes (batches are padded up to one), and for
        token ids of these lengths too (a trimmed batch is padded up to one: DeviceIO)."""
        self.io = DeviceIO(
            self.session,
            self.input_name,
            self.output_name,
            sizes,
            item_shape,
            out_dim,
            device=self.device,
            cuda_graphs=self.cuda_graphs,
            lengths=lengths,
        )

    def embed(self, items: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """(n, dim) float32: through the buckets' buffers when set up, else one plain run."""
        if self.io is not None:
            return self.io.run(items)
        return self.run(items if isinstance(items, np.ndarray) else np.stack(items))

    def warm(self, n: int, runs: int = 3) -> None:
        """Run the bucket of n (each of its lengths) a few times: onnxruntime warms up, then captures the bucket's
        CUDA graph. A failed
        capture falls back to a session without graphs (logged), unless cuda_graphs was yes."""
        io = self.io
        if io is None:
            raise RuntimeError("warm() serves the buckets set up by use_buckets()")
        batches = [io.zeros(n, length) for length in io.lengths] or [io.zeros(n)]  # each length of token ids
        try:
            for zeros in batches:
                for _ in range(runs):
                    io.run(zeros)
        except Exception as e:
            if not self.cuda_graphs or self.plain_session is None:
                raise
            if self.cuda_graphs_setting == "yes":
                raise RuntimeError(f"{self.name} tower: CUDA graph capture failed ({e}); cuda_graphs is yes") from e
            log.warning("%s tower: CUDA graph capture failed at batch %d (%s); serving without graphs", self.name, n, e)
            self.session, self.cuda_graphs, self._run_options = self.plain_session(), False, None
            self.use_buckets(io.sizes, io.item_shape, io.out_dim, io.lengths)
            for zeros in batches:
                for _ in range(runs):
                    self.embed(zeros)


def optimization_level(path: Path) -> ort.GraphOptimizationLevel:
    """ORT_ENABLE_EXTENDED for fp16 graphs, ORT_ENABLE_ALL for the rest.

    onnxruntime 1.32's CPU provider segfaults while creating a session for the plain fp16 graphs at
    ORT_ENABLE_ALL: the NCHWc layout transformer that only that level adds crashes on them (measured: the
    session builds and runs with it in ``disabled_optimizers``, and at ORT_ENABLE_EXTENDED). What ORT_ENABLE_ALL
    adds over EXTENDED are layout transformations (NCHWc/NHWC) for the CPU provider's convolutions, which the
    CUDA provider (where fp16 is served) does not take by default; on the CPU (where the export verifies fp16
    graphs) the provider runs their fp16 nodes through inserted casts to fp32.
    """
    if ".fp16." in path.name:
        return ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    return ort.GraphOptimizationLevel.ORT_ENABLE_ALL


def _session(
    path: Path, providers: list[str], threads: int, spinning: bool, cuda_graphs: bool = False, nice: int = 0
) -> ort.InferenceSession:
    """A session as the server builds them; `nice` > 0 builds it in a thread of lower priority, which its
    intra-op threads inherit (priority.py)."""
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = optimization_level(path)
    options.log_severity_level = 3
    chosen: list[str | tuple[str, dict[str, str]]] = list(providers)
    if cuda_graphs:
        chosen[0] = (CUDA, {"enable_cuda_graph": "1"})
    return in_lowered_thread(nice, lambda: ort.InferenceSession(str(path), sess_options=options, providers=chosen))


def serving_provider(device: str) -> str:
    """The provider the towers are built for: device auto | cpu | cuda (cuda fails where none answers)."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, not {device!r}")
    if device == "cuda" and not cuda_usable():
        raise RuntimeError("--device cuda asked for, but onnxruntime has no usable CUDA device here")
    return CUDA if device == "cuda" or (device == "auto" and cuda_usable()) else "CPUExecutionProvider"


def load_towers(
    manifest: ModelManifest,
    device: str,
    threads: int,
    spinning: bool = False,
    fused_graphs: str = "auto",
    cuda_graphs: str = "auto",
    image_nice: int = 0,
) -> tuple[Tower, Tower]:
    """Build the text and image towers. device: auto | cpu | cuda; fused_graphs: auto (on CUDA) | yes | no;
    cuda_graphs: auto | yes | no (cuda_graphs.cuda_graph_choice); image_nice: how much lower the image
    tower's threads run than the text tower's (priority.py)."""
    use_cuda = serving_provider(device) == CUDA
    providers = [CUDA, "CPUExecutionProvider"] if use_cuda else ["CPUExecutionProvider"]
    precision = manifest.gpu_precision() if use_cuda else "fp32"
    # Fused attention graphs serve on CUDA (onnxruntime's fused kernels are what they are for). On the CPU they
    # measured no faster than the plain graphs (bench figure 8, ViT-B-32 on 2 cores: image 0.97x, text 0.98x),
    # so the CPU serves the plain ones; MOMENTS_FUSED_GRAPHS=yes|no overrides (config.fused_graphs).
    fused = use_cuda if fused_graphs == "auto" else fused_graphs == "yes"
    towers = []
    for tower, input_name in (("text", manifest.text_input), ("image", manifest.image_input)):
        path, served, fused_served = manifest.serving_graph(tower, precision, fused)
        nice = image_nice if tower == "image" else 0
        graphs, why = cuda_graph_choice(cuda_graphs, providers[0], ort.__version__)
        if cuda_graphs == "yes" and not graphs:
            raise RuntimeError(f"cuda_graphs is yes, but {why}")
        session = None
        if graphs:
            try:
                session = _session(path, providers, threads, spinning, cuda_graphs=True, nice=nice)
            except Exception as e:  # onnxruntime refuses graphs when a node is placed on the CPU
                graphs, why = cuda_graph_choice(cuda_graphs, providers[0], ort.__version__, all_nodes_on_cuda=False)
                if cuda_graphs == "yes":
                    raise RuntimeError(f"cuda_graphs is yes, but {why}: {e}") from e
                log.warning("%s tower: no CUDA graphs, %s (%s)", tower, why, e)
        if session is None:
            session = _session(path, providers, threads, spinning, nice=nice)
        provider = session.get_providers()[0]
        towers.append(
            Tower(
                tower,
                session,
                input_name,
                manifest.output,
                served,
                provider,
                fused_served,
                cuda_graphs=graphs,
                plain_session=partial(_session, path, providers, threads, spinning, nice=nice),
                cuda_graphs_setting=cuda_graphs,
            )
        )
        log.info(
            "loaded %s tower %s (%s, %s) on %s; CUDA graphs %s (%s)",
            tower,
            path.name,
            served,
            "fused" if fused_served else "unfused",
            provider,
            "on" if graphs else "off",
            why,
        )
    return towers[0], towers[1]
