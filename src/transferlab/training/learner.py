"""A small training loop with callback hooks, modelled on fastai's ``Learner``.

The loop itself only knows how to run an epoch of batches (forward, loss, backward, clip, step,
schedule); everything a fine-tuning run does around that is a :class:`Callback` in
:mod:`transferlab.training.callbacks`: validation and the best epoch, early stopping,
checkpoints and resume, progressive unfreezing, the frozen prefix in onnxruntime, WiSE-FT,
progress. Hooks run in ``order`` (lowest first)::

    before_fit
    for each epoch:  before_epoch, [after_batch per batch], after_epoch   (stops when ``stop``)
    after_fit                      (also after Ctrl-C, when a callback's ``on_interrupt`` handles it)

Every epoch reseeds (``seed``, epoch) for the sampler, augmentation workers, MixUp and dropout,
so a run resumed from its epoch-``e`` checkpoint replays the same epochs ``e+1..`` as an
uninterrupted one.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.geometry import DataConfig
from ..data.loader import iter_batches, to_pixels
from ..models.classifier import ImageClassifier
from ..models.groups import set_trainable, train_mode
from ..runtime.device import amp_autocast
from ..runtime.distributed import gather, rank, world_size
from .augment import seed_worker
from .options import FinetuneOptions


class Callback:
    """Override the hooks you need; ``learn`` is the :class:`Learner` (its state is public).
    Hooks run by ``order``; ``order_<hook>`` (e.g. ``order_before_fit``) overrides it for one hook."""

    order = 50

    def before_fit(self, learn: Learner) -> None: ...
    def before_epoch(self, learn: Learner) -> None: ...
    def after_batch(self, learn: Learner) -> None: ...
    def after_epoch(self, learn: Learner) -> None: ...
    def after_fit(self, learn: Learner) -> None: ...

    def on_interrupt(self, learn: Learner) -> bool:
        """Ctrl-C during the fit: return True when the run can be kept (then ``after_fit`` runs)."""
        return False


@dataclass
class Optim:
    """Optimizer, per-step schedule, and a GradScaler when fp16 needs one."""

    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None = None


@dataclass
class Learner:
    """``model`` trained on ``data`` (a Dataset of (uint8 image, label)) with ``optim``."""

    model: ImageClassifier
    data: torch.utils.data.Dataset
    options: FinetuneOptions
    optim: Optim
    device: torch.device
    seed: int = 0
    amp_dtype: torch.dtype | None = None
    mixer: object | None = None  # timm Mixup, or None
    workers: int = 0
    groups: list[list[str]] = field(default_factory=list)
    callbacks: list[Callback] = field(default_factory=list)
    # state, read and written by callbacks
    start_epoch: int = 0
    epoch: int = 0
    unfrozen: int = 0
    history: list[dict] = field(default_factory=list)
    row: dict = field(default_factory=dict)
    batch: dict = field(default_factory=dict)  # {"n", "loss", "acc"} after each batch
    stop: bool = False
    interrupted: bool = False
    epoch_start: float = 0.0
    best: dict = field(default_factory=lambda: {"epoch": 0, "val_acc": -1.0, "val_loss": math.inf})
    improved: bool = False
    val_probs: np.ndarray | None = None  # this epoch's validation probabilities
    final_state: dict | None = None  # what the run keeps (set in after_fit)
    final_val_probs: np.ndarray | None = None
    info: dict = field(default_factory=dict)  # what callbacks want recorded in the run's config

    def __post_init__(self) -> None:
        self.net: nn.Module = self.model  # the trainable network (DDP-wrapped under torchrun)
        self.forward = self.model  # what a batch goes through (e.g. the frozen prefix + net)
        self.sampler = torch.utils.data.DistributedSampler(self.data, num_replicas=world_size(), rank=rank(),
                                                           shuffle=True, seed=self.seed)

    @property
    def epochs(self) -> int:
        return int(self.options.epochs)

    def fit(self) -> Learner:
        self._call("before_fit")
        try:
            for epoch in range(self.start_epoch + 1, self.epochs + 1):
                self.epoch = epoch
                self._call("before_epoch")
                self.epoch_start = time.perf_counter()
                self.row = self.one_epoch()
                self._call("after_epoch")
                if self.stop:
                    break
        except KeyboardInterrupt:
            handled = [cb.on_interrupt(self) for cb in self._sorted()]
            if not any(handled):
                raise
            self.interrupted = True
        self._call("after_fit")
        return self

    def _sorted(self, event: str = "") -> list[Callback]:
        """Callbacks by ``order``; a callback may order one hook differently (``order_before_fit``)."""
        return sorted(self.callbacks, key=lambda cb: getattr(cb, f"order_{event}", cb.order))

    def _call(self, event: str) -> None:
        for cb in self._sorted(event):
            getattr(cb, event)(self)

    def set_unfrozen(self, n: int) -> None:
        """Train the last ``n`` depth groups (and the head); wraps the model for DDP if needed."""
        set_trainable(self.model, self.groups, n)
        self.unfrozen = n
        self.net = self.model
        if world_size() > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.net = DDP(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.forward = self.net

    def one_epoch(self) -> dict:
        """One epoch of end-to-end training; returns {epoch, train_loss, train_acc} over all ranks."""
        np_state = np.random.get_state()  # timm's Mixup draws from numpy's global generator
        np.random.seed((self.seed * 100_003 + self.epoch + rank()) % 2**32)
        try:
            return self._one_epoch_seeded()
        finally:
            np.random.set_state(np_state)

    def _loader(self) -> torch.utils.data.DataLoader:
        torch.manual_seed(self.seed * 100_003 + self.epoch)  # dropout / drop-path in this process
        self.sampler.set_epoch(self.epoch)
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return torch.utils.data.DataLoader(
            self.data, batch_size=int(self.options.batch_size), sampler=self.sampler, num_workers=self.workers,
            generator=g, worker_init_fn=seed_worker, pin_memory=self.device.type == "cuda", drop_last=False,
        )

    def _one_epoch_seeded(self) -> dict:
        loader = self._loader()
        train_mode(self.model, self.options.bn)
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        tot = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, count
        for x, y in loader:
            loss, correct, n = self.one_batch(x, y, trainable)
            tot += torch.tensor([loss * n, correct, n], dtype=torch.float64)
            self.batch = {"n": n * world_size(), "loss": float(tot[0] / tot[2]), "acc": float(tot[1] / tot[2])}
            self._call("after_batch")
        parts = gather(tot)
        tot = sum(parts[1:], parts[0])
        return {"epoch": self.epoch, "train_loss": float(tot[0] / tot[2]), "train_acc": float(tot[1] / tot[2])}

    def one_batch(self, x: torch.Tensor, y: torch.Tensor, trainable: list) -> tuple[float, float, int]:
        """Forward, loss (soft targets under MixUp/CutMix), backward, clip, step, schedule."""
        x = to_pixels(x, self.device).contiguous(memory_format=torch.channels_last)
        y = y.to(self.device, non_blocking=True)
        soft = None
        if self.mixer is not None and len(y) % 2 == 0:  # timm mixes a batch with its reverse
            x, soft = self.mixer(x, y)
        with amp_autocast(self.device, self.amp_dtype):
            logits = self.forward(x)
        if soft is not None:
            loss = torch.sum(-soft * F.log_softmax(logits.float(), -1), -1).mean()
        else:
            loss = F.cross_entropy(logits.float(), y, label_smoothing=self.options.label_smoothing)
        self._step(loss, trainable)
        return loss.item(), float((logits.argmax(1) == y).sum()), len(y)

    def _step(self, loss: torch.Tensor, trainable: list) -> None:
        opt, scaler = self.optim.opt, self.optim.scaler
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
        else:
            loss.backward()
        if self.options.clip:
            torch.nn.utils.clip_grad_norm_(trainable, float(self.options.clip))
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        self.optim.sched.step()


def unwrap(model: nn.Module) -> ImageClassifier:
    return model.module if hasattr(model, "module") else model  # DDP


def predict_paths(model: nn.Module, paths: list[str], dc: DataConfig, learn: Learner, batch_size: int) -> np.ndarray:
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
            x = to_pixels(b.data, learn.device).contiguous(memory_format=torch.channels_last)
            with amp_autocast(learn.device, learn.amp_dtype):
                logits = model(x)
            out.append(logits.float().softmax(-1).cpu().numpy())
            idx += [mine[i] for i in b.indices]
    k = getattr(unwrap(model).head, "out_features", None)
    mine_probs = np.concatenate(out) if out else np.zeros((0, k or 0), np.float32)
    probs = None
    for ii, pp in gather((idx, mine_probs)):
        if probs is None:
            probs = np.zeros((len(paths), pp.shape[1] if pp.size else (k or 0)), np.float32)
        if len(ii):
            probs[ii] = pp
    return probs
