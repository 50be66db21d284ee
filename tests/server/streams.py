"""What the LIVE and FRAMES tests stream and how they read it back: the shapes on screen, a camera that holds
its connection open mid-stream, and the stored frames of a video as its searches see them."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from moments.v1 import moments_pb2 as pb
from moments.v1 import moments_pb2_grpc as pb_grpc

# On screen in turn, the same time each (conftest's stream_bytes: 4 s each).
STREAM_SHAPES = [("red", "circle"), ("blue", "square"), ("green", "triangle"), ("yellow", "cross")]


class Feed:
    """Requests of a live stream: the header, then the bytes in `chunk`-byte pieces, holding after `hold_at`
    bytes until released (a camera that keeps its connection open)."""

    def __init__(self, video_id: str, data: bytes, hold_at: int, chunk: int = 8192, **header: object) -> None:
        self.header = pb.IngestHeader(video_id=video_id, mode=pb.INGEST_MODE_LIVE, **header)  # type: ignore[arg-type]
        self.data, self.hold_at, self.chunk = data, hold_at, chunk
        self.release = threading.Event()

    def __iter__(self) -> Iterator[pb.IngestRequest]:
        yield pb.IngestRequest(header=self.header)
        for i in range(0, len(self.data), self.chunk):
            if i >= self.hold_at:
                self.release.wait(60)
            yield pb.IngestRequest(chunk=self.data[i : i + self.chunk])


def search(
    stub: pb_grpc.VideoSearchStub, text: str, video_id: str, top_k: int = 5, **filters: object
) -> list[pb.Moment]:
    """The moments of a search scoped to one video."""
    f = pb.SearchFilters(video_ids=[video_id], **filters)  # type: ignore[arg-type]
    return list(stub.Search(pb.SearchRequest(text=text, top_k=top_k, filters=f), timeout=30).moments)


def frames_of(stub: pb_grpc.VideoSearchStub, video_id: str) -> list[tuple[float, float]]:
    """(frame second, score) of every stored frame of the video (up to 100) for each shape's query: the same
    frames (same times, same pixels, so the same embeddings) give equal lists."""
    out = []
    for color, shape in STREAM_SHAPES:
        for m in search(stub, f"a {color} {shape}", video_id, top_k=100):
            out.append((m.best_frame_s, round(m.score, 5)))
    return sorted(out)
