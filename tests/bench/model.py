"""The benchmark model: the real ViT-B-32 architecture with random weights, exported once to ONNX.

No CLIP weights can be downloaded here, and speed does not depend on the weights, so the bench builds
`open_clip.create_model("ViT-B-32")` with its random init and exports both towers the way the server
expects them (uint8 NHWC pixels in, int64 token ids in, L2-normalised float32 out). The result is cached
under `.cache/bench-models/<name>/`, keyed by the export recipe, so reruns do not re-export.

When `python -m moments_export` offers a random-init option, it is used instead (same cache).
"""

from __future__ import annotations

import gzip
import hashlib
import html
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from moments_export.manifest import sha256_file
from tests.bench.common import REPO, log

MODEL = "ViT-B-32"
RECIPE = "bench-random-vit-b-32-v1"  # bump when the export below changes
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


def _official_random_export(out: Path) -> bool:
    """`python -m moments_export --model ViT-B-32 --random-weights --out OUT` when the export CLI offers a
    random-weight option; False when it does not or fails (the bench's own export is used then)."""
    try:
        helped = subprocess.run(
            [sys.executable, "-m", "moments_export", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    flag = next((f for f in ("--random-weights", "--random-init") if f in helped.stdout), None)
    if helped.returncode != 0 or flag is None:
        return False
    run = subprocess.run(
        [sys.executable, "-m", "moments_export", "--model", MODEL, flag, "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if run.returncode != 0 or not (out / "manifest.json").is_file():
        log(f"moments_export {flag} failed ({run.returncode}); using the bench's own export\n{run.stderr[-2000:]}")
        return False
    return True


def clip_tokenizer_json(path: Path, context_length: int = 77) -> None:
    """CLIP's BPE (open_clip's vocabulary file) as a self-contained HF `tokenizers` file."""
    import open_clip
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    bpe_path = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    with gzip.open(bpe_path) as f:
        merges_txt = f.read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in merges_txt[1 : 49152 - 256 - 2 + 1]]
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    units = [chr(c) for c in cs]
    vocab_list = units + [u + "</w>" for u in units] + ["".join(m) for m in merges]
    vocab_list += ["<start_of_text>", "<end_of_text>"]
    vocab = {tok: i for i, tok in enumerate(vocab_list)}
    tok = Tokenizer(
        models.BPE(vocab=vocab, merges=merges, end_of_word_suffix="</w>", unk_token="<end_of_text>", fuse_unk=False)
    )
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(
                Regex(r"""<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""),
                behavior="removed",
                invert=True,
            ),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    sot, eot = vocab["<start_of_text>"], vocab["<end_of_text>"]
    tok.post_processor = processors.TemplateProcessing(
        single="<start_of_text> $A <end_of_text>", special_tokens=[("<start_of_text>", sot), ("<end_of_text>", eot)]
    )
    tok.enable_truncation(context_length)
    _ = html  # CLIP's html-unescape/ftfy cleaning does not change token counts of plain queries
    tok.save(str(path))


def _bench_export(out: Path) -> None:
    import open_clip
    import torch

    torch.manual_seed(0)
    # The fused attention fast path (eval + no_grad) has no ONNX symbolic; the plain path exports.
    torch.backends.mha.set_fastpath_enabled(False)
    model = open_clip.create_model(MODEL, pretrained=None)
    model.eval()
    size = model.visual.image_size
    image_size = int(size[0] if isinstance(size, tuple) else size)
    context_length = int(model.context_length)
    embed_dim = int(model.text_projection.shape[1])

    class ImageTower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1) * 255.0)
            self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1) * 255.0)

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            x = (pixels.permute(0, 3, 1, 2).float() - self.mean) / self.std
            return torch.nn.functional.normalize(self.model.encode_image(x), dim=-1)

    class TextTower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.normalize(self.model.encode_text(input_ids), dim=-1)

    out.mkdir(parents=True, exist_ok=True)
    pixels = torch.zeros(2, image_size, image_size, 3, dtype=torch.uint8)
    ids = torch.zeros(2, context_length, dtype=torch.int64)
    ids[:, 0], ids[:, 1] = 49406, 49407
    with torch.no_grad():
        for tower, example, name in ((ImageTower(), pixels, "pixels"), (TextTower(), ids, "input_ids")):
            path = out / ("image.onnx" if name == "pixels" else "text.onnx")
            torch.onnx.export(
                tower,
                (example,),
                str(path),
                input_names=[name],
                output_names=["embedding"],
                dynamic_axes={name: {0: "batch"}, "embedding": {0: "batch"}},
                opset_version=17,
                dynamo=False,
            )
    clip_tokenizer_json(out / "tokenizer.json", context_length)
    files: dict[str, Any] = {
        "text": {"fp32": {"path": "text.onnx", "sha256": sha256_file(out / "text.onnx")}},
        "image": {"fp32": {"path": "image.onnx", "sha256": sha256_file(out / "image.onnx")}},
        "tokenizer": {"path": "tokenizer.json", "sha256": sha256_file(out / "tokenizer.json")},
    }
    fingerprint = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]
    manifest = {
        "model": MODEL,
        "pretrained": "",
        "random_init": True,
        "recipe": RECIPE,
        "embed_dim": embed_dim,
        "image_size": image_size,
        "context_length": context_length,
        "descriptor_set": f"moments_bench_{MODEL.lower().replace('-', '_')}_random",
        "fingerprint": fingerprint,
        "inputs": {"text": "input_ids", "image": "pixels"},
        "output": "embedding",
        "files": files,
        "precision": {"gpu": "fp32"},
        "exported_by": "tests/bench/model.py",
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))


def model_dir(cache: Path) -> tuple[Path, dict[str, Any]]:
    """The cached random ViT-B-32 model directory (exported on first use) and how it was made.

    The project's exporter (`moments_export --random-weights`) is preferred; the bench's own export below is
    the fallback for a checkout whose exporter lacks the option."""
    import shutil

    root = cache / "bench-models"
    # "-trim": exported since the text graphs take trimmed ids (manifest text_trim); older caches ("-fused")
    # take all context_length positions
    official = root / "official-vit-b-32-random-trim"
    own = root / RECIPE
    if (official / "manifest.json").is_file():
        return official, {
            "dir": str(official),
            "exported_now": False,
            "how": "moments_export --random-weights (cached)",
        }
    started = time.perf_counter()
    tmp = official.with_name(official.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    root.mkdir(parents=True, exist_ok=True)
    if _official_random_export(tmp):
        tmp.rename(official)
        took = round(time.perf_counter() - started, 1)
        log(f"exported random {MODEL} with moments_export to {official} in {took:.0f} s")
        return official, {
            "dir": str(official),
            "exported_now": True,
            "export_s": took,
            "how": "moments_export --random-weights",
        }
    if (own / "manifest.json").is_file():
        return own, {"dir": str(own), "exported_now": False, "how": "bench export (cached)"}
    tmp = root / (RECIPE + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    _bench_export(tmp)
    tmp.rename(own)
    took = round(time.perf_counter() - started, 1)
    log(f"exported random {MODEL} to {own} in {took:.0f} s")
    return own, {"dir": str(own), "exported_now": True, "export_s": took, "how": "bench export"}


def shapes_model() -> Path:
    """The shapes-demo model the tests use (`.cache/test-models/shapes-demo-<hash>`, the `shapes_model_dir`
    fixture's cache), trained and exported there when missing: a tiny model, so that a search's inference is
    small and the serving path's own cost shows."""
    from tests.conftest import ensure_shapes_model

    return ensure_shapes_model()
