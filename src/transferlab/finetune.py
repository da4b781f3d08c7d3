"""Trainers ``head`` (MLP on cached features) and ``finetune`` (end-to-end, fastai-style), with
checkpoint/resume and DistributedDataParallel under ``torchrun``.

Why it looks like this:

- **The frozen phase runs on cached features.** While the trunk is frozen (BatchNorm statistics
  included) it is a fixed function, so its pooled features are computed once — shared with the
  ``linear`` / ``head`` modes through the feature cache — and the head warm-up costs seconds, not
  epochs of forward passes. Only the unfrozen epochs pay for full forward + backward on
  augmented images.
- **Unfrozen phase = fastai's ``fine_tune``**: AdamW, one-cycle (warmup + cosine) schedule,
  discriminative learning rates (head ``lr``; trunk from ``lr * trunk_lr`` at the deepest group
  down geometrically by ``lr_mult`` to the stem), label smoothing, gradient clipping,
  channels_last, bf16 autocast where the hardware has it (CUDA; bf16-capable CPUs), fp16 +
  GradScaler on CUDA cards without bf16.
- **Frozen groups run in onnxruntime on CPUs without bf16** (:class:`FrozenPrefix`): with
  ``--unfreeze last:K`` their forward pass is most of a step, and it needs no gradients.
- **``wise`` < 1 keeps a WiSE-FT mix** of the fine-tuned weights and the pretrained trunk with a
  linear probe: on ~20 photos per class the mix beat both of its ends (BENCHMARKS.md, issue 3).
- **BatchNorm statistics stay frozen by default** (``bn="frozen"``): with ~20 images per class
  and CPU-sized batches, running statistics re-estimated from augmented mini-batches are noisier
  than the ImageNet ones; it also keeps DDP ranks identical without SyncBatchNorm.
  ``bn="train"`` lets the unfrozen groups' BN layers update their statistics.
- **Every epoch reseeds** (``seed``, epoch) for the sampler, augmentation workers and dropout, so
  a run resumed from its epoch-``e`` checkpoint replays the same epochs ``e+1..`` as an
  uninterrupted one.
- **Checkpoints are atomic and never unpickled**: weights as safetensors, optimizer + scheduler
  state via ``torch.save`` of plain tensors/dicts read back with ``weights_only=True``, and a
  ``state.json`` written last that names the epoch whose files are complete.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import progress as _progress
from ._io import atomic_write, save_safetensors, write_json
from .backbones import DEFAULT_BACKBONE, Backbone, DataConfig, ImageClassifier
from .data import ImageDataset
from .errors import DataError, RunError, TransferlabError
from .features import extract
from .heads import build_head
from .images import BadImage, load_rgb
from .pipeline import bf16_default, default_device, iter_batches, to_pixels
from .train import Fitted, fit_linear_probe, register_trainer

CHECKPOINT_DIR = "checkpoint"
STATE = "state.json"


# ----------------------------------------------------------------------------------------------
# Distributed helpers (torchrun sets WORLD_SIZE / RANK / LOCAL_RANK)
# ----------------------------------------------------------------------------------------------
def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def _init_distributed() -> torch.device:
    """Join the torchrun process group (gloo on CPU, nccl on CUDA); return this rank's device."""
    import torch.distributed as dist

    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if world_size() > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def _gather(obj) -> list:
    """All ranks' ``obj`` in rank order (just ``[obj]`` without a process group)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _finish_distributed() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def sharded_features(bb: Backbone, ds: ImageDataset, *, progress: bool, description: str,
                     device: torch.device | None = None):
    """:func:`transferlab.features.extract` with the images split across ranks, then gathered:
    every rank gets (features [n_ok, d], labels [n_ok], ok [n], skipped) in dataset order."""
    n, w, r = len(ds), world_size(), rank()
    mine = np.arange(r, n, w)
    f = extract(bb, [ds.paths[i] for i in mine], progress=progress and is_main(), description=description,
                device=device)
    parts = _gather((mine, f.features, f.ok, f.skipped))
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


def fit_head(spec: dict, xt: np.ndarray, yt: np.ndarray, xv: np.ndarray | None, yv: np.ndarray | None, *,
             seed: int = 0, epochs: int = 200, lr: float = 1e-3, weight_decay: float = 0.05,
             batch_size: int = 64, label_smoothing: float = 0.1, patience: int = 20,
             init: nn.Module | None = None) -> HeadResult:
    """AdamW + cosine on in-memory features; early stopping on validation loss (best weights kept).
    Without a validation set it trains ``epochs`` epochs and keeps the last weights.
    Runs on one thread: the matmuls are tiny, and extra OpenMP threads only spin (badly so on a
    busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fit_head(spec, xt, yt, xv, yv, seed=seed, epochs=epochs, lr=lr, weight_decay=weight_decay,
                         batch_size=batch_size, label_smoothing=label_smoothing, patience=patience, init=init)
    finally:
        torch.set_num_threads(threads)


def _fit_head(spec, xt, yt, xv, yv, *, seed, epochs, lr, weight_decay, batch_size, label_smoothing, patience,
              init) -> HeadResult:
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    head = init if init is not None else build_head(spec)
    Xt, Yt = torch.from_numpy(xt).float(), torch.from_numpy(yt).long()
    has_val = xv is not None and yv is not None and len(yv) > 0
    Xv = torch.from_numpy(xv).float() if has_val else None
    Yv = torch.from_numpy(yv).long() if has_val else None
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    steps = max(epochs * math.ceil(len(Xt) / batch_size), 20)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    best = (math.inf, 0, copy.deepcopy(head.state_dict()))
    history: list[dict] = []
    bad = 0
    for ep in range(1, epochs + 1):
        head.train()
        perm = torch.randperm(len(Xt), generator=g)
        tot = cor = 0.0
        for i in range(0, len(Xt), batch_size):
            idx = perm[i : i + batch_size]
            logits = head(Xt[idx])
            loss = F.cross_entropy(logits, Yt[idx], label_smoothing=label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += loss.item() * len(idx)
            cor += float((logits.argmax(1) == Yt[idx]).sum())
        row = {"epoch": ep, "train_loss": tot / len(Xt), "train_acc": cor / len(Xt)}
        if has_val:
            head.eval()
            with torch.no_grad():
                lv = head(Xv)
                row["val_loss"] = float(F.cross_entropy(lv, Yv))
                row["val_acc"] = float((lv.argmax(1) == Yv).float().mean())
            if row["val_loss"] < best[0] - 1e-4:
                best, bad = (row["val_loss"], ep, copy.deepcopy(head.state_dict())), 0
            else:
                bad += 1
        history.append(row)
        if has_val and bad >= patience:
            break
    if has_val:
        head.load_state_dict(best[2])
    head.eval()
    b = history[best[1] - 1] if has_val else history[-1]
    return HeadResult(head, history, b["epoch"], b.get("val_loss"), b.get("val_acc"), b["train_loss"],
                      b["train_acc"])


def _score(head: nn.Module, x: np.ndarray | None, y: np.ndarray | None, split: str) -> dict:
    if x is None or y is None or not len(y):
        return {f"{split}_loss": None, f"{split}_acc": None}
    p = _head_probs(head, x)
    loss = float(F.nll_loss(torch.from_numpy(np.log(np.clip(p, 1e-12, 1))), torch.from_numpy(y)))
    return {f"{split}_loss": loss, f"{split}_acc": float((p.argmax(1) == y).mean())}


def _head_probs(head: nn.Module, x: np.ndarray | None) -> np.ndarray | None:
    if x is None:
        return None
    with torch.no_grad():
        return head.eval()(torch.from_numpy(x).float()).softmax(-1).numpy()


@register_trainer("head")
def train_head(bb: Backbone, tr: ImageDataset, va: ImageDataset, *, seed: int = 0, progress: bool = True,
               epochs: int | None = None, lr: float | None = None, hidden: int = 512, dropout: float = 0.5,
               weight_decay: float = 0.05, batch_size: int | None = None, patience: int = 20,
               label_smoothing: float = 0.1, **_) -> Fitted:
    """MLP head (dropout) on cached pooled features, AdamW, early stopping on validation loss.
    With no validation split, 15 % of the training images are held out for the stopping rule."""
    device = _init_distributed() if world_size() > 1 else None
    k = len(tr.classes)
    (xt, yt, _, sk_t), (xv, yv, ok_v, sk_v) = split_features(bb, tr, va, progress=progress, device=device)
    if world_size() > 1:
        _finish_distributed()
    if len(np.unique(yt)) < 2:
        raise DataError("the training split has readable images of fewer than 2 classes")
    spec = {"type": "mlp", "in": bb.feature_dim, "hidden": hidden, "out": k, "dropout": dropout}
    ev_x, ev_y, fit_x, fit_y = xv, yv, xt, yt
    selection = "val"
    if xv is None or not len(yv):  # hold out part of train only for early stopping
        from sklearn.model_selection import train_test_split

        strat = yt if np.bincount(yt).min() >= 2 else None
        a, b = train_test_split(np.arange(len(yt)), test_size=0.15, random_state=seed, stratify=strat)
        fit_x, fit_y, ev_x, ev_y = xt[a], yt[a], xt[b], yt[b]
        selection = "holdout-15%"
    r = fit_head(spec, fit_x, fit_y, ev_x, ev_y, seed=seed, epochs=epochs or 200, lr=lr or 1e-3,
                 weight_decay=weight_decay, batch_size=batch_size or 64, label_smoothing=label_smoothing,
                 patience=patience)
    train_acc = float((_head_probs(r.head, xt).argmax(1) == yt).mean())
    return Fitted(
        head=r.head, head_spec=spec, val_probs=_head_probs(r.head, xv), val_ok=ok_v, train_accuracy=train_acc,
        skipped=sk_t + sk_v,
        info={"hidden": hidden, "dropout": dropout, "lr": lr or 1e-3, "weight_decay": weight_decay,
              "best_epoch": r.best_epoch, "epochs_run": len(r.history), "selection": selection,
              "label_smoothing": label_smoothing},
        history=r.history,
    )


# ----------------------------------------------------------------------------------------------
# Depth groups, freezing, BatchNorm
# ----------------------------------------------------------------------------------------------
def depth_groups(trunk: nn.Module) -> list[list[str]]:
    """The trunk as ordered groups of module names, shallow to deep: every child of a top-level
    ``Sequential``/``ModuleList`` (timm ``blocks.N``, torchvision ``features.N``/``layerN.M``) is
    a group; runs of other top-level modules (stem conv + BN, head conv + BN) are merged.
    Groups without parameters are dropped."""
    groups: list[list[str]] = []
    run: list[str] = []
    for name, child in trunk.named_children():
        if isinstance(child, (nn.Sequential, nn.ModuleList)) and len(child) > 1:
            if run:
                groups.append(run)
                run = []
            groups += [[f"{name}.{sub}"] for sub, _ in child.named_children()]
        else:
            run.append(name)
    if run:
        groups.append(run)
    return [g for g in groups if any(True for n in g for _ in trunk.get_submodule(n).parameters())]


def parse_unfreeze(spec: str, n_groups: int) -> tuple[int, bool]:
    """``all`` | ``last:K`` | ``progressive`` -> (groups unfrozen at the start, progressive?)."""
    spec = (spec or "all").strip().lower()
    if spec == "all":
        return n_groups, False
    if spec == "progressive":
        return 1, True
    m = re.fullmatch(r"last:(\d+)", spec)
    if m and int(m.group(1)) >= 1:
        return min(int(m.group(1)), n_groups), False
    raise TransferlabError(f"--unfreeze must be all, last:K (K >= 1) or progressive, not '{spec}'")


_BN = (nn.modules.batchnorm._BatchNorm,)


def _set_trainable(model: ImageClassifier, groups: list[list[str]], n_unfrozen: int) -> None:
    model.normalize.requires_grad_(False)
    model.head.requires_grad_(True)
    first = len(groups) - n_unfrozen
    for i, g in enumerate(groups):
        for name in g:
            model.trunk.get_submodule(name).requires_grad_(i >= first)


def _train_mode(model: ImageClassifier, bn: str) -> None:
    """``model.train()`` except BatchNorm: frozen statistics (eval mode) unless ``bn="train"``
    and the layer's parameters are being trained."""
    model.train()
    for m in model.modules():
        if isinstance(m, _BN):
            trainable = any(p.requires_grad for p in m.parameters(recurse=False))
            if bn != "train" or not trainable:
                m.eval()


# ----------------------------------------------------------------------------------------------
# The frozen groups in onnxruntime (CPUs without bf16)
# ----------------------------------------------------------------------------------------------
class _Prefix(nn.Module):
    """normalize + the frozen depth groups in order: [0, 1] NHWC pixels -> the activation the first
    trainable group takes. NHWC in, so a channels_last batch goes to onnxruntime without a copy."""

    def __init__(self, model: ImageClassifier, names: list[str]):
        super().__init__()
        self.normalize = model.normalize
        self.parts = nn.ModuleList(model.trunk.get_submodule(n) for n in names)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x.permute(0, 3, 1, 2))
        for m in self.parts:
            x = m(x)
        return x


def _suffix_view(module: nn.Module, names: list[str], copies: list | None = None) -> nn.Module:
    """A shallow copy of ``module`` with the submodules ``names`` replaced by Identity. It shares
    every other module (and so every parameter) with the original, which stays untouched: training
    the view trains the model, and the model's state_dict stays complete. ``copies`` collects
    (copy, original) container pairs, whose train/eval flags the caller keeps in step."""
    view = copy.copy(module)
    view._modules = dict(module._modules)
    if copies is not None:
        copies.append((view, module))
    nested: dict[str, list[str]] = {}
    for n in names:
        first, _, rest = n.partition(".")
        nested.setdefault(first, []).append(rest)
    for first, rests in nested.items():
        view._modules[first] = (nn.Identity() if "" in rests
                                else _suffix_view(module._modules[first], rests, copies))
    return view


class FrozenPrefix:
    """The frozen depth groups of a CPU fine-tune, run by onnxruntime; the trainable rest in torch.

    With ``--unfreeze last:K`` most of a step's time is the frozen groups' forward pass (lite2 at
    384 px, batch 32: 3.2 s of 4.7 s in torch fp32 on an AVX2 CPU), and onnxruntime runs that part
    several times faster (see :class:`transferlab.pipeline.OnnxFeatures`). The frozen groups are a
    fixed function while they stay frozen (eval-mode BatchNorm, no dropout), so the export stays
    valid until the unfrozen set changes. Built only after checking that the trunk really is its
    depth groups applied in order (the view's output equals the trunk's on a probe batch).
    """

    def __init__(self, model: ImageClassifier, names: list[str], batch_size: int, size: int, threads: int):
        from .pipeline import OnnxFeatures

        self.model, self.batch_size = model, batch_size
        self.prefix = _Prefix(model, names).eval()  # its modes only matter to the export
        self.copies: list[tuple[nn.Module, nn.Module]] = []
        self.suffix = _suffix_view(model.trunk, names, self.copies)
        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                probe = torch.rand((2, size, size, 3), generator=torch.Generator().manual_seed(0))
                want = model.trunk(model.normalize(probe.permute(0, 3, 1, 2)))
                got = self.suffix(self.prefix(probe))
            if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-3, atol=1e-4):
                raise ValueError("the trunk is not its depth groups applied in order")
        finally:
            model.train(was)
        self.onnx = OnnxFeatures(self.prefix, (batch_size, size, size, 3), threads, graph=self.prefix,
                                 dtype=torch.float32)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] pixels [n, 3, S, S] (channels_last) -> logits, gradients for the trainable part."""
        for view, original in self.copies:  # e.g. a trunk's own dropout looks at its flag
            view.training = original.training
        n = x.shape[0]
        nhwc = x.permute(0, 2, 3, 1)
        if n < self.batch_size:
            nhwc = torch.cat([nhwc, nhwc.new_zeros((self.batch_size - n, *nhwc.shape[1:]))])
        h = torch.from_numpy(self.onnx(np.ascontiguousarray(nhwc.detach().numpy()))[:n])
        return self.model.head(self.suffix(h.contiguous(memory_format=torch.channels_last)))


def frozen_prefix(model: ImageClassifier, groups: list[list[str]], n_unfrozen: int, batch_size: int,
                  size: int, device: torch.device) -> FrozenPrefix | None:
    """A :class:`FrozenPrefix` when it applies: one CPU process whose extraction engine is
    onnxruntime (``TRANSFERLAB_ENGINE``), with at least one frozen group. None otherwise, or
    (with a warning) when the export fails: torch then runs the whole network as before."""
    from .pipeline import engine_default, warn_fallback

    names = [n for g in groups[: len(groups) - n_unfrozen] for n in g]
    if not names or device.type != "cpu" or world_size() > 1 or engine_default(device) != "onnxruntime":
        return None
    try:
        return FrozenPrefix(model, names, batch_size, size, torch.get_num_threads())
    except Exception as e:  # an architecture the exporter (or the view) cannot handle
        warn_fallback("frozen layers in onnxruntime", e, "running torch")
        return None


# ----------------------------------------------------------------------------------------------
# Training data: augmentation resolved from the backbone's preprocessing
# ----------------------------------------------------------------------------------------------
AUGMENTATIONS = ("none", "light", "randaug")


def train_transform(dc: DataConfig, aug: str = "light"):
    """timm's ImageNet training transform at the backbone's input size and interpolation, without
    Normalize (normalisation is a layer of the model): uint8 tensor [3, S, S] out.
    ``light``: random-resized crop (35-100 % of the area), flip, colour jitter 0.2;
    ``randaug``: plus RandAugment (m7); ``none``: the eval resize + centre crop."""
    from timm.data import create_transform

    if aug not in AUGMENTATIONS:
        raise TransferlabError(f"--aug must be one of {', '.join(AUGMENTATIONS)}, not '{aug}'")
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


def _seed_worker(worker_id: int) -> None:
    import random

    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


# ----------------------------------------------------------------------------------------------
# Precision
# ----------------------------------------------------------------------------------------------
def _amp(device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, needs GradScaler): bf16 where supported, fp16+scaler on old GPUs."""
    if device.type == "cuda":
        if not bf16_default(device):
            return None, False
        return (torch.bfloat16, False) if torch.cuda.is_bf16_supported() else (torch.float16, True)
    return (torch.bfloat16, False) if bf16_default(device) else (None, False)


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


