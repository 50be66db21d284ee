"""The transport/core seam without a server: protobuf requests become the core's types (unknown enum values
refused at the edge), the core's results become protobuf responses sized to the response limit."""

from __future__ import annotations

import dataclasses

import pytest

from moments.v1 import moments_pb2 as pb
from moments_server.catalog.model import PropertyValue, VideoRecord
from moments_server.config import Settings
from moments_server.errors import InvalidArgument, ResourceExhausted
from moments_server.service import events
from moments_server.service.moments import Moment
from moments_server.service.replies import SearchPage, Timing, VideoPage, decode_list_token, decode_page_token
from moments_server.service.requests import IngestMode, MomentSpan, Op, Windows
from moments_server.service.search import fingerprint
from moments_server.service.values import metadata_from_request
from moments_server.transport import replies, requests


def full_search() -> pb.SearchRequest:
    r = pb.SearchRequest(
        top_k=7,
        page_token="",
        parts=[pb.QueryPart(text="a red circle", weight=2), pb.QueryPart(image=b"\x89PNG...", weight=0.5)],
        any_texts=["a square"],
        negative_texts=["green"],
    )
    r.filters.video_ids.extend(["a", "b"])
    r.filters.start_s = 1.5
    r.filters.conditions.add(key="camera", op=pb.Condition.IN, values=[pb.Value(string_value="n")])
    r.filters.complete_only = True
    o = r.options
    o.merge_adjacent = o.include_thumbnails = True
    o.min_score, o.merge_tolerance, o.relative_score = 0.25, 0.125, 0.5
    o.max_per_video, o.negative_weight, o.negative_margin = 2, 1.5, 0.25
    o.moment_span = pb.MOMENT_SPAN_SHOT
    return r


def test_a_search_request_reaches_the_core_whole() -> None:
    q = requests.search_query(full_search())
    assert q.text is None and q.image is None and q.top_k == 7
    assert [(p.text, p.image, p.weight) for p in q.parts] == [("a red circle", None, 2.0), (None, b"\x89PNG...", 0.5)]
    assert q.any_texts == ["a square"] and q.negative_texts == ["green"]
    f = q.filters
    assert f.video_ids == ["a", "b"] and f.start_s == 1.5 and f.end_s is None and f.complete_only
    assert [(c.key, c.op, c.values) for c in f.conditions] == [("camera", Op.IN, ["n"])]
    o = q.options
    assert (o.merge_adjacent, o.group_by_video, o.include_thumbnails) == (True, False, True)
    assert (o.min_score, o.merge_tolerance, o.relative_score) == (0.25, 0.125, 0.5)
    assert (o.max_per_video, o.negative_weight, o.negative_margin) == (2, 1.5, 0.25)
    assert o.moment_span is MomentSpan.SHOT
    # unset optionals stay unset (None), not 0: the core tells "not given" from "0"
    bare = requests.search_query(pb.SearchRequest(text="x"))
    assert bare.text == "x" and bare.options.min_score is None and bare.filters.start_s is None


def test_a_page_token_is_bound_to_every_field_but_itself() -> None:
    base = full_search()
    bound = fingerprint(requests.search_query(base))
    with_token = pb.SearchRequest()
    with_token.CopyFrom(base)
    with_token.page_token = "anything"
    assert fingerprint(requests.search_query(with_token)) == bound
    changes = [
        lambda r: setattr(r, "top_k", 8),
        lambda r: setattr(r.parts[1], "image", b"\x89PNG..!"),
        lambda r: setattr(r.parts[0], "weight", 2.5),
        lambda r: r.any_texts.append("b"),
        lambda r: r.filters.video_ids.append("c"),
        lambda r: setattr(r.filters, "end_s", 3.0),
        lambda r: setattr(r.filters.conditions[0], "op", pb.Condition.EQ),
        lambda r: setattr(r.options, "min_score", 0.5),
        lambda r: setattr(r.options, "moment_span", pb.MOMENT_SPAN_WINDOW),
        lambda r: setattr(r.options, "group_by_video", True),
    ]
    for i, change in enumerate(changes):
        other = pb.SearchRequest()
        other.CopyFrom(base)
        change(other)
        assert fingerprint(requests.search_query(other)) != bound, i


