"""Load an OpenCLIP model by name + pretrained tag, or from a local checkpoint, without surprises offline.

Weights for a pretrained tag are looked up in the local caches first (the Hugging Face cache,
``HF_HOME`` / ``HF_HUB_CACHE``, and open_clip's ``~/.cache/clip`` for URL weights). Only when they are not
cached is the network used; when it cannot be reached (or ``HF_HUB_OFFLINE=1`` is set) the load fails
at once with :class:`WeightsUnavailable` naming the offline options. It never falls back to random
weights.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from moments_export import UsageError, WeightsUnavailable
from moments_export.manifest import sha256_file

HF_HOST = "huggingface.co"


@dataclass
class LoadedModel:
    """An OpenCLIP model in eval mode plus everything the export needs to know about it."""

    model: torch.nn.Module
    name: str
    pretrained: str | None
    checkpoint_sha256: str | None
    embed_dim: int
    image_size: int
    context_length: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    tokenizer: Any  # open_clip.tokenizer.SimpleTokenizer
    # how the server frames pictures for this model (manifest "preprocess"; moments_server.framing)
    preprocess: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def slug(self) -> str:
        return model_slug(self.name, self.pretrained, self.checkpoint_sha256)


def model_slug(name: str, pretrained: str | None, checkpoint_sha256: str | None) -> str:
    """Directory name: ``shapes-demo``, ``ViT-B-32__laion2b_s34b_b79k``, ``ViT-B-32__ckpt-<12 hex>``."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")
    if pretrained:
        return f"{safe}__{re.sub(r'[^A-Za-z0-9._-]+', '-', pretrained)}"
    if checkpoint_sha256:
        return f"{safe}__ckpt-{checkpoint_sha256[:12]}"
    return safe


def offline_message(name: str, tag: str, detail: str) -> str:
    return (
        f"Cannot get the weights of {name} / pretrained '{tag}': {detail}.\n"
        "This machine looks offline and the weights are not in the local cache. Offline options:\n"
        f"  1. --checkpoint PATH   export from a local checkpoint file (state dict, .pt/.bin/.safetensors)"
        f" of the {name} architecture;\n"
        "  2. a warm cache: download once on a connected machine (open_clip.create_model("
        f"'{name}', pretrained='{tag}')) and copy its Hugging Face cache here, pointing HF_HOME (or "
        "HF_HUB_CACHE) at it; URL weights live in ~/.cache/clip;\n"
        "  3. --model shapes-demo   a small model trained here on drawn shapes, no download needed."
    )


def _hf_offline_env() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _network_reachable(host: str = HF_HOST, timeout: float = 3.0) -> tuple[bool, str]:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True, ""
    except OSError as e:
        return False, f"{host} is not reachable ({type(e).__name__}: {e})"


def _cached_weights(cfg: dict[str, Any]) -> str | None:
    """Path of the tag's weights if already in a local cache; never touches the network."""
    if cfg.get("file"):
        return str(cfg["file"]) if os.path.isfile(cfg["file"]) else None
    hub = cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import hf_hub_download

        repo, filename = os.path.split(hub)
        names = [filename] if filename else []
        if not filename or filename.endswith((".bin", ".pth")):
            base = filename or "open_clip_pytorch_model.bin"
            names = ["open_clip_model.safetensors", base[:-4] + ".safetensors", base]
        for fname in dict.fromkeys(names):
            try:
                return str(hf_hub_download(repo_id=repo, filename=fname, local_files_only=True))
            except Exception:
                continue
    url = cfg.get("url", "")
    if url:
        target = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        if target.is_file():
            return str(target)
    return None


