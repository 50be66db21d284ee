"""Several targets in one client (`host1:port1,host2:port2`): calls are balanced round-robin over the servers."""

from __future__ import annotations

from pathlib import Path

import pytest

from moments_client import Client
from moments_client._common import balanced_target
from moments_client.sample_video import write_shapes_video
from tests.live import LiveServer


def test_calls_are_spread_over_every_target(shapes_model_dir: Path, tmp_path: Path) -> None:
    for d in ("a-run", "b-run"):
        (tmp_path / d).mkdir()
    a = LiveServer(shapes_model_dir, f"embedded:{tmp_path / 'a'}", tmp_path / "a-run")
    b = LiveServer(shapes_model_dir, f"embedded:{tmp_path / 'b'}", tmp_path / "b-run")
    try:
        video = tmp_path / "v.mp4"
        write_shapes_video(video, [("red", "circle")], seconds_each=2.0, fps=10)
        with Client(a.target) as only_a:
            only_a.ingest(video, "only-on-a")
        # separate stores on purpose: which server answered shows in what it lists
        with Client(f"{a.target},localhost:{b.target.rsplit(':', 1)[1]}") as both:
            seen = [len(both.list_videos_page(page_size=10).videos) for _ in range(12)]
        assert set(seen) == {0, 1}, seen
        assert 4 <= seen.count(1) <= 8, seen  # round-robin, not one server with the odd failover
    finally:
        a.stop()
        b.stop()


def test_target_lists_are_checked() -> None:
    assert balanced_target("127.0.0.1:1") == ("127.0.0.1:1", [])
    target, options = balanced_target("127.0.0.1:1,localhost:2")
    assert target.startswith(("ipv4:127.0.0.1:1,", "ipv6:")) and ("grpc.lb_policy_name", "round_robin") in options
    with pytest.raises(ValueError, match="not host:port"):
        balanced_target("127.0.0.1:1,nope")
