"""The CUDA paths' measurement (tests/bench/cuda_paths.py) rehearsed on the CPU at small sizes, so that the
figure a lent card runs cannot rot. No speed assertions: every part measured something."""

from __future__ import annotations

from pathlib import Path

from tests.bench.cuda_paths import measure
from tests.bench.gpu import path_figures


def test_cuda_paths_rehearsal(shapes_model_dir: Path) -> None:
    result = measure(shapes_model_dir, "cpu", seconds=0.3, batch=4)
    towers, ingest = result["towers"], result["ingest"]
    assert towers["provider"] == "CPUExecutionProvider" and towers["batch"] == 4
    assert towers["old_path_frames_per_s"] > 0 and towers["device_io_frames_per_s"] > 0
    assert towers["cuda_graphs"].startswith("skipped")  # the CPU has none
    assert ingest["policy"]["provider"] == "CPUExecutionProvider" and not ingest["cuda_graphs"]
    assert ingest["ingest_alone"]["frames_per_s"] > 0 and ingest["ingest_with_search"]["frames_per_s"] > 0
    assert ingest["search_alone"]["searches"] > 0 and ingest["ingest_with_search"]["searches"] > 0
    assert ingest["ingest_ratio"] is not None and ingest["search_p99_ratio"] is not None
    figures = path_figures(result)
    assert [f.id for f in figures] == [
        "7.device_io",
        "7.cuda_graphs",
        "7.ingest_beside_search",
        "7.search_p99_beside_ingest",
    ]
    assert figures[2].baseline_value == ingest["ingest_alone"]["frames_per_s"]
