"""The one place responses are sized: a page that would pass the server's response limit is trimmed."""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message

# Room for what is set after trimming (next_page_token, the flag, timings).
SLACK_BYTES = 512


def _varint_len(n: int) -> int:
    return max(1, (n.bit_length() + 6) // 7)


def fit(response: Message, field: str, limit: int) -> int:
    """Drop items from the end of the repeated message `field` until `response` serializes within `limit`
    bytes (less a little slack); returns how many items are kept."""
    items: Any = getattr(response, field)
    total = response.ByteSize()
    if total + SLACK_BYTES <= limit:
        return len(items)
    sizes = [m.ByteSize() for m in items]
    framed = [1 + _varint_len(n) + n for n in sizes]  # field tag (< 16), length, body
    used = total - sum(framed)
    kept = 0
    for n in framed:
        if used + n + SLACK_BYTES > limit:
            break
        used += n
        kept += 1
    del items[kept:]
    return kept
