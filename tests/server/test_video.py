"""Video core on real files written with PyAV: sampling by time, decoder scaling, rotation, bad input."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from moments_client.sample_video import CODECS, write_shapes_video
from moments_server.errors import BadVideo
from moments_server.framing import Framing
from moments_server.video.decode import probe, sample

SUFFIX = {"h264": "mp4", "hevc": "mkv", "vp9": "webm", "mpeg4": "avi", "mjpeg": "mov"}


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_every_codec_samples_one_frame_per_second(tmp_path: Path, codec: str) -> None:
    path = tmp_path / f"v.{SUFFIX[codec]}"
    schedule = write_shapes_video(
        path, [("red", "circle"), ("blue", "square")], seconds_each=1.5, fps=10, size=(160, 120), codec=codec
    )
    info = probe(path)
    assert (info.width, info.height) == (160, 120) and abs(info.duration_s - 3.0) < 0.15
    frames = list(sample(path, fps=1.0, max_frames=0, framing=Framing(32)))
    assert [f.start_s for f in frames] == [0.0, 1.0, 2.0]
    assert [round(f.time_s, 3) for f in frames] == [0.0, 1.0, 2.0]
    assert all(f.rgb.shape == (32, 32, 3) and f.rgb.dtype == np.uint8 for f in frames)
    # The frame at 2 s shows the blue square: its pixels lean blue.
    assert schedule[1].start_s <= 2.0 and frames[2].rgb[..., 2].mean() > frames[0].rgb[..., 2].mean()


def test_fps_and_max_frames(tmp_path: Path) -> None:
    path = tmp_path / "v.mp4"
    write_shapes_video(path, [("green", "cross")], seconds_each=3.0, fps=10, size=(64, 64))
    assert [f.start_s for f in sample(path, 2.0, 0, Framing(32))] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    assert len(list(sample(path, 2.0, 4, Framing(32)))) == 4
    windows = [(f.start_s, f.end_s) for f in sample(path, 1.0, 0, Framing(32))]
    assert windows == [(0.0, 1.0), (1.0, 2.0), (2.0, 3.0)]


def test_rotation_metadata_is_respected(tmp_path: Path) -> None:
    path = tmp_path / "rotated.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
        stream.set_display_rotation(90)  # shown turned a quarter counter-clockwise
        image = np.zeros((32, 64, 3), np.uint8)
        image[:, :32] = (255, 0, 0)  # the left half is red
        for _ in range(10):
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    (frame,) = list(sample(path, 1.0, 0, Framing(32)))
    # Turned upright (32 wide, 64 tall, centre-cropped), the red half is at the bottom.
    assert frame.rgb[-4:, :, 0].mean() > 200 and frame.rgb[:4, :, 0].mean() < 50


def test_undecodable_input_says_why(tmp_path: Path) -> None:
    path = tmp_path / "junk.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40)
    with pytest.raises(BadVideo) as err:
        probe(path)
    assert "video" in str(err.value) and str(tmp_path) not in str(err.value)
    audio_only = tmp_path / "tone.wav"
    with av.open(str(audio_only), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
    with pytest.raises(BadVideo, match="no video stream"):
        probe(audio_only)
