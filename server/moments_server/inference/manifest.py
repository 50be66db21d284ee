"""Reads and checks the model directory written by `moments_export` (its manifest.json)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moments_server.framing import Framing


class ModelDirError(Exception):
    """The model directory is missing, incomplete or does not match its manifest."""


@dataclass(frozen=True)
class ModelManifest:
    directory: Path
    raw: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.raw["model"])

    @property
    def pretrained(self) -> str:
        if self.raw.get("pretrained"):
            return str(self.raw["pretrained"])
        if self.raw.get("checkpoint_sha256"):
            return f"checkpoint:{self.raw['checkpoint_sha256']}"
        return ""

    @property
    def embed_dim(self) -> int:
        return int(self.raw["embed_dim"])

    @property
    def image_size(self) -> int:
        return int(self.raw["image_size"])

    @property
    def framing(self) -> Framing:
        """How pictures become the image tower's input (the manifest's `preprocess`, pinned at export)."""
        return Framing.from_manifest(self.image_size, self.raw.get("preprocess"))

    @property
    def context_length(self) -> int:
        return int(self.raw["context_length"])

    @property
    def text_trim(self) -> bool:
        """Whether the text graphs take ids cut after the batch's last token (exports since the manifest
        says so; older ones take exactly context_length)."""
        return bool(self.raw.get("text_trim", False))

    @property
    def descriptor_set(self) -> str:
        return str(self.raw["descriptor_set"])

    @property
    def fingerprint(self) -> str:
        return str(self.raw["fingerprint"])

    @property
    def text_input(self) -> str:
        return str(self.raw.get("inputs", {}).get("text", "input_ids"))

    @property
    def image_input(self) -> str:
        return str(self.raw.get("inputs", {}).get("image", "pixels"))

    @property
    def output(self) -> str:
        return str(self.raw.get("output", "embedding"))

    def tower_path(self, tower: str, precision: str) -> Path | None:
        """The graph under ``files.<tower>.<precision>``; precision is a file key (fp32, fp16, fp32_fused, ...)."""
        entry = self.raw["files"][tower].get(precision)
        return self.directory / entry["path"] if entry else None

    def serving_graph(self, tower: str, precision: str, fused: bool = True) -> tuple[Path, str, bool]:
        """The graph to serve ``tower`` in ``precision``: with ``fused``, its fused variant when the export wrote
        one (verified against the unfused graph), else the plain one; fp32 when the precision has none.
        Returns (path, precision served, fused)."""
        order = [(f"{precision}_fused", precision, True), (precision, precision, False)]
        order += [("fp32_fused", "fp32", True), ("fp32", "fp32", False)]
        for key, prec, is_fused in order:
            if is_fused and not fused:
                continue
            fused_graph = is_fused
            path = self.tower_path(tower, key)
            if path is not None:
                return path, prec, fused_graph
        raise ModelDirError(f"{self.directory}: the manifest lists no {tower} graph")

    @property
    def tokenizer_path(self) -> Path:
        return self.directory / self.raw["files"]["tokenizer"]["path"]

    def gpu_precision(self) -> str:
        return str(self.raw.get("precision", {}).get("gpu", "fp32"))

    def identity(self) -> dict[str, Any]:
        """What the descriptor set records about the model, and what a restarted server must match."""
        return {
            "model": self.name,
            "pretrained": self.pretrained,
            "dimensions": self.embed_dim,
            "fingerprint": self.fingerprint,
        }


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_manifest(directory: Path, verify_hashes: bool = True) -> ModelManifest:
    path = directory / "manifest.json"
    if not path.is_file():
        raise ModelDirError(f"{directory} holds no manifest.json: export a model first (make export)")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ModelDirError(f"{path} is not valid JSON: {e}") from e
    for key in ("model", "embed_dim", "image_size", "context_length", "descriptor_set", "fingerprint", "files"):
        if key not in raw:
            raise ModelDirError(f"{path} lacks '{key}'")
    manifest = ModelManifest(directory, raw)
    if verify_hashes:
        for group in raw["files"].values():
            entries = group.values() if "path" not in group else [group]
            for entry in entries:
                file = directory / entry["path"]
                if not file.is_file():
                    raise ModelDirError(f"{file} is listed in the manifest but missing")
                if entry.get("sha256") and _sha256(file) != entry["sha256"]:
                    raise ModelDirError(f"{file} does not match the sha256 in its manifest; re-export it")
    return manifest
