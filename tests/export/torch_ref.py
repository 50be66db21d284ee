"""Torch-side references for the export tests, run as a subprocess so torch stays out of pytest.

python torch_ref.py save-checkpoint --model-config CFG --seed S --out ckpt.pt
python torch_ref.py embed --model NAME [--model-config CFG] (--random-seed S | --checkpoint P)
                          --ids ids.npy --pixels px.npy --out ref.npz
python torch_ref.py tokenize --model NAME --texts texts.json --out ids.npy
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def _model(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    import open_clip
    import torch

    if args.model_config:
        open_clip.add_model_config(args.model_config)
    if args.checkpoint:
        m = open_clip.create_model(args.model, pretrained=None, load_weights=False)
        open_clip.load_checkpoint(m, args.checkpoint)
    else:
        torch.manual_seed(args.random_seed)
        m = open_clip.create_model(args.model, pretrained=None)
    return m.eval()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("cmd", choices=["save-checkpoint", "embed", "tokenize"])
    p.add_argument("--model")
    p.add_argument("--model-config")
    p.add_argument("--random-seed", type=int, default=0)
    p.add_argument("--checkpoint")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ids")
    p.add_argument("--pixels")
    p.add_argument("--texts")
    p.add_argument("--out", required=True)
    args = p.parse_args()

    import torch
    import torch.nn.functional as F

    if args.cmd == "tokenize":
        import open_clip

        texts = json.loads(Path(args.texts).read_text(encoding="utf-8"))
        np.save(args.out, open_clip.get_tokenizer(args.model)(texts).numpy())
        return
    if args.cmd == "save-checkpoint":
        args.random_seed = args.seed
        m = _model(args)
        torch.save(m.state_dict(), args.out)
        return
    m = _model(args)
    cfg = m.visual.preprocess_cfg
    mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    ids = torch.from_numpy(np.load(args.ids))
    px = torch.from_numpy(np.load(args.pixels)).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        t = F.normalize(m.encode_text(ids), dim=-1).numpy()
        i = F.normalize(m.encode_image((px - mean) / std), dim=-1).numpy()
    np.savez(args.out, text=t, image=i)


if __name__ == "__main__":
    main()
