"""Test-time augmentation: average the softmax over a few deterministic views of each image.

``flip``: the eval centre crop and its mirror (2 views, ~2x the cost).
``flip+crops``: the classic 10-crop — resize the shorter side to the backbone's ``resize_size``,
take the centre and four corner ``input_size`` crops (torchvision ``five_crop``) and their mirrors.
Views come from the backbone's own preprocessing (same resize, interpolation, crop size), so TTA
never shows the model a geometry it was not trained/evaluated with.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from . import progress as _progress
from .backbones import DataConfig
from .errors import TransferlabError
from .pipeline import autocast, default_device, iter_batches, to_pixels

TTA_MODES = ("flip", "flip+crops")


def _views(x: torch.Tensor, mode: str, size: int) -> list[torch.Tensor]:
    if mode == "flip":
        return [x, x.flip(-1)]
    crops = list(TF.five_crop(x, [size, size]))
    return crops + [c.flip(-1) for c in crops]


@torch.no_grad()
def predict_proba_tta(run, images: Sequence[str | Path], tta: str, batch_size: int = 32,
                      progress: bool = False, device: torch.device | str | None = None,
                      **_) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """Same contract as :meth:`transferlab.run.Run.predict_proba`: (probs [n_ok, k], skipped)."""
    if tta not in TTA_MODES:
        raise TransferlabError(f"--tta must be one of {', '.join(TTA_MODES)}, not '{tta}'")
    dc: DataConfig = run.data_config
    decode_dc = dc if tta == "flip" else DataConfig(
        input_size=dc.resize_size, resize_size=dc.resize_size, interpolation=dc.interpolation,
        mean=dc.mean, std=dc.std)
    device = torch.device(device) if device else default_device()
    model = run.model.to(device).eval()
    paths = [str(p) for p in images]
    out: list[np.ndarray] = []
    skipped: list[tuple[str, str]] = []
    show = progress and _progress.enabled()
    try:
        with _progress.bar(f"predict (tta {tta})", len(paths) if show else None) as advance:
            for b in iter_batches(paths, decode_dc, batch_size, pin_memory=device.type == "cuda"):
                skipped += [(paths[i], why) for i, why in b.failed]
                if b.indices:
                    x = to_pixels(b.data, device)
                    p = 0
                    views = _views(x, tta, dc.input_size)
                    for v in views:
                        with autocast(device):
                            logits = model(v.contiguous(memory_format=torch.channels_last))
                        p = p + logits.float().softmax(-1)
                    out.append((p / len(views)).cpu().numpy())
                advance(len(b.indices) + len(b.failed))
    finally:
        model.to("cpu")
    k = len(run.classes)
    return (np.concatenate(out) if out else np.zeros((0, k), np.float32)), skipped
