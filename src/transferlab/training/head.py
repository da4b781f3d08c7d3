"""Mode ``head``: an MLP on cached pooled features; :func:`fit_head` is also the frozen-trunk
warm-up of fine-tuning. Features are extracted once per split (sharded over DDP ranks) and
cached, so heads train in seconds."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.datasets import ImageDataset
from ..errors import DataError
from ..features import extract_view
from ..models.classifier import Backbone
from ..models.heads import build_head
from ..models.views import with_options
from ..probe import fold_rows
from ..runtime.distributed import finish_distributed, gather, init_distributed, is_main, rank, world_size
from .job import Fitted, Job
from .options import HeadOptions


def sharded_features(bb: Backbone, ds: ImageDataset, *, progress: bool, description: str,
                     device: torch.device | None = None, flip: bool | None = None):
    """:func:`transferlab.features.extract` with the images split across ranks, then gathered:
    every rank gets (features [n_ok, d], labels [n_ok], ok [n], skipped) in dataset order."""
    n, w, r = len(ds), world_size(), rank()
    mine = np.arange(r, n, w)
    f = extract_view(bb, [ds.paths[i] for i in mine], flip=flip, progress=progress and is_main(),
                     description=description, device=device)
    parts = gather((mine, f.features, f.ok, f.skipped))
    ok = np.zeros(n, bool)
    feats = np.zeros((n, bb.feature_dim), np.float32)
    skipped: list = []
    for idx, fe, okk, sk in parts:
        ok[idx] = okk
        feats[idx[okk]] = fe
        skipped += list(sk)
    order = {p: i for i, p in enumerate(ds.paths)}
    skipped.sort(key=lambda s: order.get(s[0], 0))
    return feats[ok], ds.labels[ok], ok, skipped


def split_features(bb: Backbone, tr: ImageDataset, va: ImageDataset, *, progress: bool,
                   device: torch.device | None = None):
    """Features of the train and validation splits; the validation tuple is all None (and no
    skipped files) when there is no validation split."""
    train = sharded_features(bb, tr, progress=progress, description="features (train)", device=device)
    if not len(va):
        return train, (None, None, None, [])
    return train, sharded_features(bb, va, progress=progress, description="features (val)", device=device)


# ----------------------------------------------------------------------------------------------
# Heads trained on cached features (mode "head", and the frozen phase of "finetune")
# ----------------------------------------------------------------------------------------------
@dataclass
class HeadResult:
    head: nn.Module
    history: list[dict]
    best_epoch: int
    val_loss: float | None
    val_acc: float | None
    train_loss: float
    train_acc: float


def fit_head(spec: dict, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray | None, np.ndarray | None],
             fit: HeadOptions, seed: int = 0) -> HeadResult:
    """AdamW + cosine on in-memory features; early stopping on validation loss (best weights kept).
    Without a validation set it trains ``fit.epochs`` epochs and keeps the last weights.
    Runs on one thread: the matmuls are tiny, and extra OpenMP threads only spin (badly so on a
    busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fit_head(spec, train, val, fit, seed)
    finally:
        torch.set_num_threads(threads)


def _head_epoch(head: nn.Module, xt: torch.Tensor, yt: torch.Tensor, g: torch.Generator, step) -> dict:
    """One pass over the training features in a seeded order; ``step(loss)`` does the update."""
    head.train()
    perm = torch.randperm(len(xt), generator=g)
    tot = cor = 0.0
    for i in range(0, len(xt), step.batch_size):
        idx = perm[i : i + step.batch_size]
        logits = head(xt[idx])
        loss = F.cross_entropy(logits, yt[idx], label_smoothing=step.label_smoothing)
        step(loss)
        tot += loss.item() * len(idx)
        cor += float((logits.argmax(1) == yt[idx]).sum())
    return {"train_loss": tot / len(xt), "train_acc": cor / len(xt)}


class _Step:
    """zero_grad + backward + AdamW + one-cycle step."""

    def __init__(self, head: nn.Module, fit: HeadOptions, n: int):
        self.batch_size, self.label_smoothing = fit.batch_size, fit.label_smoothing
        self.opt = torch.optim.AdamW(head.parameters(), lr=fit.lr, weight_decay=fit.weight_decay)
        steps = max(fit.epochs * math.ceil(n / fit.batch_size), 20)
        self.sched = torch.optim.lr_scheduler.OneCycleLR(self.opt, max_lr=fit.lr, total_steps=steps, pct_start=0.1)

    def __call__(self, loss: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()


def _fit_head(spec, train, val, fit: HeadOptions, seed: int) -> HeadResult:
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    head = build_head(spec)
    xt, yt = torch.from_numpy(train[0]).float(), torch.from_numpy(train[1]).long()
    has_val = val[0] is not None and val[1] is not None and len(val[1]) > 0
    xv = torch.from_numpy(val[0]).float() if has_val else None
    yv = torch.from_numpy(val[1]).long() if has_val else None
    step = _Step(head, fit, len(xt))
    best = (math.inf, 0, copy.deepcopy(head.state_dict()))
    history: list[dict] = []
    bad = 0
    for ep in range(1, fit.epochs + 1):
        row = {"epoch": ep, **_head_epoch(head, xt, yt, g, step)}
        if has_val:
            head.eval()
            with torch.no_grad():
                lv = head(xv)
                row["val_loss"] = float(F.cross_entropy(lv, yv))
                row["val_acc"] = float((lv.argmax(1) == yv).float().mean())
            if row["val_loss"] < best[0] - 1e-4:
                best, bad = (row["val_loss"], ep, copy.deepcopy(head.state_dict())), 0
            else:
                bad += 1
        history.append(row)
        if has_val and bad >= fit.patience:
            break
    if has_val:
        head.load_state_dict(best[2])
    head.eval()
    b = history[best[1] - 1] if has_val else history[-1]
    return HeadResult(head, history, b["epoch"], b.get("val_loss"), b.get("val_acc"), b["train_loss"],
                      b["train_acc"])


def score(head: nn.Module, x: np.ndarray | None, y: np.ndarray | None, split: str) -> dict:
    """``{split}_loss`` and ``{split}_acc`` of a head on features (None without data)."""
    if x is None or y is None or not len(y):
        return {f"{split}_loss": None, f"{split}_acc": None}
    p = head_probs(head, x)
    loss = float(F.nll_loss(torch.from_numpy(np.log(np.clip(p, 1e-12, 1))), torch.from_numpy(y)))
    return {f"{split}_loss": loss, f"{split}_acc": float((p.argmax(1) == y).mean())}


def head_probs(head: nn.Module, x: np.ndarray | None) -> np.ndarray | None:
    if x is None:
        return None
    with torch.no_grad():
        return head.eval()(torch.from_numpy(x).float()).softmax(-1).numpy()


def _holdout(xt: np.ndarray, yt: np.ndarray, seed: int, mirror: np.ndarray | None = None):
    """15 % of the training photos held out for early stopping when there is no val split (with
    mirrored rows: the kept photos' mirrors join the training rows, held-out photos are scored on
    their averaged features)."""
    from sklearn.model_selection import train_test_split

    strat = yt if np.bincount(yt).min() >= 2 else None
    a, b = train_test_split(np.arange(len(yt)), test_size=0.15, random_state=seed, stratify=strat)
    xa, ya, xb = fold_rows(xt, yt, a, b, mirror)
    return (xa, ya), (xb, yt[b])


def _mirrored_rows(job: Job, xt, yt, ok_t, device):
    """The training photos' mirrored features, rows aligned with ``xt`` (feature augmentation)."""
    xm, _, ok_m, _ = sharded_features(job.backbone, job.train, progress=job.progress, flip=True, device=device,
                                      description="features (train)")
    return xt[ok_m[ok_t]], yt[ok_m[ok_t]], xm[ok_t[ok_m]]


def train_head(job: Job) -> Fitted:
    """MLP head (dropout) on cached pooled features, AdamW, early stopping on validation loss.
    With no validation split, 15 % of the training images are held out for the stopping rule.
    ``feature_aug="flip"``: mirrored rows in training, a run backbone averaging flips (``:flip``)."""
    o, bb = job.options, job.backbone
    aug = getattr(o, "feature_aug", "none") == "flip"
    run_bb = with_options(bb, flip=True) if aug else bb
    device = init_distributed() if world_size() > 1 else None
    k = len(job.train.classes)
    xt, yt, ok_t, sk_t = sharded_features(bb, job.train, progress=job.progress, description="features (train)",
                                          device=device, flip=False if aug else None)
    xm = None
    if aug:
        xt, yt, xm = _mirrored_rows(job, xt, yt, ok_t, device)
    xv = yv = ok_v = None
    sk_v: list = []
    if len(job.val):
        xv, yv, ok_v, sk_v = sharded_features(run_bb, job.val, progress=job.progress, description="features (val)",
                                              device=device)
    if world_size() > 1:
        finish_distributed()
    if len(np.unique(yt)) < 2:
        raise DataError("the training split has readable images of fewer than 2 classes")
    spec = {"type": "mlp", "in": bb.feature_dim, "hidden": o.hidden, "out": k, "dropout": o.dropout}
    fit = (xt, yt) if xm is None else (np.concatenate([xt, xm]), np.concatenate([yt, yt]))
    ev, selection = (xv, yv), "val"
    if xv is None or not len(yv):  # hold out part of train only for early stopping
        fit, ev = _holdout(xt, yt, job.seed, xm)
        selection = "holdout-15%"
    r = fit_head(spec, fit, ev, o, job.seed)
    xe = xt if xm is None else (xt + xm) / 2
    train_acc = float((head_probs(r.head, xe).argmax(1) == yt).mean())
    calibration = None
    if selection != "val":
        calibration = (np.log(np.clip(head_probs(r.head, ev[0]), 1e-12, 1)), ev[1], selection)
    return Fitted(
        head=r.head, head_spec=spec, val_probs=head_probs(r.head, xv), val_ok=ok_v, train_accuracy=train_acc,
        skipped=sk_t + sk_v,
        info={"hidden": o.hidden, "dropout": o.dropout, "lr": o.lr, "weight_decay": o.weight_decay,
              "best_epoch": r.best_epoch, "epochs_run": len(r.history), "selection": selection,
              "label_smoothing": o.label_smoothing, **({"feature_aug": "flip"} if aug else {})},
        history=r.history, best_epoch=r.best_epoch, backbone=run_bb if aug else None, calibration=calibration,
    )