# ----------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------
def _unwrap(model: nn.Module) -> ImageClassifier:
    return model.module if hasattr(model, "module") else model  # DDP


class Checkpoints:
    """``<run>/checkpoint/``: ``last-E.safetensors`` + ``optim-E.pt`` (E = completed epochs),
    ``best.safetensors``, and ``state.json`` written last (it names the complete epoch)."""

    def __init__(self, directory: Path):
        self.dir = directory

    def state(self) -> dict | None:
        f = self.dir / STATE
        if not f.is_file():
            return None
        try:
            return json.loads(f.read_text())
        except ValueError as e:
            raise RunError(f"unreadable checkpoint state {f}: {e}") from None

    def save(self, epoch: int, model: nn.Module, opt, sched, scaler, state: dict) -> None:
        save_safetensors(self.dir / f"last-{epoch}.safetensors", _unwrap(model).state_dict())
        blob = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else {}}
        atomic_write(self.dir / f"optim-{epoch}.pt", lambda p: torch.save(blob, p))
        write_json(self.dir / STATE, {**state, "epoch": epoch})
        for f in self.dir.glob("*-*.*"):  # older epochs' files, now superseded
            m = re.fullmatch(r"(last|optim)-(\d+)\.(safetensors|pt)", f.name)
            if m and int(m.group(2)) != epoch:
                f.unlink(missing_ok=True)

    def save_best(self, model: nn.Module, val_probs: np.ndarray | None) -> None:
        sd = dict(_unwrap(model).state_dict())
        if val_probs is not None:
            sd["_val_probs"] = torch.from_numpy(np.ascontiguousarray(val_probs))
        save_safetensors(self.dir / "best.safetensors", sd)

    def load_best(self) -> tuple[dict, np.ndarray | None]:
        from safetensors.torch import load_file

        sd = load_file(str(self.dir / "best.safetensors"))
        probs = sd.pop("_val_probs", None)
        return sd, probs.numpy() if probs is not None else None

    def load_last(self, epoch: int) -> tuple[dict, dict]:
        from safetensors.torch import load_file

        w, o = self.dir / f"last-{epoch}.safetensors", self.dir / f"optim-{epoch}.pt"
        if not w.is_file() or not o.is_file():
            raise RunError(f"checkpoint of epoch {epoch} is incomplete in {self.dir}")
        return load_file(str(w)), torch.load(str(o), map_location="cpu", weights_only=True)


