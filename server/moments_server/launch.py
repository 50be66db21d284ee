"""`make serve`: make sure a model is exported, then run the server on the embedded store.

With no model named it serves ViT-B-32 (laion2b_s34b_b79k) when those weights are cached or can be
fetched; when they cannot (offline), it says so in a banner and serves the offline `shapes-demo` model.
A model named explicitly never falls back. Only the export subprocess imports torch.

The probe for ViT-B-32's weights takes seconds; its failure is remembered in `<models-dir>/.default-unavailable`
for a day, so that the next `make serve` falls back at once (delete the file to probe again).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_MODEL, DEFAULT_PRETRAINED = "ViT-B-32", "laion2b_s34b_b79k"
FALLBACK = "shapes-demo"
EXIT_WEIGHTS_UNAVAILABLE = 3
UNAVAILABLE_MARK = ".default-unavailable"
REMEMBER_S = 24 * 3600.0

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


def ensure(model: str, pretrained: str | None, checkpoint: str | None, models_dir: Path) -> tuple[int, Path | None]:
    """The model's directory when already exported (a checkpoint is always re-exported), else export it."""
    name = model if model == FALLBACK or not pretrained else f"{model}__{pretrained}"
    found = None if checkpoint else _existing(models_dir, name)
    return (0, found) if found else export(model, pretrained, checkpoint, models_dir)


def _remembered_unavailable(models_dir: Path) -> bool:
    mark = models_dir / UNAVAILABLE_MARK
    try:
        age = time.time() - mark.stat().st_mtime
    except OSError:
        return False
    if age >= REMEMBER_S:
        return False
    print(
        f"make serve: {DEFAULT_MODEL} weights were unavailable {age / 60:.0f} min ago (remembered in {mark}; "
        "delete it to try again)",
        file=sys.stderr,
        flush=True,
    )
    return True


def choose_model(args: argparse.Namespace) -> Path:
    models_dir = Path(args.models_dir)
    mark = models_dir / UNAVAILABLE_MARK
    if args.model:  # explicit: never fall back
        code, directory = ensure(args.model, args.pretrained, args.checkpoint, models_dir)
    else:
        name = f"{DEFAULT_MODEL}__{DEFAULT_PRETRAINED}"
        if _existing(models_dir, name) is None and _remembered_unavailable(models_dir):
            code, directory = EXIT_WEIGHTS_UNAVAILABLE, None
        else:
            code, directory = ensure(DEFAULT_MODEL, DEFAULT_PRETRAINED, None, models_dir)
            if code == EXIT_WEIGHTS_UNAVAILABLE:
                models_dir.mkdir(parents=True, exist_ok=True)
                mark.touch()
            elif code == 0:
                mark.unlink(missing_ok=True)
        if code == EXIT_WEIGHTS_UNAVAILABLE:
            print(BANNER.format(model=DEFAULT_MODEL, pretrained=DEFAULT_PRETRAINED), file=sys.stderr, flush=True)
            code, directory = ensure(FALLBACK, None, None, models_dir)
    if code != 0 or directory is None:
        sys.exit(f"make serve: exporting the model failed (exit {code}); see the messages above")
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
        # one worker process per two cores by default (workers.py); `make serve WORKERS=1` serves from one
        *([] if "--workers" in server_args else ["--workers", "0"]),
        *server_args,
    ]
    os.execv(sys.executable, argv)


if __name__ == "__main__":
    main()
