"""Subprocess for test_durability: writes batches forever and prints each acknowledged batch number.

usage: python durability_writer.py DATA_DIR FIRST_BATCH
"""

from __future__ import annotations

import sys

import numpy as np

from moments_server.store.embedded import Engine

ENTITIES, DESCRIPTORS, DIMS = 20, 30, 16


def blob_for(batch: int) -> bytes:
    return np.random.default_rng(batch).bytes(300_000 + batch % 7)  # > INLINE_MAX: a file


def vec_for(batch: int, i: int) -> bytes:
    return np.random.default_rng(batch * 1000 + i).normal(size=DIMS).astype("<f4").tobytes()


def main() -> None:
    data_dir, first = sys.argv[1], int(sys.argv[2])
    e = Engine(data_dir)
    e.query([{"AddDescriptorSet": {"name": "d", "dimensions": DIMS, "metric": "L2"}}])
    b = first
    while True:
        q: list[dict[str, object]] = [{"AddBlob": {"_ref": 1, "properties": {"batch": b}}}]
        blobs = [blob_for(b)]
        for i in range(ENTITIES):
            q.append(
                {
                    "AddEntity": {
                        "class": "Row",
                        "properties": {"batch": b, "i": i},
                        "connect": {"ref": 1, "class": "in_batch"},
                    }
                }
            )
        for i in range(DESCRIPTORS):
            q.append({"AddDescriptor": {"set": "d", "properties": {"batch": b, "i": i}}})
            blobs.append(vec_for(b, i))
        r, _ = e.query(q, blobs)
        if not isinstance(r, list):
            print("ERROR", r, flush=True)
            return
        print(b, flush=True)
        b += 1


if __name__ == "__main__":
    main()
