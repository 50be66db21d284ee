"""Whether a tower captures CUDA graphs (one per warmed bucket), decided from the provider, the setting and where
onnxruntime placed the graph's nodes.

onnxruntime's CUDA provider captures a session's kernels into CUDA graphs with the provider option
`enable_cuda_graph`, and replays them, launching the whole model in one call, when the run option
`gpu_graph_id` names one already captured. One graph per id (several per session) since onnxruntime 1.18
(microsoft/onnxruntime#19636); ids from 1 (0 is its default, -1 skips capture). What a capture requires
(docs/execution-providers/CUDA-ExecutionProvider.md, "Using CUDA Graphs"):
- every compute node on the CUDA provider: session creation fails otherwise ("This session cannot use the CUDA
  Graph feature as requested by the user as all compute graph nodes have not been partitioned to the CUDA EP",
  core/session/inference_session.cc); only shape nodes may run on the CPU;
- inputs and outputs at the same device addresses and with the same shapes on every replay of an id: what
  device_io.DeviceIO gives, one pre-allocated input and output per bucket, updated in place;
- no control flow (If/Loop/Scan) in the graph; the CLIP towers have none.
None of this can run without a card: the selection below is what the CPU tests check.
"""

from __future__ import annotations

from moments_server.inference.policy import CUDA

# onnxruntime release that takes several graphs per session (gpu_graph_id); before it, one graph per session.
MIN_ORT = (1, 18)
GRAPH_ID_KEY = "gpu_graph_id"


def ort_version_tuple(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def cuda_graph_choice(
    setting: str, provider: str, ort_version: str, all_nodes_on_cuda: bool | None = None
) -> tuple[bool, str]:
    """(capture graphs, why). setting: auto | yes | no; all_nodes_on_cuda: None while unknown (a session with
    graphs asked for is then tried: onnxruntime refuses it when a node is on the CPU), False after that refusal."""
    if setting not in ("auto", "yes", "no"):
        raise ValueError(f"cuda_graphs must be auto, yes or no, not {setting!r}")
    if setting == "no":
        return False, "cuda_graphs is no"
    if provider != CUDA:
        return False, f"{provider} serves the towers: CUDA graphs are the CUDA provider's"
    if ort_version_tuple(ort_version) < MIN_ORT:
        return False, f"onnxruntime {ort_version} captures one graph per session; one per bucket needs 1.18"
    if all_nodes_on_cuda is False:
        return False, "not every node of the graph runs on the CUDA provider (onnxruntime refuses to capture it)"
    return True, "every node on the CUDA provider" if all_nodes_on_cuda else "to be confirmed by the session"


def graph_id(bucket_index: int) -> str:
    """The run option value of the bucket at `bucket_index` (0-based) in the warmed sizes: ids start at 1."""
    return str(bucket_index + 1)
