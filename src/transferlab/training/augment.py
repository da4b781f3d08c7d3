"""Training data for fine-tuning: timm's augmentation at the backbone's own input size and
interpolation (no Normalize: that is a layer of the model), MixUp / CutMix, seeded workers."""

from __future__ import annotations

import numpy as np
import torch

from ..data.geometry import DataConfig
from ..data.images import BadImage, load_rgb
from ..options import Choice
from .options import Augment, FinetuneOptions


def train_transform(dc: DataConfig, aug: str = "light"):
    """timm's ImageNet training transform at the backbone's input size and interpolation, without
    Normalize (normalisation is a layer of the model): uint8 tensor [3, S, S] out.
    ``light``: random-resized crop (35-100 % of the area), flip, colour jitter 0.2;
    ``randaug``: plus RandAugment (m7); ``none``: the eval resize + centre crop."""
    from timm.data import create_transform

    aug = Choice.of(Augment)("aug", aug)
    if aug == "none":
        from torchvision.transforms.v2 import functional as TF

        return lambda img: TF.pil_to_tensor(dc.resize_crop(img))
    return create_transform(
        dc.input_size, is_training=True, interpolation=dc.interpolation, scale=(0.35, 1.0),
        color_jitter=0.2, auto_augment="rand-m7-mstd0.5" if aug == "randaug" else None,
        mean=dc.mean, std=dc.std, normalize=False,
    )


class AugmentedImages(torch.utils.data.Dataset):
    """(uint8 [3, S, S], label) per readable image; unreadable files were filtered out already by
    the feature pass, so a failure here (file changed since) falls back to a black image."""

    def __init__(self, paths: list[str], labels: np.ndarray, dc: DataConfig, aug: str):
        self.paths, self.labels, self.dc = paths, labels, dc
        self.transform = train_transform(dc, aug)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            x = self.transform(load_rgb(self.paths[i], min_side=self.dc.resize_size))
        except (BadImage, OSError):
            x = torch.zeros((3, self.dc.input_size, self.dc.input_size), dtype=torch.uint8)
        return x, int(self.labels[i])


def seed_worker(worker_id: int) -> None:
    import random

    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


def mixer(o: FinetuneOptions, num_classes: int):
    """timm's batch-wise Mixup / CutMix (soft targets carry the label smoothing), or None."""
    if not (float(o.mixup) > 0 or float(o.cutmix) > 0):
        return None
    from timm.data import Mixup

    return Mixup(mixup_alpha=float(o.mixup), cutmix_alpha=float(o.cutmix),
                 label_smoothing=float(o.label_smoothing), num_classes=num_classes)