def resolve_pretrained(name: str, tag: str) -> tuple[str, dict[str, Any]]:
    """Local path of the weights for ``name``/``tag`` (downloading only when online) and the tag config."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(name, tag)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(name)
        raise UsageError(f"unknown pretrained tag '{tag}' for {name}; known tags: {tags}")
    cached = _cached_weights(cfg)
    if cached:
        return cached, cfg
    if _hf_offline_env():
        raise WeightsUnavailable(offline_message(name, tag, "HF_HUB_OFFLINE is set and they are not cached"))
    ok, why = _network_reachable()
    if not ok:
        raise WeightsUnavailable(offline_message(name, tag, why))
    try:
        from open_clip.pretrained import download_pretrained

        path = download_pretrained(cfg)
    except Exception as e:  # network trouble half-way, missing file, ...
        raise WeightsUnavailable(offline_message(name, tag, f"download failed ({e})")) from e
    if not path:
        raise WeightsUnavailable(offline_message(name, tag, "no download source for this tag"))
    return path, cfg


def _describe(model: Any, name: str, pretrained: str | None, ckpt_sha: str | None) -> LoadedModel:
    import open_clip

    visual: Any = model.visual
    pp = getattr(visual, "preprocess_cfg", None) or {}
    size = visual.image_size
    image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
    if isinstance(size, (tuple, list)) and size[0] != size[1]:
        raise UsageError(f"{name}: non-square image size {size} is not supported")
    tok = open_clip.get_tokenizer(name) if name != "shapes-demo" else open_clip.get_tokenizer("ViT-B-32")
    from open_clip.tokenizer import SimpleTokenizer

    if not isinstance(tok, SimpleTokenizer) or tok.reduction_fn is not None:
        raise UsageError(
            f"{name} uses {type(tok).__name__}; only models with open_clip's CLIP BPE tokenizer "
            "(SimpleTokenizer) can be exported so far"
        )
    context_length = int(getattr(model, "context_length", 0) or tok.context_length)
    tok.context_length = context_length
    embed_dim = int(model.text_projection.shape[1]) if hasattr(model, "text_projection") else 0
    if not embed_dim:
        with torch.no_grad():
            embed_dim = int(model.encode_text(tok(["a"])).shape[-1])
    return LoadedModel(
        model=model.eval(),
        name=name,
        pretrained=pretrained,
        checkpoint_sha256=ckpt_sha,
        embed_dim=embed_dim,
        image_size=image_size,
        context_length=context_length,
        mean=tuple(float(v) for v in pp.get("mean", open_clip.OPENAI_DATASET_MEAN)),  # type: ignore[arg-type]
        std=tuple(float(v) for v in pp.get("std", open_clip.OPENAI_DATASET_STD)),  # type: ignore[arg-type]
        tokenizer=tok,
        preprocess=framing_of(name, image_size, pp),
    )


def framing_of(name: str, image_size: int, pp: dict[str, Any]) -> dict[str, Any]:
    """The model's own preprocessing (OpenCLIP's PreprocessCfg: resize_mode, interpolation, fill_color) as
    the server's framing, so frames and query images are resized as the model was trained."""
    from moments_server.framing import INTERPOLATIONS, RESIZE_MODES, Framing

    interpolation = str(pp.get("interpolation", "bicubic"))
    resize_mode = str(pp.get("resize_mode", "shortest"))
    if interpolation not in INTERPOLATIONS or resize_mode not in RESIZE_MODES:
        raise UsageError(
            f"{name}: preprocessing interpolation={interpolation!r} resize_mode={resize_mode!r} is not one the "
            f"server does (interpolation {sorted(INTERPOLATIONS)}, resize_mode {list(RESIZE_MODES)})"
        )
    fill = int(pp.get("fill_color", 0) or 0)
    return Framing(image_size, resize_mode, interpolation, (fill, fill, fill)).manifest()


def load_model(
    name: str,
    pretrained: str | None = None,
    checkpoint: str | Path | None = None,
    random_weights: bool = False,
) -> LoadedModel:
    """Load ``name`` with the weights of ``pretrained`` (a tag) or ``checkpoint`` (a local file).

    ``random_weights`` builds the architecture with random weights (tests only).
    """
    import open_clip

    if pretrained and checkpoint:
        raise UsageError("give either --pretrained TAG or --checkpoint PATH, not both")
    if name not in open_clip.list_models():
        raise UsageError(f"unknown OpenCLIP model '{name}'; see open_clip.list_models() or use shapes-demo")
    if not (pretrained or checkpoint or random_weights):
        tags = open_clip.list_pretrained_tags_by_model(name)
        raise UsageError(f"{name}: give --pretrained TAG (one of {tags}) or --checkpoint PATH")
    torch.backends.mha.set_fastpath_enabled(False)
    if checkpoint:
        path = Path(checkpoint)
        if not path.is_file():
            raise UsageError(f"checkpoint not found: {path}")
        sha = sha256_file(path)
        model = open_clip.create_model(name, pretrained=None, load_weights=False)
        try:
            open_clip.load_checkpoint(model, str(path), strict=True)
        except Exception as e:
            raise UsageError(f"checkpoint {path} does not fit {name}: {e}") from e
        return _describe(model, name, None, sha)
    if pretrained:
        path_s, cfg = resolve_pretrained(name, pretrained)
        pp = {k: cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in cfg}
        model = open_clip.create_model(
            name,
            pretrained=path_s,
            force_quick_gelu=bool(cfg.get("quick_gelu", False)),
            force_preprocess_cfg=pp,
        )
        return _describe(model, name, pretrained, None)
    model = open_clip.create_model(name, pretrained=None)
    return _describe(model, name, None, None)