def resumed_backbone(resume: str | Path, backbone: str, input_size: int | None) -> tuple[str, int | None]:
    """The backbone and input size a ``--resume`` run must continue with: the checkpoint's own.
    Asking for different ones explicitly is an error (the saved weights would not fit)."""
    st = Checkpoints(Path(resume) / CHECKPOINT_DIR).state()
    if not st:
        return backbone, input_size
    saved_bb, saved_size = st.get("backbone", backbone), st.get("input_size")
    other_size = input_size and saved_size and int(input_size) != int(saved_size)
    if backbone not in (DEFAULT_BACKBONE, saved_bb) or other_size:
        raise RunError(f"{resume} was trained with --backbone {saved_bb}"
                       + (f" --input-size {saved_size}" if saved_size else "") + "; resume it with the same")
    return saved_bb, input_size or saved_size


def _after_checkpoint(epoch: int) -> None:
    """Hook called after each epoch's checkpoint is on disk (tests use it to simulate a kill)."""


# ----------------------------------------------------------------------------------------------
# mode "finetune"
# ----------------------------------------------------------------------------------------------
FINETUNE_DEFAULTS = {
    "epochs": 3, "lr": 1e-3, "trunk_lr": 0.1, "lr_mult": 100.0, "unfreeze": "all", "batch_size": 32,
    "weight_decay": 0.01,
    "label_smoothing": 0.1, "clip": 1.0, "aug": "light", "bn": "frozen", "patience": 3, "head_epochs": 100,
    "pct_start": 0.25, "workers": None, "mixup": 0.0, "cutmix": 0.0, "wise": 1.0,
}
_RESUME_KEEP = ("epochs", "lr", "trunk_lr", "lr_mult", "unfreeze", "batch_size", "weight_decay", "label_smoothing",
                "clip", "aug", "bn", "patience", "head_epochs", "pct_start", "mixup", "cutmix", "wise")


