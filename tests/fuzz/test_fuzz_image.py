"""The image query decoder through Search: random and mutated PNG/JPEG bytes, and real headers that claim
huge dimensions, are each answered with results or a precise status, and the server keeps serving."""

from __future__ import annotations

import io

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from moments.v1 import moments_pb2 as pb
from moments.v1 import moments_pb2_grpc as pb_grpc
from moments_shapes import draw
from tests.fuzz.conftest import NOT_PRECISE, assert_serving, budget, record
from tests.fuzz.strategies import Corpus, mutated, patch_jpeg_size, patch_png_size

# Pillow refuses images over 2 × Image.MAX_IMAGE_PIXELS with DecompressionBombError.


@pytest.fixture(scope="module")
def images() -> dict[str, bytes]:
    from PIL import Image

    out = Corpus()
    for fmt, mode in (("PNG", "RGB"), ("PNG", "RGBA"), ("PNG", "L"), ("JPEG", "RGB"), ("JPEG", "L"), ("GIF", "P")):
        buf = io.BytesIO()
        Image.fromarray(draw("red", "circle", (48, 48), 1)).convert(mode).save(buf, format=fmt)
        out[f"{fmt}-{mode}"] = buf.getvalue()
    buf = io.BytesIO()
    Image.fromarray(draw("blue", "square", (48, 48), 2)).save(buf, format="JPEG", progressive=True)
    out["JPEG-progressive"] = buf.getvalue()
    return out


def _search(stub: pb_grpc.VideoSearchStub, image: bytes) -> tuple[str, str]:
    """(status name, message)."""
    try:
        stub.Search(pb.SearchRequest(image=image, top_k=3), timeout=60)
    except grpc.RpcError as e:
        assert e.details(), f"{e.code().name} without a message"
        return str(e.code().name), str(e.details())
    return "OK", ""


@st.composite
def queries(draw_: st.DrawFn, images: dict[str, bytes]) -> tuple[str, bytes, int]:
    """(what, bytes, pixels claimed by a patched header or 0)."""
    if draw_(st.integers(0, 4)) == 0:
        w = draw_(st.sampled_from([0, 1, 4096, 12000, 20000, 65535]))
        h = draw_(st.sampled_from([0, 1, 4096, 12000, 20000, 65535]))
        name = draw_(st.sampled_from(["PNG-RGB", "JPEG-RGB"]))
        patch = patch_png_size if name.startswith("PNG") else patch_jpeg_size
        return f"{name} claiming {w}x{h}", patch(images[name], w, h), w * h
    kind, data = draw_(mutated(list(images.values())))
    return kind, data, 0


@budget(quick=80, fuzz=2500)
@given(data=st.data())
def test_image_queries_get_a_precise_status(
    fuzz_stub: pb_grpc.VideoSearchStub, images: dict[str, bytes], data: st.DataObject
) -> None:
    what, image, _claimed = data.draw(queries(images))
    outcome, message = _search(fuzz_stub, image)
    record("image query", outcome)
    assert grpc.StatusCode[outcome] not in NOT_PRECISE, f"{outcome} for {what} ({len(image)} bytes): {message}"


def test_decompression_bomb_header_is_refused_precisely(
    fuzz_stub: pb_grpc.VideoSearchStub, images: dict[str, bytes]
) -> None:
    assert _search(fuzz_stub, patch_png_size(images["PNG-RGB"], 20000, 20000))[0] in {
        "INVALID_ARGUMENT",
        "RESOURCE_EXHAUSTED",
    }


def test_server_still_serving_after_image_fuzz(fuzz_stub: pb_grpc.VideoSearchStub) -> None:
    assert_serving(fuzz_stub)
