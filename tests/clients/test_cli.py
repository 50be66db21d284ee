"""The `moments` CLI as a user runs it (a subprocess) against a live server with the shapes-demo model."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from moments_shapes import draw
from tests.clients.conftest import CliResult, Library, Videos, run_cli
from tests.live import LiveServer, free_port


def test_ingest_folder_in_parallel(library: Library) -> None:
    out = library.ingest.stdout
    assert "ingest summary" in out
    for vid in ("clip-north", "clip-south", "clip-east"):
        assert vid in out
    assert "notes" not in out  # not a video: the folder walk skips it
    assert "3 ingested, 0 failed" in out


def test_videos_ls_shows_the_folder_with_its_metadata(library: Library) -> None:
    table = run_cli("videos", "ls", target=library.target)
    assert table.returncode == 0, table.output
    assert "clip-north" in table.stdout and "site=lab" in table.stdout
    listed = run_cli("videos", "ls", "--json", target=library.target)
    videos = {v["video_id"]: v for v in json.loads(listed.stdout)}
    assert {"clip-north", "clip-south", "clip-east"} <= set(videos)
    north = videos["clip-north"]
    assert north["metadata"] == {"floor": 1.0, "site": "lab"}
    assert north["filename"] == "clip-north.mp4"
    assert abs(north["duration_s"] - 4.0) < 0.5


def _in(segment_start: float, segment_end: float, second: float) -> bool:
    return segment_start - 0.01 <= second < segment_end + 0.01


def test_search_json_finds_the_right_seconds(library: Library) -> None:
    v = library.videos
    result = run_cli(
        "search",
        "a red circle",
        "--top-k",
        "2",
        "--group",
        "--video",
        "clip-north",
        "--video",
        "clip-south",
        "--video",
        "clip-east",
        "--json",
        target=library.target,
    )
    assert result.returncode == 0, result.output
    moments = json.loads(result.stdout)["moments"]
    assert {m["video_id"] for m in moments} == {"clip-north", "clip-south"}, moments
    for m in moments:
        red = v.segment(m["video_id"], "a red circle")
        assert _in(red.start_s, red.end_s, m["best_frame_s"]), (m, red)
        assert m["metadata"]["site"] == "lab"
        assert 0.0 < m["score"] <= 1.0


def test_search_merge_spans_the_whole_shape(library: Library) -> None:
    result = run_cli(
        "search", "a blue square", "--video", "clip-east", "--merge", "--top-k", "1", "--json", target=library.target
    )
    assert result.returncode == 0, result.output
    (moment,) = json.loads(result.stdout)["moments"]
    blue = library.videos.segment("clip-east", "a blue square")
    # the best frame shows the blue square, inside the merged window of adjacent frames (1 s each at 1 fps)
    assert _in(blue.start_s, blue.end_s, moment["best_frame_s"]), moment
    assert moment["start_s"] <= moment["best_frame_s"] < moment["end_s"] and moment["end_s"] - moment["start_s"] >= 2


def test_search_table(library: Library) -> None:
    result = run_cli("search", "a green triangle", "--top-k", "3", target=library.target)
    assert result.returncode == 0, result.output
    assert "moments for 'a green triangle'" in result.stdout
    first_row = next(line for line in result.stdout.splitlines() if line.strip().startswith("│ 1 "))
    assert "clip-south" in first_row, result.stdout


def test_search_where_filters_on_typed_metadata(library: Library, tmp_path: Path) -> None:
    # one more video with metadata of its own (a number, a string, a bool), so that the filters separate something
    roof = tmp_path / "clip-roof.mp4"
    roof.write_bytes((library.videos.folder / "clip-north.mp4").read_bytes())
    added = run_cli(
        "ingest",
        str(roof),
        "--meta",
        "floor=3",
        "--meta",
        "camera=roof",
        "--meta",
        "outdoor=true",
        "--json",
        target=library.target,
    )
    assert added.returncode == 0, added.output
    assert [v["video_id"] for v in json.loads(added.stdout)["ingested"]] == ["clip-roof"]

    def videos_for(*where: str) -> set[str]:
        args = [a for w in where for a in ("--where", w)]
        result = run_cli("search", "a red circle", "--top-k", "20", *args, "--json", target=library.target)
        assert result.returncode == 0, result.output
        return {m["video_id"] for m in json.loads(result.stdout)["moments"]}

    assert videos_for("floor>=3") == {"clip-roof"}
    assert videos_for("floor<3") >= {"clip-north", "clip-south"}
    assert "clip-roof" not in videos_for("floor<3")
    assert videos_for("camera in roof,attic") == {"clip-roof"}
    assert videos_for("outdoor=true", "camera!=attic") == {"clip-roof"}
    assert "clip-roof" not in videos_for("site=lab")

    unknown = run_cli("search", "a red circle", "--where", "colour=red", target=library.target)
    assert unknown.returncode == 1
    assert "INVALID_ARGUMENT" in unknown.stderr and "colour" in unknown.stderr


def test_ingest_existing_id_fails_then_replace(library: Library, videos: Videos) -> None:
    path = str(videos.folder / "clip-north.mp4")
    again = run_cli("ingest", path, "--json", target=library.target)
    assert again.returncode == 1, again.output
    (failed,) = json.loads(again.stdout)["failed"]
    assert failed["video_id"] == "clip-north" and "ALREADY_EXISTS" in failed["reason"]
    assert "ALREADY_EXISTS" in again.stderr
    replaced = run_cli(
        "ingest", path, "--replace", "--meta", "site=lab", "--meta", "floor=1", "--json", target=library.target
    )
    assert replaced.returncode == 0, replaced.output


def test_ingest_reports_unreadable_and_undecodable_files(library: Library, tmp_path: Path) -> None:
    missing = tmp_path / "missing.mp4"
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"this is not a video" * 100)
    result = run_cli("ingest", str(missing), str(garbage), target=library.target)
    assert result.returncode == 1, result.output
    assert "0 ingested, 2 failed" in result.stdout
    assert f"failed {missing}: cannot read the file: No such file or directory" in result.stderr
    assert f"failed {garbage}: INVALID_ARGUMENT" in result.stderr


def test_search_with_an_unreadable_image_is_a_usage_error(library: Library, tmp_path: Path) -> None:
    result = run_cli("search", "--image", str(tmp_path / "nope.png"), target=library.target)
    assert result.returncode == 2
    assert "cannot read image" in result.stderr and "No such file or directory" in result.stderr


def test_unreachable_server(tmp_path: Path) -> None:
    target = f"127.0.0.1:{free_port()}"  # nothing listens there
    for args in (["search", "a red circle"], ["info"], ["videos", "ls"]):
        result = run_cli(*args, target=target, timeout=60)
        assert result.returncode == 3, result.output
        assert f"cannot reach the Moments server at {target}" in result.stderr
        assert "Traceback" not in result.output
    video = tmp_path / "v.mp4"
    video.write_bytes(b"\0" * 1000)
    result = run_cli("ingest", str(video), target=target, timeout=60)
    assert result.returncode == 3, result.output
    assert f"cannot reach the server at {target}" in result.stderr


def test_missing_token_is_refused(server: LiveServer) -> None:
    result = run_cli("info", target=server.target, token=None)
    assert result.returncode == 1
    assert "UNAUTHENTICATED" in result.stderr or "authorization" in result.stderr


def test_info_and_videos_rm(library: Library) -> None:
    info = run_cli("info", "--json", target=library.target)
    assert info.returncode == 0, info.output
    model = json.loads(info.stdout)["model"]
    assert model["name"] == "shapes-demo" and model["fused"] is False and model["cuda_graphs"] is False
    assert model["text_buckets"][0] == 1 and model["image_buckets"][0] == 1
    table = run_cli("info", target=library.target).stdout
    assert "shapes-demo" in table and "unfused" in table
    assert " ".join(map(str, model["image_buckets"])) in table
    missing = run_cli("videos", "rm", "no-such-video", target=library.target)
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr


def test_sample_video_prints_its_schedule(tmp_path: Path) -> None:
    out = tmp_path / "demo.mp4"
    result = run_cli("sample-video", str(out), "--shapes", "red:circle,blue:square", "--json")
    assert result.returncode == 0, result.output
    schedule = json.loads(result.stdout)
    assert [(s["caption"], s["start_s"], s["end_s"]) for s in schedule] == [
        ("a red circle", 0.0, 2.0),
        ("a blue square", 2.0, 4.0),
    ]
    assert out.stat().st_size > 1000
    table = run_cli("sample-video", str(tmp_path / "t.mp4"))
    assert "a red circle" in table.stdout and "moments search" in table.stdout


def test_thumbnails_are_saved(library: Library, tmp_path: Path) -> None:
    video = tmp_path / "clip-thumbs.mp4"
    video.write_bytes((library.videos.folder / "south" / "clip-south.mp4").read_bytes())
    added = run_cli("ingest", str(video), "--thumbnails", "--quiet", target=library.target)
    assert added.returncode == 0, added.output
    out = tmp_path / "thumbs"
    found = run_cli(
        "search",
        "a red circle",
        "--video",
        "clip-thumbs",
        "--top-k",
        "1",
        "--thumbnails",
        str(out),
        target=library.target,
    )
    assert found.returncode == 0, found.output
    (jpeg,) = out.glob("01-clip-thumbs-*.jpg")
    assert jpeg.read_bytes()[:2] == b"\xff\xd8"
    assert 2.0 <= float(jpeg.stem.split("-")[-1].rstrip("s")) < 4.0


def test_the_upload_rate_is_the_uploads_not_diluted_by_processing() -> None:
    from moments_client.cli import upload_rate

    # 93 KiB received in 0.05 s: the rich speed column showed "19 bytes/s" once decoding took seconds.
    assert upload_rate(93 * 1024, 0.05) == "1.8 MiB/s"
    assert upload_rate(0, 1.0) == "" and upload_rate(10, 0.0) == ""


def test_search_composed(library: Library, tmp_path: Path) -> None:
    def shown(result: CliResult) -> list[tuple[str, str]]:
        assert result.returncode == 0, result.output
        out = []
        for m in json.loads(result.stdout)["moments"]:
            at = m["best_frame_s"]
            seg = next(s for s in library.videos.schedule[m["video_id"]] if s.start_s - 0.01 <= at < s.end_s - 0.01)
            out.append((m["video_id"], seg.caption))
        return out

    folder = ["--video", "clip-north", "--video", "clip-south", "--video", "clip-east"]
    either = shown(
        run_cli(
            "search", "--any", "a red circle", "--any", "a blue square", "--max-per-video", "1", "--json", *folder,
            target=library.target,
        )
    )  # fmt: skip
    assert sorted(v for v, _ in either) == ["clip-east", "clip-north", "clip-south"]
    assert {c for _, c in either} <= {"a red circle", "a blue square"}

    pushed = shown(
        run_cli(
            "search", "a red circle", "--any", "a blue square", "--not", "a blue square", "--top-k", "4", "--json",
            *folder, target=library.target,
        )
    )  # fmt: skip
    assert [c for _, c in pushed] == ["a red circle"] * 4

    picture = tmp_path / "green.png"
    Image.fromarray(draw("green", "triangle", 128, rng=7)).save(picture)
    mixed = shown(
        run_cli(
            "search", "a red circle", "--image", str(picture), "--image-weight", "0.5", "--top-k", "6", "--json",
            *folder, target=library.target,
        )
    )  # fmt: skip
    assert sorted(c for _, c in mixed) == ["a green triangle"] * 2 + ["a red circle"] * 4
    close = shown(run_cli("search", "a red circle", "--within", "0.1", "--top-k", "12", "--json", *folder,
                          target=library.target))  # fmt: skip
    assert [c for _, c in close] == ["a red circle"] * 4

    table = run_cli("search", "a red circle", "--not", "a blue square", "--top-k", "2", target=library.target)
    assert "moments for 'a red circle' not 'a blue square'" in table.stdout, table.output
    for args, says in (
        (["--image-weight", "0.5", "a red circle"], "image_weight= weighs an image against a text"),
        (["a red circle", "--image", str(picture), "--image-weight", "1"], "between 0 and 1 (not 1.0)"),
        (["a red circle", "--max-per-video", "-1"], "max_per_video is a count of moments per video"),
        ([], "search needs text=, image=, parts= or any_texts="),
    ):
        bad = run_cli("search", *args, target=library.target)
        assert bad.returncode == 2 and says in bad.stderr, bad.output