@register_trainer("finetune")
def train_finetune(bb: Backbone, tr: ImageDataset, va: ImageDataset, *, seed: int = 0,
                   out: Path | None = None, progress: bool = True, resume: str | Path | None = None,
                   **options) -> Fitted:
    """Head warm-up on cached features, then ``epochs`` epochs of end-to-end training of the
    unfrozen depth groups. Best epoch (validation accuracy, then loss) is what the run keeps;
    without a validation split, the last epoch."""
    unknown = {k for k, v in options.items() if v is not None} - set(FINETUNE_DEFAULTS) - {"device"}
    given = {k: v for k, v in options.items() if v is not None and k in FINETUNE_DEFAULTS}
    opts = {**FINETUNE_DEFAULTS, **given}
    if unknown:
        raise TransferlabError(f"unknown finetune option(s): {', '.join(sorted(unknown))}")
    device = (_init_distributed() if world_size() > 1
              else torch.device(options.get("device") or default_device()))
    ckdir = Path(resume or out or "runs/finetune") / CHECKPOINT_DIR
    ck = Checkpoints(ckdir)
    saved = ck.state() if resume else None
    if resume and saved is None:
        raise RunError(f"nothing to resume: no {CHECKPOINT_DIR}/{STATE} in {resume}")
    if saved and saved.get("finished"):
        raise RunError(f"{resume} finished its {saved['epoch']} epochs already; nothing to resume")
    if saved:
        opts.update({k: saved["options"][k] for k in _RESUME_KEEP if k in saved["options"]})
        seed = saved.get("seed", seed)
    if out is not None and resume and Path(out) != Path(resume):
        ck = Checkpoints(Path(out) / CHECKPOINT_DIR)  # continue writing into the new run dir
    if int(opts["epochs"]) < 1 or float(opts["lr"]) <= 0 or int(opts["batch_size"]) < 1:
        raise TransferlabError("--epochs and --batch-size must be >= 1 and --lr > 0")
    if opts["bn"] not in ("frozen", "train"):
        raise TransferlabError(f"bn must be 'frozen' or 'train', not '{opts['bn']}'")
    if not 0 < float(opts["wise"]) <= 1:
        raise TransferlabError(f"--wise must be in (0, 1] (1 = the fine-tuned weights alone), not {opts['wise']}")
    k = len(tr.classes)
    main = is_main()
    show = progress and main and _progress.enabled()
    if saved is None and main and ck.dir.is_dir():  # a fresh run never mixes with old checkpoints
        for f in ck.dir.iterdir():
            if re.fullmatch(r"(last|optim)-\d+\.(safetensors|pt)|(best|start)\.safetensors|state\.json", f.name):
                f.unlink()

    # 1. features (sharded across ranks, cached) -> readable images + head warm-up ---------------
    (xt, yt, ok_t, sk_t), (xv, yv, ok_v, sk_v) = split_features(bb, tr, va, progress=progress, device=device)
    if len(np.unique(yt)) < 2:
        raise DataError("the training split has readable images of fewer than 2 classes")
    train_paths = [p for p, o in zip(tr.paths, ok_t, strict=True) if o]
    val_paths = [p for p, o in zip(va.paths, ok_v, strict=True) if o] if ok_v is not None else []
    spec = {"type": "linear", "in": bb.feature_dim, "out": k}

    model = copy.deepcopy(bb.model)
    groups = depth_groups(model.trunk)
    n_unfrozen, progressive = parse_unfreeze(str(opts["unfreeze"]), len(groups))
    history: list[dict] = []
    if saved is None and int(opts["head_epochs"]) > 0:
        warm = fit_head(spec, xt, yt, xv, yv, seed=seed, epochs=int(opts["head_epochs"]), lr=3e-3,
                        weight_decay=opts["weight_decay"], label_smoothing=opts["label_smoothing"],
                        patience=15)
        model.head = warm.head
        history.append({"epoch": 0, "phase": "head (frozen trunk, cached features)",
                        "train_loss": warm.train_loss, "train_acc": warm.train_acc,
                        "val_loss": warm.val_loss, "val_acc": warm.val_acc})
    elif saved is None:  # no warm-up: the fresh head's starting point is epoch 0 of the curves
        torch.manual_seed(seed)
        model.head = build_head(spec)
        history.append({"epoch": 0, "phase": "untrained head",
                        **_score(model.head, xt, yt, "train"), **_score(model.head, xv, yv, "val")})
    else:
        model.head = build_head(spec)

    if saved is None and main and float(opts["wise"]) < 1:  # the other end of --wise, kept for --resume
        probe, _, _ = fit_linear_probe(xt, yt, xv, yv, k, seed)
        ck.dir.mkdir(parents=True, exist_ok=True)
        save_safetensors(ck.dir / "start.safetensors", {f"head.{kk}": v for kk, v in probe.state_dict().items()})

    # 2. optimizer over every depth group (frozen ones simply get no gradients) -------------------
    n = len(groups)
    # discriminative: the new head gets lr, the deepest trunk group lr * trunk_lr, geometric down to
    # lr * trunk_lr / lr_mult for the stem (AdamW moves every weight by ~lr per step whatever its
    # gradient, so pretrained convs need a much smaller step than a fresh head)
    lrs = [opts["lr"] * opts["trunk_lr"] / opts["lr_mult"] ** ((n - 1 - i) / max(n - 1, 1)) for i in range(n)]
    param_groups = []
    for g, glr in zip(groups, lrs, strict=True):
        params = [p for name in g for p in model.trunk.get_submodule(name).parameters()]
        param_groups.append({"params": params, "lr": glr})
    param_groups.append({"params": list(model.head.parameters()), "lr": opts["lr"]})
    model.requires_grad_(True)
    model.to(device).to(memory_format=torch.channels_last)  # before the optimizer sees the params
    opt = torch.optim.AdamW(param_groups, lr=opts["lr"], weight_decay=opts["weight_decay"])

    ds_train = AugmentedImages(train_paths, yt, bb.data_config, opts["aug"])
    w, r = world_size(), rank()
    bs = int(opts["batch_size"])
    sampler = torch.utils.data.DistributedSampler(ds_train, num_replicas=w, rank=r, shuffle=True, seed=seed)
    steps_per_epoch = math.ceil(len(sampler) / bs)
    epochs = int(opts["epochs"])
    total = max(epochs * steps_per_epoch, 4)  # OneCycleLR needs >= 2 steps in each phase
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[g["lr"] for g in opt.param_groups], total_steps=total,
        pct_start=max(float(opts["pct_start"]), 2.0 / total), div_factor=25.0, final_div_factor=1e4,
    )
    amp_dtype, need_scaler = _amp(device)
    scaler = torch.amp.GradScaler("cuda") if need_scaler else None
    mixer = _mixer(opts, k)

    start_epoch, best = 0, {"epoch": 0, "val_acc": -1.0, "val_loss": math.inf}
    if saved is not None:
        start_epoch = int(saved["epoch"])
        sd, blob = ck.load_last(start_epoch) if ck.dir == ckdir else Checkpoints(ckdir).load_last(start_epoch)
        model.load_state_dict(sd)
        opt.load_state_dict(blob["optimizer"])
        sched.load_state_dict(blob["scheduler"])
        if scaler is not None and blob.get("scaler"):
            scaler.load_state_dict(blob["scaler"])
        history = list(saved["history"])
        best = dict(saved["best"])
        if ck.dir != ckdir and main:  # carry the best weights over to the new run's checkpoint dir
            sd_best, probs_best = Checkpoints(ckdir).load_best()
            ck.dir.mkdir(parents=True, exist_ok=True)
            save_safetensors(ck.dir / "best.safetensors",
                             {**sd_best, **({"_val_probs": torch.from_numpy(probs_best)}
                                            if probs_best is not None else {})})
    elif history[0]["val_acc"] is not None:
        best = {"epoch": 0, "val_acc": history[0]["val_acc"], "val_loss": history[0]["val_loss"]}
        if main:
            ck.save_best(model, _head_probs(copy.deepcopy(model.head).cpu(), xv))

    workers = opts["workers"] if opts["workers"] is not None else _default_workers(device)

    def make_ddp(n_unf: int) -> nn.Module:
        _set_trainable(model, groups, n_unf)
        if w == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel as DDP

        return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)

    unfrozen_now = n_unfrozen + (start_epoch if progressive else 0)
    net = make_ddp(min(unfrozen_now, n))
    size = bb.data_config.input_size
    prefix = frozen_prefix(model, groups, min(unfrozen_now, n), bs, size, device)
    state_base = {"seed": seed, "options": {kk: opts[kk] for kk in _RESUME_KEEP}, "world_size": w,
                  "classes": tr.classes, "backbone": bb.name, "input_size": bb.data_config.input_size}
    stopped_early = interrupted = False
    epoch_seconds: list[float] = []
    try:
        bad = sum(1 for h in history[1:] if h["epoch"] > best["epoch"]) if best["val_acc"] >= 0 else 0
        for epoch in range(start_epoch + 1, epochs + 1):
            if progressive and epoch > 1 and unfrozen_now < n:
                unfrozen_now += 1
                net = make_ddp(unfrozen_now)
                prefix = frozen_prefix(model, groups, unfrozen_now, bs, size, device)
            t0 = time.perf_counter()
            row = _train_epoch(prefix or net, model, ds_train, sampler, epoch, seed, bs, workers, opt, sched, scaler,
                               device, amp_dtype, opts, show, epochs, mixer)
            vl = va_acc = probs = None
            if val_paths:
                probs = _predict(model, val_paths, bb.data_config, device, amp_dtype, bs * 2)
                yv_t = torch.from_numpy(yv)
                vl = float(F.nll_loss(torch.from_numpy(np.log(np.clip(probs, 1e-12, 1))), yv_t))
                va_acc = float((probs.argmax(1) == yv).mean())
            epoch_seconds.append(time.perf_counter() - t0)
            row.update({"val_loss": vl, "val_acc": va_acc, "seconds": round(epoch_seconds[-1], 2),
                        "unfrozen_groups": min(unfrozen_now, n)})
            history.append(row)
            improved = va_acc is not None and (va_acc > best["val_acc"] or
                                               (va_acc == best["val_acc"] and vl < best["val_loss"]))
            if improved:
                best, bad = {"epoch": epoch, "val_acc": va_acc, "val_loss": vl}, 0
            elif va_acc is not None:
                bad += 1
            if main:
                if improved or not val_paths:
                    ck.save_best(model, probs)
                ck.save(epoch, model, opt, sched, scaler, {**state_base, "history": history, "best": best})
                if show:
                    _progress_line(row, epochs)
            _after_checkpoint(epoch)
            if val_paths and bad >= int(opts["patience"]):
                stopped_early = True
                break
    except KeyboardInterrupt:
        if not (ck.dir / "best.safetensors").is_file() or not main:
            raise
        interrupted = True
        from rich.console import Console

        kept = best["epoch"] if val_paths else history[-1]["epoch"]
        Console(stderr=True).print(f"interrupted: the run keeps epoch {kept} (best so far); continue "
                                   f"with --resume {ck.dir.parent}", highlight=False)

    # 3. the best weights become the run ------------------------------------------------------------
    start_head = None
    if main:
        sd, val_probs = ck.load_best()
        start_head = _load_start_head(ck.dir, ckdir) if float(opts["wise"]) < 1 else None
        if not interrupted:  # done: keep only the history; the run's own weights are the best ones
            done = {**(ck.state() or {}), "finished": True}
            write_json(ck.dir / STATE, done)
            for f in ck.dir.iterdir():
                if re.fullmatch(r"(last|optim)-\d+\.(safetensors|pt)|(best|start)\.safetensors", f.name):
                    f.unlink()
    else:
        sd, val_probs = _unwrap(net).state_dict(), None
    sd = {kk: v.cpu() for kk, v in sd.items()}
    if w > 1:
        _finish_distributed()
    final = copy.deepcopy(bb.model)
    final.head = build_head(spec)
    wise = float(opts["wise"])
    if wise < 1 and main:
        sd = _wise_mix(sd, bb.model, start_head, wise)
        val_probs = None  # the best epoch's probabilities were the unmixed network's
    final.load_state_dict(sd)
    final.eval().requires_grad_(False)
    best_row = next((h for h in history if h["epoch"] == best["epoch"]), history[-1])
    if not val_paths:
        best_row = history[-1]
    if val_probs is not None and len(val_probs) != (0 if yv is None else len(yv)):
        val_probs = None
    if val_probs is None and xv is not None and main:  # e.g. interrupted before any val pass
        val_probs = _predict(final.to(device), val_paths, bb.data_config, device, amp_dtype, bs * 2)
        final.to("cpu")
    return Fitted(
        head=final.head, head_spec=spec, val_probs=val_probs, val_ok=ok_v,
        train_accuracy=best_row.get("train_acc"), skipped=sk_t + sk_v, model_state=final.state_dict(),
        info={**{kk: opts[kk] for kk in _RESUME_KEEP}, "workers": workers, "best_epoch": best_row["epoch"],
              "epochs_run": len(history) - 1, "stopped_early": stopped_early, "interrupted": interrupted,
              "resumed_from_epoch": start_epoch if saved else None, "world_size": w, "device": str(device),
              "autocast": str(amp_dtype).replace("torch.", "") if amp_dtype else "fp32",
              "depth_groups": n, "group_lrs": [round(x, 8) for x in lrs],
              "frozen_groups_engine": "onnxruntime" if prefix is not None else "torch",
              "seconds_per_epoch": round(float(np.mean(epoch_seconds)), 2) if epoch_seconds else None,
              "selection": "val_accuracy" if val_paths else "last_epoch"},
        history=history,
    )