@pytest.mark.parametrize(
    ("convert", "message"),
    [
        (lambda: requests.ingest_spec(pb.IngestHeader(video_id="v", mode=7)), "header.mode 7 is unknown"),
        (
            lambda: requests.ingest_spec(pb.IngestHeader(video_id="v", sampling=pb.SamplingOptions(windows=9))),
            "sampling.windows 9 is unknown",
        ),
        (
            lambda: requests.search_query(pb.SearchRequest(text="x", options=pb.SearchOptions(moment_span=5))),
            "options.moment_span 5 is unknown",
        ),
    ],
)
def test_enum_values_no_api_version_names_are_refused_at_the_edge(convert: object, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        convert()  # type: ignore[operator]


def test_an_ingest_header_reaches_the_core_whole() -> None:
    h = pb.IngestHeader(
        video_id="cam-1",
        filename="cam.ts",
        replace=True,
        thumbnails=True,
        mode=pb.INGEST_MODE_LIVE,
        segment_s=2.5,
        resume_upload_id="up",
        resume_offset=42,
        sampling=pb.SamplingOptions(fps=2, max_frames=9, windows=pb.WINDOWS_FIXED),
    )
    h.metadata["floor"].number_value = 3
    h.metadata["when"].date_value = "2026-01-02T03:04:05+00:00"
    h.metadata["empty"].CopyFrom(pb.Value())
    spec = requests.ingest_spec(h)
    assert (spec.video_id, spec.filename, spec.replace, spec.thumbnails) == ("cam-1", "cam.ts", True, True)
    assert spec.mode is IngestMode.LIVE and spec.streamed and spec.segment_s == 2.5
    assert (spec.resume_upload_id, spec.resume_offset) == ("up", 42)
    assert (spec.sampling.fps, spec.sampling.max_frames, spec.sampling.windows) == (2.0, 9, Windows.FIXED)
    assert spec.metadata == {"floor": 3.0, "when": {"_date": "2026-01-02T03:04:05+00:00"}, "empty": None}
    with pytest.raises(InvalidArgument, match=r"metadata\['empty'\]: the value has no kind set"):
        metadata_from_request(spec.metadata, Settings())


def moment(i: int, thumb: int) -> Moment:
    return Moment(f"v{i}", i, i + 1, i + 0.5, 1 - i / 10, {"k": i}, b"j" * thumb)


def test_a_search_page_is_trimmed_to_the_response_limit_and_goes_on_from_there() -> None:
    page = SearchPage([moment(i, 2000) for i in range(5)], 10, more=True, fingerprint="fp", timing=Timing(1, 2, 3, 4))
    whole = replies.search_response(page, 1 << 20)
    assert len(whole.moments) == 5 and not whole.trimmed
    assert decode_page_token(whole.next_page_token, "fp") == 15
    assert whole.timing.store_ms == 3 and whole.moments[1].metadata["k"].number_value == 1
    trimmed = replies.search_response(page, 512 + 2 * 2100)
    assert 0 < len(trimmed.moments) < 5 and trimmed.trimmed and trimmed.ByteSize() <= 512 + 2 * 2100
    assert decode_page_token(trimmed.next_page_token, "fp") == 10 + len(trimmed.moments)
    last = replies.search_response(dataclasses.replace(page, more=False), 1 << 20)
    assert last.next_page_token == ""
    with pytest.raises(ResourceExhausted, match="one moment alone"):
        replies.search_response(page, 1000)


def record(**metadata: PropertyValue) -> VideoRecord:
    return VideoRecord(
        "v", "v.mp4", 6.0, 10.0, 64, 48, "h264", "mp4", "2026-12-07T00:00:00.000+00:00", 6, 99, "", metadata
    )


def test_a_video_page_is_trimmed_and_a_lone_video_over_the_limit_refused() -> None:
    videos = [record(note="x" * 3000) for _ in range(4)]
    response = replies.list_response(VideoPage(videos, 20, more=False), 512 + 2 * 3200)
    assert response.trimmed and 0 < len(response.videos) < 4
    assert decode_list_token(response.next_page_token) == 20 + len(response.videos)
    with pytest.raises(ResourceExhausted, match="position 20 alone"):
        replies.list_response(VideoPage(videos, 20, more=False), 1000)
    with pytest.raises(ResourceExhausted, match="re-ingest it with less metadata"):
        replies.video_response(videos[0], 1000)


def test_a_video_keeps_its_fields_and_value_types() -> None:
    v = record(camera="north", floor=2, outdoor=True, when={"_date": "2026-01-02T03:04:05+00:00"})
    v.state, v.shots = "live", 3
    msg = replies.video(v)
    assert (msg.video_id, msg.filename, msg.duration_s, msg.fps, msg.width, msg.height) == ("v", "v.mp4", 6, 10, 64, 48)
    assert (msg.codec, msg.frames, msg.size_bytes, msg.state, msg.shots) == ("h264", 6, 99, "live", 3)
    kinds = {k: val.WhichOneof("kind") for k, val in msg.metadata.items()}
    assert kinds == {"camera": "string_value", "floor": "number_value", "outdoor": "bool_value", "when": "date_value"}


def test_every_ingest_event_has_its_message() -> None:
    v = record()
    cases: list[tuple[events.IngestEvent, str]] = [
        (events.Accepted("v", replacing=True, upload_id="u", offset=5, media_s=1.5), "accepted"),
        (events.Progress(bytes_received=9, frames_embedded=2), "progress"),
        (events.Committed(100, 4.0, 4, 1), "committed"),
        (events.PullState(3.0, 2, "refused", 0.5), "pull"),
        (events.Done(v, 6, events.Timings(total_s=2.0)), "done"),
    ]
    for event, kind in cases:
        message = replies.ingest_event(event)
        assert message.WhichOneof("event") == kind
    assert replies.ingest_event(cases[0][0]).accepted.offset == 5
    assert replies.ingest_event(cases[3][0]).pull.error == "refused"
    done = replies.ingest_event(cases[4][0]).done
    assert done.video.video_id == "v" and done.frames == 6 and done.timings.total_s == 2.0
