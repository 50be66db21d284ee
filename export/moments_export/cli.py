"""``python -m moments_export``: export an OpenCLIP model (or train + export shapes-demo) for Moments.

    python -m moments_export --model NAME [--pretrained TAG | --checkpoint PATH] [--models-dir models]
                             [--out DIR] [--fp16 auto|yes|no] [--fused yes|no] [--seed N]

Writes ``<models-dir>/<slug>`` (or ``--out``) with text.onnx, image.onnx, *.fused.onnx, optional *.fp16[.fused].onnx,
tokenizer.json and manifest.json, and prints the directory as the last line of stdout. Exit codes:
0 ok, 2 usage, 3 weights unavailable (offline), 4 verification failed. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from moments_export import EXIT_OK, EXIT_USAGE, EXIT_VERIFY, ExportError, UsageError, VerificationFailed

SHAPES_DEMO = "shapes-demo"
console = Console(stderr=True)


@dataclass
class ExportOptions:
    model: str
    pretrained: str | None = None
    checkpoint: str | None = None
    models_dir: Path = Path("models")
    out: Path | None = None
    fp16: str = "auto"
    seed: int = 0
    model_config: Path | None = None
    random_weights: bool = False
    steps: int | None = None  # shapes-demo training steps (tests / tuning)
    fused: str = "yes"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m moments_export",
        description="Export the text and image towers of an OpenCLIP model to ONNX for the Moments server.",
    )
    p.add_argument("--model", required=True, help="OpenCLIP model name (e.g. ViT-B-32) or 'shapes-demo'")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--pretrained", help="OpenCLIP pretrained tag (e.g. laion2b_s34b_b79k)")
    src.add_argument("--checkpoint", help="local checkpoint file (state dict) of the --model architecture")
    src.add_argument("--random-weights", action="store_true", help="random weights (tests only)")
    p.add_argument("--models-dir", type=Path, default=Path("models"), help="parent of the model directory")
    p.add_argument("--out", type=Path, help="model directory (default: <models-dir>/<slug>)")
    p.add_argument(
        "--fp16",
        choices=["auto", "yes", "no"],
        default="auto",
        help="write fp16 graphs for GPU serving: auto = when a GPU is present",
    )
    p.add_argument(
        "--fused",
        choices=["yes", "no"],
        default="yes",
        help="also write graphs with fused attention/LayerNorm/Gelu (onnxruntime operators), verified",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of shapes-demo training and of verification inputs")
    p.add_argument("--model-config", type=Path, help="register an extra open_clip model config (JSON; name = stem)")
    p.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    return p


@contextmanager
def _progress() -> Iterator[Progress]:
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
        disable=not console.is_terminal and os.environ.get("MOMENTS_EXPORT_PROGRESS") != "1",
    ) as prog:
        yield prog


class _Steps:
    """One rich progress line per step, plus a plain log line when stderr is not a terminal."""

    def __init__(self, prog: Progress) -> None:
        self.prog = prog
        self.t0 = time.monotonic()

    @contextmanager
    def step(self, name: str, total: int | None = None) -> Iterator[Any]:
        task = self.prog.add_task(name, total=total or 1)
        t = time.monotonic()
        if not console.is_terminal:
            console.print(f"[moments_export] {name} ...", highlight=False, markup=False)

        def advance(done: int, total_: int | None = None) -> None:
            self.prog.update(task, completed=done, total=total_ or total or 1)

        yield advance
        self.prog.update(task, completed=total or 1)
        if not console.is_terminal:
            console.print(f"[moments_export] {name} done in {time.monotonic() - t:.1f}s", highlight=False, markup=False)


def _load(opts: ExportOptions, steps: _Steps) -> tuple[Any, dict[str, Any] | None]:
    from moments_export import load

    if opts.model == SHAPES_DEMO:
        if opts.pretrained or opts.checkpoint or opts.random_weights:
            raise UsageError("shapes-demo is trained here; it takes no --pretrained/--checkpoint/--random-weights")
        from moments_export import shapes_demo

        st = shapes_demo.TrainSettings(seed=opts.seed)
        if opts.steps:
            st.steps = opts.steps
        with steps.step(f"train shapes-demo (seed {opts.seed})", total=st.steps) as adv:
            model, facts = shapes_demo.train(st, lambda i, n, _loss: adv(i, n))
        loaded = load._describe(model, SHAPES_DEMO, None, None)
        training_identity = {
            "seed": st.seed,
            "steps": st.steps,
            "batch": st.batch,
            "lr": st.lr,
            "warmup": st.warmup,
            "weight_decay": st.weight_decay,
            "train_images": st.train_images,
            "config": shapes_demo.SHAPES_DEMO_CFG,
            "templates": list(shapes_demo.TEMPLATES),
        }
        return loaded, {"identity": training_identity, "facts": facts}
    if opts.model_config:
        import open_clip

        if not opts.model_config.is_file():
            raise UsageError(f"--model-config {opts.model_config} not found")
        open_clip.add_model_config(opts.model_config)
    with steps.step(f"load {opts.model}"):
        loaded = load.load_model(opts.model, opts.pretrained, opts.checkpoint, random_weights=opts.random_weights)
    if opts.random_weights:
        return loaded, {"identity": {"random_weights": True, "seed": opts.seed}, "facts": {}}
    return loaded, None


def export_model(opts: ExportOptions) -> Path:
    """Do the whole export; return the final model directory. Raises :class:`ExportError`."""
    import torch

    torch.manual_seed(opts.seed)
    torch.backends.mha.set_fastpath_enabled(False)
    from moments_export import fp16 as fp16_mod
    from moments_export import manifest as mf
    from moments_export import onnx_export, tokenizer, variants, verify

    with _progress() as prog:
        steps = _Steps(prog)
        loaded, training = _load(opts, steps)
        if opts.random_weights:
            torch.manual_seed(opts.seed)
        slug = loaded.slug if not opts.random_weights else f"{loaded.slug}__random-seed{opts.seed}"
        final = opts.out or (opts.models_dir / slug)
        final = final.absolute()
        final.parent.mkdir(parents=True, exist_ok=True)
        work = final.parent / f".{final.name}.partial-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        try:
            model = loaded.model
            with steps.step("export text tower (onnx)"):
                trim = onnx_export.export_text(model, loaded.context_length, loaded.embed_dim, work / mf.TEXT_FP32)
            with steps.step("export image tower (onnx)"):
                onnx_export.export_image(
                    model, loaded.image_size, loaded.mean, loaded.std, loaded.embed_dim, work / mf.IMAGE_FP32
                )
            with steps.step("tokenizer.json + parity with open_clip"):
                tok = tokenizer.write_tokenizer(loaded.tokenizer, work / mf.TOKENIZER)
                parity = tokenizer.check_parity(loaded.tokenizer, tok, seed=0)
            if parity["unexplained_count"]:
                ex = parity["unexplained"][0]
                raise VerificationFailed(
                    f"tokenizer.json differs from open_clip on {parity['unexplained_count']} corpus strings, "
                    f"e.g. {ex['text']!r}: {ex['open_clip'][:12]} vs {ex['tokenizer_json'][:12]}"
                )
            with steps.step("verify fp32 graphs against torch"):
                refs = verify.references(loaded)
                v32 = verify.verify_pair(
                    work / mf.TEXT_FP32, work / mf.IMAGE_FP32, refs, loaded.embed_dim, verify.FP32_MIN_COSINE
                )
            if not v32["ok"]:
                raise VerificationFailed(
                    f"fp32 graphs disagree with torch: text cosine min {v32['text_cosine_min']:.6f}, image "
                    f"{v32['image_cosine_min']:.6f} (need >= {verify.FP32_MIN_COSINE}); batch consistency "
                    f"{v32['text']['batch_consistency_cosine_min']:.6f}/{v32['image']['batch_consistency_cosine_min']:.6f}"
                )
            want16 = opts.fp16 == "yes" or (opts.fp16 == "auto" and fp16_mod.gpu_available())
            var = variants.export_variants(
                model, loaded, work, refs, want16, opts.fused == "yes", lambda name: steps.step(name)
            )
            v16, gpu_precision = var["fp16"], var["gpu_precision"]
            shapes_eval: dict[str, Any] | None = None
            if opts.model == SHAPES_DEMO:
                from moments_export import shapes_demo

                with steps.step("evaluate shapes-demo on held-out drawings (onnx)"):
                    shapes_eval = shapes_demo.evaluate_onnx(work, seed=opts.seed)
                if min(shapes_eval["image_to_text_top1"], shapes_eval["text_to_image_top1"]) < 0.9:
                    raise VerificationFailed(
                        f"shapes-demo top-1 below 0.9 at some frame size (each way): {shapes_eval['frames']}"
                    )

            with steps.step("manifest"):
                ident = mf.identity(
                    loaded.name,
                    loaded.pretrained,
                    loaded.checkpoint_sha256,
                    loaded.embed_dim,
                    loaded.image_size,
                    loaded.context_length,
                    loaded.mean,
                    loaded.std,
                    training["identity"] if training else None,
                )
                files: dict[str, Any] = {
                    "text": {"fp32": mf.file_entry(work, mf.TEXT_FP32)},
                    "image": {"fp32": mf.file_entry(work, mf.IMAGE_FP32)},
                    "tokenizer": mf.file_entry(work, mf.TOKENIZER),
                }
                for key in var["keys"]:
                    for tower in ("text", "image"):
                        files[tower][key] = mf.file_entry(work, mf.graph_file(tower, key))
                fp = mf.fingerprint(
                    ident,
                    files["text"]["fp32"]["sha256"],
                    files["image"]["fp32"]["sha256"],
                    files["tokenizer"]["sha256"],
                )
                manifest: dict[str, Any] = {
                    "format": mf.FORMAT,
                    "model": loaded.name,
                    "pretrained": loaded.pretrained,
                    "checkpoint_sha256": loaded.checkpoint_sha256,
                    "random_weights": bool(opts.random_weights),
                    "embed_dim": loaded.embed_dim,
                    "image_size": loaded.image_size,
                    "context_length": loaded.context_length,
                    "mean": list(loaded.mean),
                    "std": list(loaded.std),
                    "preprocess": loaded.preprocess,
                    "opset": onnx_export.OPSET,
                    "descriptor_set": mf.descriptor_set_name(
                        loaded.name, loaded.pretrained, loaded.checkpoint_sha256, fp
                    ),
                    "fingerprint": fp,
                    "files": files,
                    "precision": {"cpu": "fp32", "gpu": gpu_precision},
                    "inputs": {"text": onnx_export.TEXT_INPUT, "image": onnx_export.IMAGE_INPUT},
                    # the text graphs take ids cut after the batch's last token (towers.trim_blocker)
                    "text_trim": trim,
                    "input_layout": {
                        "text": "int64 [batch, sequence <= context_length]"
                        if trim
                        else "int64 [batch, context_length]",
                        "image": "uint8 [batch, image_size, image_size, 3] RGB",
                    },
                    "output": onnx_export.OUTPUT,
                    "tokenizer": {
                        "sot_id": int(loaded.tokenizer.sot_token_id),
                        "eot_id": int(loaded.tokenizer.eot_token_id),
                        "pad_id": tokenizer.PAD_ID,
                        "parity_checked": parity["parity_checked"],
                        "corpus_size": parity["corpus_size"],
                        "known_differences": parity["known_differences"],
                    },
                    "verification": {
                        "text_cosine_min": v32["text_cosine_min"],
                        "image_cosine_min": v32["image_cosine_min"],
                        "fp32": v32,
                        "fp16": v16,
                        "fused": var["fused"],
                    },
                    "created_at": mf.now_iso(),
                    "exporter": mf.exporter_versions(),
                }
                if training is not None:
                    manifest["training"] = training
                if shapes_eval is not None:
                    manifest["shapes_demo"] = shapes_eval
                mf.write_manifest(work, manifest)
                mf.check_model_dir(work)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        if final.exists():
            final.rename(old)
        work.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    return final


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits 2 on usage errors, 0 on --help
        return int(e.code or 0)
    opts = ExportOptions(
        model=args.model,
        pretrained=args.pretrained,
        checkpoint=args.checkpoint,
        models_dir=args.models_dir,
        out=args.out,
        fp16=args.fp16,
        seed=args.seed,
        model_config=args.model_config,
        random_weights=args.random_weights,
        steps=args.steps,
        fused=args.fused,
    )
    try:
        final = export_model(opts)
    except ExportError as e:
        console.print(f"[bold red]error:[/] {e}", highlight=False, markup=True, soft_wrap=True)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # an unexpected failure is a failed export, never a silent success
        console.print_exception()
        console.print(f"[bold red]error:[/] export failed: {e}", highlight=False)
        return EXIT_VERIFY if isinstance(e, AssertionError) else 1
    console.print(f"[green]model written:[/] {final}", highlight=False)
    sys.stdout.write(f"{final}\n")
    sys.stdout.flush()
    return EXIT_OK


__all__ = ["EXIT_USAGE", "ExportOptions", "build_parser", "export_model", "main"]