def _load_start_head(*dirs: Path) -> dict[str, torch.Tensor]:
    """The linear probe saved at the start of the run (the resumed run's, if it moved)."""
    from safetensors.torch import load_file

    for d in dirs:
        if (d / "start.safetensors").is_file():
            return load_file(str(d / "start.safetensors"))
    raise RunError(f"--wise needs {dirs[0] / 'start.safetensors'}, written when the run started")


def _wise_mix(tuned: dict[str, torch.Tensor], pretrained: ImageClassifier, start_head: dict[str, torch.Tensor],
              alpha: float) -> dict[str, torch.Tensor]:
    """WiSE-FT (Wortsman et al., CVPR 2022): ``alpha`` x the fine-tuned weights + (1 - alpha) x
    the pretrained trunk with a linear probe (logistic regression, C chosen as in ``--mode
    linear``) as its head. Mixing with the probe rather than with the warm-up head (AdamW, no C
    search) measured 90.7 vs 90.3 % on the Oxford subset (BENCHMARKS.md, issue 3). Integer buffers
    (BatchNorm's batch counters) are taken from the fine-tuned side."""
    start = {**{k: v for k, v in pretrained.state_dict().items() if not k.startswith("head.")}, **start_head}
    return {k: (alpha * v.float() + (1 - alpha) * start[k].float()).to(v.dtype)
            if k in start and v.is_floating_point() else v for k, v in tuned.items()}


