"""Property-based fuzzing (hypothesis) against the real server parts.

Budgets: `make test` runs each target with its small quick budget, derandomized (the same inputs every
run); `make fuzz` sets MOMENTS_FUZZ_SCALE (1 = the full budget, >= 10,000 inputs over all targets; 0.1 = a
tenth) and draws fresh random inputs. Every input's outcome (a status code, or answered/closed for the
wire listener) is counted per target and printed at the end of the run; MOMENTS_FUZZ_REPORT=path also
writes the counts as JSON.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, settings

from moments.v1 import moments_pb2 as pb
from moments.v1 import moments_pb2_grpc as pb_grpc
from moments_client.sample_video import write_shapes_video
from tests.live import LiveServer, StoreListener
from tests.server.conftest import ingest

SCALE = float(os.environ.get("MOMENTS_FUZZ_SCALE", "0") or 0)
OUTCOMES: dict[str, Counter[str]] = defaultdict(Counter)
# Statuses that say the server failed rather than the input: never acceptable for any input.
NOT_PRECISE = {
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
}
MAX_UPLOAD = 4_000_000
METADATA = {"camera": "north", "floor": 2.0, "outdoor": True}


def budget(quick: int, fuzz: int) -> settings:
    """Hypothesis settings for one target: `quick` examples in `make test`, `fuzz` × scale in `make fuzz`."""
    common = dict(
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )
    if SCALE > 0:
        return settings(max_examples=max(1, round(fuzz * SCALE)), **common)  # type: ignore[arg-type]
    return settings(max_examples=quick, derandomize=True, database=None, **common)  # type: ignore[arg-type]


def record(target: str, outcome: str) -> None:
    OUTCOMES[target][outcome] += 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not OUTCOMES:
        return
    total = sum(sum(c.values()) for c in OUTCOMES.values())
    terminalreporter.section(f"fuzz outcomes ({total} inputs)")
    for target, counts in sorted(OUTCOMES.items()):
        terminalreporter.write_line(f"{target}: {sum(counts.values())} inputs: {dict(counts.most_common())}")
    out = os.environ.get("MOMENTS_FUZZ_REPORT")
    if out:
        Path(out).write_text(json.dumps({"total": total, "targets": OUTCOMES}, indent=2) + "\n")


@pytest.fixture(scope="session")
def fuzz_server(shapes_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A live server (embedded store) with one video carrying string, number and boolean metadata."""
    work = tmp_path_factory.mktemp("fuzz-server")
    server = LiveServer(
        shapes_model_dir,
        f"embedded:{work / 'data'}",
        work,
        "--max-upload-bytes",
        str(MAX_UPLOAD),
        "--no-autotune-batches",
        "--log-level",
        "WARNING",
    )
    try:
        with grpc.insecure_channel(server.target) as ch:
            video = work / "seed.mp4"
            write_shapes_video(video, [("red", "circle"), ("blue", "square")], seconds_each=1.0, size=(64, 64))
            events = ingest(pb_grpc.VideoSearchStub(ch), video, "seed", metadata=METADATA)
            assert events[-1].WhichOneof("event") == "done"
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def fuzz_stub(fuzz_server: LiveServer) -> Iterator[pb_grpc.VideoSearchStub]:
    with grpc.insecure_channel(fuzz_server.target, options=[("grpc.max_send_message_length", 64 << 20)]) as ch:
        yield pb_grpc.VideoSearchStub(ch)


def assert_serving(stub: pb_grpc.VideoSearchStub) -> None:
    """The server still answers a plain call after whatever the last input did."""
    assert stub.Info(pb.InfoRequest(), timeout=30).model.dimensions > 0


@pytest.fixture(scope="session")
def wire_listener(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreListener]:
    work = tmp_path_factory.mktemp("fuzz-wire")
    listener = StoreListener(work / "adb", work)
    try:
        yield listener
    finally:
        listener.stop()
