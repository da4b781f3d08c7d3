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

from ..data.geometry import DataConfig
from ..data.loader import image_array, iter_batches, to_pixels
from ..options import OptionError
from ..progress import resolve
from ..runtime.device import autocast, default_device

TTA_MODES = ("flip", "flip+crops")


def _views(x: torch.Tensor, mode: str, size: int) -> list[torch.Tensor]:
    if mode == "flip":
        return [x, x.flip(-1)]
    crops = list(TF.five_crop(x, [size, size]))
    return crops + [c.flip(-1) for c in crops]


def _decode_config(run, tta: str) -> DataConfig:
    """flip: the eval crop; flip+crops: the whole resized square the five crops come from."""
    if tta not in TTA_MODES:
        raise OptionError("tta", f"must be one of {', '.join(TTA_MODES)}, not '{tta}'")
    dc: DataConfig = run.data_config
    return dc if tta == "flip" else DataConfig(input_size=dc.resize_size, resize_size=dc.resize_size,
                                               interpolation=dc.interpolation, mean=dc.mean, std=dc.std)


def _batch_probs(model, data: torch.Tensor, tta: str, size: int, device: torch.device) -> np.ndarray:
    """Mean softmax over the views of one uint8 batch."""
    x = to_pixels(data, device)
    p = 0
    views = _views(x, tta, size)
    for v in views:
        with autocast(device):
            logits = model(v.contiguous(memory_format=torch.channels_last))
        p = p + logits.float().softmax(-1)
    return (p / len(views)).cpu().numpy()


@torch.no_grad()
def predict_proba_tta(run, images: Sequence[str | Path], tta: str, batch_size: int = 32,
                      progress=False) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """Same contract as :meth:`transferlab.run.Run.predict_proba_paths`: (probs [n_ok, k], skipped)."""
    decode_dc = _decode_config(run, tta)
    device = default_device()
    model = run.model.to(device).eval()
    paths = [str(p) for p in images]
    out: list[np.ndarray] = []
    skipped: list[tuple[str, str]] = []
    try:
        with resolve(progress)(f"predict (tta {tta})", len(paths)) as advance:
            for b in iter_batches(paths, decode_dc, batch_size, pin_memory=device.type == "cuda"):
                skipped += [(paths[i], why) for i, why in b.failed]
                if b.indices:
                    out.append(_batch_probs(model, b.data, tta, run.data_config.input_size, device))
                advance(len(b.indices) + len(b.failed))
    finally:
        model.to("cpu")
    k = len(run.classes)
    return (np.concatenate(out) if out else np.zeros((0, k), np.float32)), skipped


@torch.no_grad()
def predict_proba_tta_arrays(run, images: list, tta: str, batch_size: int = 32) -> np.ndarray:
    """TTA for in-memory images (and paths): [n, k]; an unreadable image raises ImageError."""
    decode_dc = _decode_config(run, tta)
    device = default_device()
    model = run.model.to(device).eval()
    arrays = [image_array(i, decode_dc) for i in images]
    try:
        out = [_batch_probs(model, torch.from_numpy(np.stack(arrays[s:s + batch_size])).permute(0, 3, 1, 2), tta,
                            run.data_config.input_size, device) for s in range(0, len(arrays), batch_size)]
    finally:
        model.to("cpu")
    return np.concatenate(out) if out else np.zeros((0, len(run.classes)), np.float32)