def _default_workers(device: torch.device) -> int:
    """DataLoader processes per rank: decoding + augmentation overlaps the model on a spare core."""
    per_rank = (os.cpu_count() or 1) // world_size()
    if device.type == "cuda":
        return max(1, min(8, per_rank - 1))
    return 1 if per_rank >= 2 else 0


def _mixer(opts: dict, num_classes: int):
    """timm's batch-wise Mixup / CutMix (soft targets carry the label smoothing), or None."""
    if float(opts["mixup"]) < 0 or float(opts["cutmix"]) < 0:
        raise TransferlabError("--mixup and --cutmix are Beta(alpha, alpha) parameters and must be >= 0")
    if not (float(opts["mixup"]) > 0 or float(opts["cutmix"]) > 0):
        return None
    from timm.data import Mixup

    return Mixup(mixup_alpha=float(opts["mixup"]), cutmix_alpha=float(opts["cutmix"]),
                 label_smoothing=float(opts["label_smoothing"]), num_classes=num_classes)


def _train_epoch(net, model, ds_train, sampler, epoch, seed, bs, workers, opt, sched, scaler, device,
                 amp_dtype, opts, show, epochs, mixer=None) -> dict:
    """One epoch of end-to-end training; returns {epoch, train_loss, train_acc} over all ranks."""
    np_state = np.random.get_state()  # timm's Mixup draws from numpy's global generator
    np.random.seed((seed * 100_003 + epoch + rank()) % 2**32)
    try:
        return _train_epoch_seeded(net, model, ds_train, sampler, epoch, seed, bs, workers, opt, sched, scaler,
                                   device, amp_dtype, opts, show, epochs, mixer)
    finally:
        np.random.set_state(np_state)


