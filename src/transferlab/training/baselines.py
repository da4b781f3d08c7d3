"""Baselines without transfer: what pretrained features are compared against.

- :func:`raw_pixels`: the same logistic regression as a linear run (:mod:`transferlab.probe`),
  on the pixels themselves, shrunk to ``size`` x ``size``.
- :func:`small_cnn`: a four-block CNN trained from random weights on the same photos.

Both take the train and validation :class:`~transferlab.data.datasets.ImageDataset` that a run
would use (``ds.train_val_split(fraction, seed)``), so a notebook compares like with like.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from ..data.datasets import ImageDataset
from ..data.geometry import DataConfig
from ..data.loader import decode_array
from ..display import card, one_line, percent
from ..options import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, Interval, Options, Rule
from ..probe import fit_linear_probe
from ..progress import resolve

PIXELS = Interval(int, 4, 1024, unit="pixels")  # baselines run on tiny images too (8-px digits)


@dataclass
class BaselineResult:
    """Validation accuracy and wall time of one baseline (``history``: per-epoch rows)."""

    name: str
    accuracy: float
    seconds: float
    n_train: int
    n_val: int
    settings: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)

    def __repr__(self) -> str:
        return one_line("BaselineResult", {"name": self.name, "accuracy": round(self.accuracy, 4),
                                           "seconds": round(self.seconds, 1), "n_train": self.n_train,
                                           "n_val": self.n_val})

    def _repr_html_(self) -> str:
        return card(f"Baseline: {self.name}", {"validation accuracy": percent(self.accuracy),
                                              "seconds": f"{self.seconds:.1f}", "train / val": f"{self.n_train} / "
                                              f"{self.n_val}", **self.settings})


def pixels(ds: ImageDataset, size: int) -> np.ndarray:
    """uint8 [n, size, size, 3]: every photo squashed to ``size`` (no crop: small inputs such as
    64-px satellite patches or 8-px digits have no border to spare). Unreadable photos raise."""
    dc = DataConfig(input_size=size, resize_size=size)
    return np.stack([decode_array(p, dc) for p in ds.paths]) if len(ds) else np.zeros((0, size, size, 3), np.uint8)


def raw_pixels(train: ImageDataset, val: ImageDataset, size: int = 32, seed: int = 0) -> BaselineResult:
    """Logistic regression on raw pixels (scaled to [0, 1]), C chosen on ``val`` as a linear run
    chooses it on features."""
    size = PIXELS("size", size)
    t0 = time.perf_counter()
    xt = pixels(train, size).reshape(len(train), -1).astype(np.float32) / 255
    xv = pixels(val, size).reshape(len(val), -1).astype(np.float32) / 255
    _, c, scores = fit_linear_probe(xt, train.labels, xv, val.labels, len(train.classes), seed=seed)
    return BaselineResult(f"raw pixels {size}x{size}, logistic regression", float(scores[c]),
                          time.perf_counter() - t0, len(train), len(val), {"C": c, "size": size})


@dataclass(frozen=True)
class ScratchOptions(Options):
    """How :func:`small_cnn` trains: AdamW with a one-cycle schedule, random flips."""

    constraints: ClassVar[dict[str, Rule]] = {"size": PIXELS, "epochs": AT_LEAST_ONE, "width": AT_LEAST_ONE,
                                              "lr": POSITIVE, "batch_size": AT_LEAST_ONE, "seed": NON_NEGATIVE}

    size: int = 64
    epochs: int = 20
    width: int = 32
    lr: float = 3e-3
    batch_size: int = 64
    seed: int = 0


def cnn(k: int, width: int = 32) -> nn.Sequential:
    """Four conv-BN-ReLU blocks, each halving the image and doubling the channels, then a global
    average pool and a linear layer: about 0.4 M parameters at ``width`` 32."""
    layers, c_in = [], 3
    for i in range(4):
        c_out = width * 2 ** i
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
                   nn.MaxPool2d(2)]
        c_in = c_out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, k))


def _tensor(x: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(x).permute(0, 3, 1, 2).float().div_(255)
    return (t - 0.5) / 0.25


def small_cnn(train: ImageDataset, val: ImageDataset, options: ScratchOptions | None = None, *,
              progress=True, **kw) -> BaselineResult:
    """Train :func:`cnn` from random weights; validation accuracy after the last epoch.

    Written out rather than through :class:`~transferlab.training.learner.Learner`: that loop
    streams files through augmentation workers into a pretrained :class:`ImageClassifier`; a
    baseline of a thousand small images fits in memory and needs none of it."""
    o = (options or ScratchOptions(**kw)).validate()
    t0 = time.perf_counter()
    xt, xv = _tensor(pixels(train, o.size)), _tensor(pixels(val, o.size))
    yt, yv = torch.as_tensor(train.labels, dtype=torch.long), torch.as_tensor(val.labels, dtype=torch.long)
    g = torch.Generator().manual_seed(o.seed)
    torch.manual_seed(o.seed)
    net = cnn(len(train.classes), o.width)
    steps = o.epochs * -(-len(xt) // o.batch_size)
    opt = torch.optim.AdamW(net.parameters(), lr=o.lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=o.lr, total_steps=steps)
    history = []
    with resolve(progress)("small CNN from scratch", o.epochs) as bar:
        for epoch in range(o.epochs):
            loss = _epoch(net, xt, yt, opt, sched, o.batch_size, g)
            acc = _accuracy(net, xv, yv)
            history.append({"epoch": epoch + 1, "train_loss": loss, "val_accuracy": acc})
            bar(1, info=f"val {acc:.1%}")
    return BaselineResult(f"small CNN from scratch ({sum(p.numel() for p in net.parameters()) / 1e6:.2f} M params)",
                          history[-1]["val_accuracy"], time.perf_counter() - t0, len(train), len(val),
                          {"size": o.size, "epochs": o.epochs, "width": o.width}, history)


def _epoch(net, x, y, opt, sched, batch_size: int, g: torch.Generator) -> float:
    net.train()
    order, total = torch.randperm(len(x), generator=g), 0.0
    for s in range(0, len(x), batch_size):
        idx = order[s:s + batch_size]
        xb = x[idx]
        flip = torch.rand(len(idx), generator=g) < 0.5
        xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
        loss = nn.functional.cross_entropy(net(xb), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        total += loss.item() * len(idx)
    return total / len(x)


@torch.no_grad()
def _accuracy(net, x, y) -> float:
    net.eval()
    pred = torch.cat([net(x[s:s + 256]).argmax(1) for s in range(0, len(x), 256)])
    return float((pred == y).float().mean()) if len(y) else float("nan")


def digits_folder(out: str | Path, size: int = 64) -> Path:
    """scikit-learn's 1,797 real 8x8 handwritten digits written as a class-per-folder PNG dataset
    under ``out/digits`` (dark ink on white, like a scanned page), made once."""
    from PIL import Image
    from sklearn.datasets import load_digits

    root = Path(out) / "digits"
    digits = load_digits()
    if len(list(root.glob("*/*.png"))) == len(digits.images):
        return root
    for i, (img, y) in enumerate(zip(digits.images, digits.target, strict=True)):
        d = root / str(y)
        d.mkdir(parents=True, exist_ok=True)
        px = (255 - img * (255 / 16)).astype(np.uint8)
        Image.fromarray(px, "L").resize((size, size), Image.Resampling.BICUBIC).save(d / f"{i}.png")
    return root
