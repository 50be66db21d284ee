"""`make serve`: make sure a model is exported, then run the server on the embedded store.

With no model named it serves ViT-B-32 (laion2b_s34b_b79k) when those weights are cached or can be
fetched; when they cannot (offline), it says so in a banner and serves the offline `shapes-demo` model.
A model named explicitly never falls back. Only the export subprocess imports torch.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

DEFAULT_MODEL, DEFAULT_PRETRAINED = "ViT-B-32", "laion2b_s34b_b79k"
FALLBACK = "shapes-demo"
EXIT_WEIGHTS_UNAVAILABLE = 3

BANNER = """
================================================================================
 The {model} ({pretrained}) weights are not cached and cannot be fetched here.
 Serving the offline `shapes-demo` model instead: it knows drawn shapes
 ("a red circle"), not the open world. For real CLIP search, either
   - warm the cache on a machine with internet (HF_HOME / ~/.cache/huggingface)
     and run `make serve` again, or
   - export a local checkpoint: make serve MODEL=ViT-B-32 CHECKPOINT=path/to/open_clip_model.safetensors
================================================================================
"""


def _existing(models_dir: Path, name: str) -> Path | None:
    candidate = models_dir / name
    return candidate if (candidate / "manifest.json").is_file() else None


def export(model: str, pretrained: str | None, checkpoint: str | None, models_dir: Path) -> tuple[int, Path | None]:
    """Run `python -m moments_export`; returns (exit code, model directory from its last stdout line)."""
    cmd = [sys.executable, "-m", "moments_export", "--model", model, "--models-dir", str(models_dir)]
    if pretrained:
        cmd += ["--pretrained", pretrained]
    if checkpoint:
        cmd += ["--checkpoint", checkpoint]
    print(f"exporting {model} ...", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    for line in lines[:-1]:
        print(line)
    directory = Path(lines[-1].strip()) if proc.returncode == 0 and lines else None
    return proc.returncode, directory


def choose_model(args: argparse.Namespace) -> Path:
    models_dir = Path(args.models_dir)
    if args.model:  # explicit: export if missing, never fall back
        name = args.model if args.model == FALLBACK or not args.pretrained else f"{args.model}__{args.pretrained}"
        found = None if args.checkpoint else _existing(models_dir, name)
        if found:
            return found
        code, directory = export(args.model, args.pretrained, args.checkpoint, models_dir)
        if code != 0 or directory is None:
            sys.exit(f"make serve: exporting {args.model} failed (exit {code}); see the messages above")
        return directory
    found = _existing(models_dir, f"{DEFAULT_MODEL}__{DEFAULT_PRETRAINED}")
    if found:
        return found
    code, directory = export(DEFAULT_MODEL, DEFAULT_PRETRAINED, None, models_dir)
    if code == 0 and directory is not None:
        return directory
    if code != EXIT_WEIGHTS_UNAVAILABLE:
        sys.exit(f"make serve: exporting {DEFAULT_MODEL} failed (exit {code}); see the messages above")
    print(BANNER.format(model=DEFAULT_MODEL, pretrained=DEFAULT_PRETRAINED), file=sys.stderr, flush=True)
    found = _existing(models_dir, FALLBACK)
    if found:
        return found
    code, directory = export(FALLBACK, None, None, models_dir)
    if code != 0 or directory is None:
        sys.exit(f"make serve: exporting {FALLBACK} failed (exit {code})")
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model")
    parser.add_argument("--pretrained")
    parser.add_argument("--checkpoint")
    parser.add_argument("--models-dir", default="models")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--listen", default="127.0.0.1:50051")
    args, server_args = parser.parse_known_args()
    model_dir = choose_model(args)
    argv = [
        sys.executable,
        "-m",
        "moments_server",
        "--model-dir",
        str(model_dir),
        "--store",
        f"embedded:{args.data_dir}",
        "--listen",
        args.listen,
        *server_args,
    ]
    os.execv(sys.executable, argv)


if __name__ == "__main__":
    main()
