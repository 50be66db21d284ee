"""Device-resident I/O for one tower: per warmed bucket size, a host staging buffer, an input and an output
OrtValue on the session's device bound once with IO binding, and (with CUDA graphs) the bucket's graph id.

A batch of n items is written into the staging buffer of the smallest bucket that holds it (the rows after n are
zeros: the padding), copied to the device in one copy (OrtValue.update_inplace), run, and its output copied back
once. The device is a parameter: on 'cpu' the same path runs on the CPU provider, which is how it is tested
without a card (tests/server/test_device_io.py compares it with session.run bit for bit).

Pinned host memory: onnxruntime's Python bindings allocate OrtValues on 'cpu' or 'cuda' only
(onnxruntime_pybind_ortvalue.cc, ortvalue_from_shape_and_type); 1.32 adds a `memory_info` argument taking an
OrtEpDevice's HOST_ACCESSIBLE memory, which belongs to the plugin-EP API, not to the provider list these sessions
are made with. So the numpy staging buffer is pinned (page-locked) with cudaHostRegister from the CUDA runtime
that onnxruntime-gpu loaded: host -> device copies from it are DMA, without the driver's staging through a
pageable bounce buffer. Where that fails the buffer stays pageable (correct, slower) and the reason is logged.

Not measured yet (no card in the session that wrote this): update_inplace copies with a synchronous cudaMemcpy
on the default stream (onnxruntime_pybind_ortvalue.cc, CpuToCudaMemCpy). Unless onnxruntime-gpu is built with a
per-thread default stream, that copy is ordered after the work queued on the sessions' blocking streams, so one
tower's upload may wait for the other tower's running batch; tests/bench/cuda_paths.py measures the ingest and
search figures this would show in.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Sequence

import numpy as np
import onnxruntime as ort

from moments_server.inference.cuda_graphs import GRAPH_ID_KEY, graph_id

log = logging.getLogger(__name__)

_ORT_TYPES = {
    "tensor(uint8)": np.uint8,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
}
_CUDART = ("libcudart.so.13", "libcudart.so.12", "libcudart.so")
_cudart: ctypes.CDLL | None = None
_pin_failure: str | None = None


def numpy_type(ort_type: str) -> type:
    try:
        return _ORT_TYPES[ort_type]
    except KeyError:
        raise ValueError(f"no device I/O for {ort_type} tensors") from None


def pin_host(array: np.ndarray) -> bool:
    """Page-lock `array`'s memory for the CUDA device (cudaHostRegister); False, logged once, where it cannot."""
    global _cudart, _pin_failure
    if _pin_failure is not None:
        return False
    if _cudart is None:
        for name in _CUDART:  # the one onnxruntime-gpu (or torch) already loaded is found by its soname
            try:
                _cudart = ctypes.CDLL(name)
                break
            except OSError:
                continue
        else:
            _pin_failure = f"no CUDA runtime library ({', '.join(_CUDART)}) to pin staging buffers with"
            log.warning("staging buffers stay pageable: %s", _pin_failure)
            return False
    status = _cudart.cudaHostRegister(
        ctypes.c_void_p(array.ctypes.data), ctypes.c_size_t(array.nbytes), ctypes.c_uint(0)
    )
    if status != 0:
        _pin_failure = f"cudaHostRegister returned error {status}"
        log.warning("staging buffers stay pageable: %s", _pin_failure)
        return False
    return True


class _Slot:
    """One bucket: staging buffer, device input and output, their binding and run options."""

    def __init__(
        self,
        session: ort.InferenceSession,
        names: tuple[str, str],
        size: int,
        item_shape: tuple[int, ...],
        types: tuple[type, type],
        out_dim: int,
        device: tuple[str, int],
        run_options: ort.RunOptions,
    ) -> None:
        self.size = size
        self.staging: np.ndarray = np.zeros((size, *item_shape), dtype=types[0])
        self.input = ort.OrtValue.ortvalue_from_shape_and_type([size, *item_shape], types[0], *device)
        self.output = ort.OrtValue.ortvalue_from_shape_and_type([size, out_dim], types[1], *device)
        self.binding = session.io_binding()
        self.binding.bind_ortvalue_input(names[0], self.input)
        self.binding.bind_ortvalue_output(names[1], self.output)
        self.run_options = run_options
        self.filled = 0  # rows holding the last batch: the rows after a smaller batch are zeroed again


