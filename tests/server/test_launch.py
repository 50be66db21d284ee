"""`make serve` remembers that the default model's weights were unavailable and falls back at once."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from moments_server.launch import FALLBACK, UNAVAILABLE_MARK, choose_model


def test_a_remembered_unavailable_default_falls_back_without_probing(shapes_model_dir: Path, tmp_path: Path) -> None:
    (tmp_path / FALLBACK).symlink_to(shapes_model_dir, target_is_directory=True)
    (tmp_path / UNAVAILABLE_MARK).touch()
    args = argparse.Namespace(model=None, pretrained=None, checkpoint=None, models_dir=str(tmp_path))
    started = time.monotonic()
    assert choose_model(args) == tmp_path / FALLBACK
    assert time.monotonic() - started < 2  # the export probe (a torch import, a weights look-up) takes ~8 s