def _train_epoch_seeded(net, model, ds_train, sampler, epoch, seed, bs, workers, opt, sched, scaler, device,
                        amp_dtype, opts, show, epochs, mixer) -> dict:
    torch.manual_seed(seed * 100_003 + epoch)  # dropout / drop-path in this process
    sampler.set_epoch(epoch)
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    loader = torch.utils.data.DataLoader(
        ds_train, batch_size=bs, sampler=sampler, num_workers=workers, generator=g,
        worker_init_fn=_seed_worker, pin_memory=device.type == "cuda", drop_last=False,
    )
    _train_mode(model, opts["bn"])
    trainable = [p for p in model.parameters() if p.requires_grad]
    tot = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, count
    with _progress.bar(f"epoch {epoch}/{epochs}", len(sampler) * world_size() if show else None) as adv:
        for x, y in loader:
            x = to_pixels(x, device).contiguous(memory_format=torch.channels_last)
            y = y.to(device, non_blocking=True)
            soft = None
            if mixer is not None and len(y) % 2 == 0:  # timm mixes a batch with its reverse
                x, soft = mixer(x, y)
            with _autocast(device, amp_dtype):
                logits = net(x)
            if soft is not None:
                loss = torch.sum(-soft * F.log_softmax(logits.float(), -1), -1).mean()
            else:
                loss = F.cross_entropy(logits.float(), y, label_smoothing=opts["label_smoothing"])
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
            else:
                loss.backward()
            if opts["clip"]:
                torch.nn.utils.clip_grad_norm_(trainable, float(opts["clip"]))
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            sched.step()
            tot += torch.tensor([loss.item() * len(y), float((logits.argmax(1) == y).sum()), len(y)],
                                dtype=torch.float64)
            adv(len(y) * world_size(), info=f"loss {tot[0] / tot[2]:.3f}  acc {tot[1] / tot[2]:.3f}")
    parts = _gather(tot)
    tot = sum(parts[1:], parts[0])
    return {"epoch": epoch, "train_loss": float(tot[0] / tot[2]), "train_acc": float(tot[1] / tot[2])}