class DeviceIO:
    def __init__(
        self,
        session: ort.InferenceSession,
        input_name: str,
        output_name: str,
        sizes: Sequence[int],
        item_shape: tuple[int, ...],
        out_dim: int,
        device: str = "cpu",
        device_id: int = 0,
        cuda_graphs: bool = False,
        lengths: Sequence[int] = (),
    ) -> None:
        """`lengths`: for items of one axis (token ids), the item lengths that get buffers of their own (a
        trimmed batch runs in the shortest that holds it, padded with 0); by default only item_shape's."""
        self.session = session
        self.device = device
        self.cuda_graphs = cuda_graphs
        inputs = {i.name: i for i in session.get_inputs()}
        outputs = {o.name: o for o in session.get_outputs()}
        types = (numpy_type(inputs[input_name].type), numpy_type(outputs[output_name].type))
        self.sizes = sorted(set(sizes))
        self.item_shape, self.input_type, self.out_dim = item_shape, types[0], out_dim
        full = item_shape[0] if len(item_shape) == 1 else 0
        if lengths and (not full or max(lengths) > full):
            raise ValueError(f"item lengths {list(lengths)} need one-axis items of at most {item_shape}")
        # one-axis items (token ids): the lengths with buffers of their own, the full one last; else none
        self.lengths: list[int] = sorted({*lengths, full}) if full else []
        self.pinned = False
        # ordered by size, then length: the first that holds a batch is its smallest bucket
        self._slots: list[_Slot] = []
        for size in self.sizes:
            for length in self.lengths or [0]:
                options = ort.RunOptions()
                if cuda_graphs:
                    options.add_run_config_entry(GRAPH_ID_KEY, graph_id(len(self._slots)))
                shape = (length,) if length else item_shape
                slot = _Slot(
                    session, (input_name, output_name), size, shape, types, out_dim, (device, device_id), options
                )
                if device == "cuda":
                    self.pinned = pin_host(slot.staging)
                self._slots.append(slot)

    @property
    def max_batch(self) -> int:
        return self.sizes[-1]

    def zeros(self, n: int, length: int | None = None) -> np.ndarray:
        """A batch of n all-zero items (warm-up), of `length` for one-axis items."""
        shape = (length,) if length is not None else self.item_shape
        return np.zeros((n, *shape), dtype=self.input_type)

    def bucket(self, n: int, length: int | None = None) -> int:
        """The bucket a batch of n items runs in; ValueError for more than the largest."""
        return self._slot(n, length).size

    def _slot(self, n: int, length: int | None = None) -> _Slot:
        for slot in self._slots:
            if slot.size >= n and (length is None or slot.staging.shape[1] >= length):
                return slot
        if length is not None and length > self.lengths[-1]:
            raise ValueError(f"items of {length} are longer than the longest buffer ({self.lengths[-1]})")
        raise ValueError(f"a batch of {n} is larger than the largest warmed bucket ({self.max_batch})")

    def run(self, items: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """(n, out_dim) float32 for n items (an array, or a list of arrays of the item shape)."""
        n = len(items)
        if n == 0:
            raise ValueError("an empty batch")
        if isinstance(items, np.ndarray):
            length = items.shape[1] if self.lengths else None
            slot = self._slot(n, length)
            if length is None or length == slot.staging.shape[1]:
                slot.staging[:n] = items
            else:  # a trimmed batch in a longer buffer: 0 is the padding id after the last token
                slot.staging[:n, :length] = items
                slot.staging[:n, length:] = 0
        else:
            slot = self._slot(n)
            for row, item in enumerate(items):  # into the staging buffer: no np.stack, no concatenation
                slot.staging[row] = item
        if slot.filled > n:
            slot.staging[n : slot.filled] = 0
        slot.filled = n
        slot.input.update_inplace(slot.staging)  # one host -> device copy
        self.session.run_with_iobinding(slot.binding, slot.run_options)
        # one device -> host copy; np.array copies again on the CPU device, where numpy() may share the buffer
        # that the next run of this bucket overwrites
        return np.array(slot.output.numpy()[:n], dtype=np.float32)
