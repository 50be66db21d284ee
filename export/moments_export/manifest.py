"""``manifest.json``: what the server needs to know about an exported model, and checks of a model dir.

Imports neither torch nor open_clip, so tests and tools can check a model directory cheaply.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FORMAT = 1
MANIFEST = "manifest.json"
TEXT_FP32, IMAGE_FP32 = "text.onnx", "image.onnx"
TEXT_FP16, IMAGE_FP16 = "text.fp16.onnx", "image.fp16.onnx"
# file keys under files.<tower>: fp32 (the graphs the fingerprint covers), fp16, fp32_fused, fp16_fused
GRAPH_KEYS = ("fp32", "fp16", "fp32_fused", "fp16_fused")


def graph_file(tower: str, key: str) -> str:
    """``text.onnx``, ``text.fp16.onnx``, ``text.fused.onnx``, ``text.fp16.fused.onnx`` (same for image)."""
    if key not in GRAPH_KEYS:
        raise ValueError(f"unknown graph key {key!r}")
    precision, _, fused = key.partition("_")
    return f"{tower}{'.fp16' if precision == 'fp16' else ''}{'.fused' if fused else ''}.onnx"


TOKENIZER = "tokenizer.json"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def identity(
    name: str,
    pretrained: str | None,
    checkpoint_sha256: str | None,
    embed_dim: int,
    image_size: int,
    context_length: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    training: dict[str, Any] | None,
) -> dict[str, Any]:
    ident: dict[str, Any] = {
        "model": name,
        "pretrained": pretrained,
        "checkpoint_sha256": checkpoint_sha256,
        "embed_dim": embed_dim,
        "image_size": image_size,
        "context_length": context_length,
        "mean": list(mean),
        "std": list(std),
    }
    if training is not None:
        ident["training"] = training
    return ident


def manifest_fingerprint(m: dict[str, Any]) -> str:
    """The fingerprint a manifest's identity fields and fp32 file hashes give (what `fingerprint` should hold)."""
    keys = ("model", "pretrained", "checkpoint_sha256", "embed_dim", "image_size", "context_length", "mean", "std")
    ident = {k: m[k] for k in keys}
    if "training" in m:
        ident["training"] = m["training"]["identity"]
    files = m["files"]
    return fingerprint(
        ident, files["text"]["fp32"]["sha256"], files["image"]["fp32"]["sha256"], files["tokenizer"]["sha256"]
    )


def fingerprint(ident: dict[str, Any], text_sha: str, image_sha: str, tokenizer_sha: str) -> str:
    """sha256 over the model identity and the fp32 graphs' and tokenizer's hashes (canonical JSON)."""
    blob = json.dumps(
        {"identity": ident, "text.onnx": text_sha, "image.onnx": image_sha, "tokenizer.json": tokenizer_sha},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _slug_lower(s: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", s.lower()).strip("-")


def descriptor_set_name(name: str, pretrained: str | None, checkpoint_sha256: str | None, fp: str) -> str:
    """``moments__vit-b-32__laion2b_s34b_b79k__1a2b3c4d``; ``..__ckpt-<12 hex>__..``; ``moments__shapes-demo__..``."""
    parts = ["moments", _slug_lower(name)]
    if pretrained:
        parts.append(_slug_lower(pretrained))
    elif checkpoint_sha256:
        parts.append(f"ckpt-{checkpoint_sha256[:12]}")
    parts.append(fp[:8])
    return "__".join(parts)


def file_entry(d: Path, name: str) -> dict[str, Any]:
    p = d / name
    return {"path": name, "sha256": sha256_file(p), "bytes": p.stat().st_size}


def now_iso() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def exporter_versions() -> dict[str, str]:
    import onnx
    import open_clip
    import tokenizers
    import torch

    return {
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "onnx": onnx.__version__,
        "tokenizers": tokenizers.__version__,
    }


def write_manifest(d: Path, manifest: dict[str, Any]) -> Path:
    p = d / MANIFEST
    tmp = p.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(p)
    return p


def read_manifest(d: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((Path(d) / MANIFEST).read_text(encoding="utf-8"))
    return data


def check_model_dir(d: Path) -> dict[str, Any]:
    """Raise ``ValueError`` unless ``d`` holds a complete model whose files match the manifest's hashes
    and whose fingerprint and descriptor set name are consistent. Returns the manifest."""
    d = Path(d)
    if not (d / MANIFEST).is_file():
        raise ValueError(f"{d}: no {MANIFEST}")
    m = read_manifest(d)
    if m.get("format") != FORMAT:
        raise ValueError(f"{d}: manifest format {m.get('format')!r}, expected {FORMAT}")
    entries: list[dict[str, Any]] = [m["files"]["tokenizer"]]
    for tower in ("text", "image"):
        entries.extend(m["files"][tower].values())
    for e in entries:
        p = d / e["path"]
        if not p.is_file():
            raise ValueError(f"{d}: missing {e['path']}")
        if sha256_file(p) != e["sha256"]:
            raise ValueError(f"{d}: {e['path']} does not match its sha256 in the manifest")
    fp = manifest_fingerprint(m)
    if fp != m["fingerprint"]:
        raise ValueError(f"{d}: fingerprint mismatch")
    if m["descriptor_set"] != descriptor_set_name(m["model"], m["pretrained"], m["checkpoint_sha256"], fp):
        raise ValueError(f"{d}: descriptor_set does not follow from the model identity")
    return m