def _predict(model: nn.Module, paths: list[str], dc: DataConfig, device: torch.device, amp_dtype,
             batch_size: int) -> np.ndarray:
    """Softmax over ``paths`` (eval preprocessing), sharded across ranks and gathered in order."""
    model.eval()
    w, r = world_size(), rank()
    mine = list(range(r, len(paths), w))
    out: list[np.ndarray] = []
    idx: list[int] = []
    with torch.no_grad():
        for b in iter_batches([paths[i] for i in mine], dc, batch_size):
            if not b.indices:
                continue
            x = to_pixels(b.data, device).contiguous(memory_format=torch.channels_last)
            with _autocast(device, amp_dtype):
                logits = model(x)
            out.append(logits.float().softmax(-1).cpu().numpy())
            idx += [mine[i] for i in b.indices]
    k = _unwrap(model).head.out_features if hasattr(_unwrap(model).head, "out_features") else None
    mine_probs = np.concatenate(out) if out else np.zeros((0, k or 0), np.float32)
    probs = None
    for ii, pp in _gather((idx, mine_probs)):
        if probs is None:
            probs = np.zeros((len(paths), pp.shape[1] if pp.size else (k or 0)), np.float32)
        if len(ii):
            probs[ii] = pp
    return probs


def _progress_line(row: dict, epochs: int) -> None:
    from rich.console import Console

    v = "" if row["val_acc"] is None else f"  val loss {row['val_loss']:.3f}  val acc {row['val_acc']:.3f}"
    Console(stderr=True).print(
        f"epoch {row['epoch']}/{epochs}: train loss {row['train_loss']:.3f}  train acc {row['train_acc']:.3f}"
        f"{v}  ({row['seconds']:.0f} s)", highlight=False)


def launch_torchrun(nproc: int, argv: list[str]) -> int:
    """``transferlab train ... --nproc N`` = ``torchrun --standalone --nproc_per_node N -m transferlab
    train ...`` (the same arguments minus ``--nproc``); returns torchrun's exit code."""
    import subprocess
    import sys

    args, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--nproc":
            skip = True
            continue
        if a.startswith("--nproc="):
            continue
        args.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "transferlab", *args]
    return subprocess.call(cmd)
