"""What a fine-tuning run does around the training loop, one :class:`Callback` each.

Orders (lowest runs first in every hook): ProgressiveUnfreeze 10, FrozenPrefixEngine 20,
Recorder 30 (validation, best epoch), EarlyStopping 40, Checkpoint 45 (saves the epoch once it
is recorded; its ``before_fit``, the resume, runs first of all), user callbacks 50, WiSE 60
(after the best weights are back), ProgressCallback 90.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .._io import save_safetensors, write_json
from ..data.geometry import DataConfig
from ..models.classifier import ImageClassifier
from ..progress import Bar, resolve
from ..runtime.distributed import is_main
from .checkpoints import STATE, Checkpoints, load_start_head
from .frozen import frozen_prefix
from .head import head_probs
from .learner import Callback, Learner, predict_paths, unwrap


@dataclass
class Val:
    """The validation split as fine-tuning sees it: readable paths, labels, cached features."""

    paths: list[str]
    y: np.ndarray | None
    x: np.ndarray | None  # pooled features of the pretrained trunk (for the probe / warm-up)
    dc: DataConfig


class Recorder(Callback):
    """Validates after every epoch, appends the epoch's row to ``learn.history`` and keeps the
    best epoch (validation accuracy, then loss) in ``learn.best``; ``learn.improved`` says
    whether this epoch is the new best. Without a validation split every epoch is "best"."""

    order = 30

    def __init__(self, val: Val):
        self.val = val

    def after_epoch(self, learn: Learner) -> None:
        vl = va_acc = probs = None
        if self.val.paths:
            probs = predict_paths(learn.model, self.val.paths, self.val.dc, learn, int(learn.options.batch_size) * 2)
            vl = float(F.nll_loss(torch.from_numpy(np.log(np.clip(probs, 1e-12, 1))), torch.from_numpy(self.val.y)))
            va_acc = float((probs.argmax(1) == self.val.y).mean())
        learn.row.update({"val_loss": vl, "val_acc": va_acc,
                          "seconds": round(time.perf_counter() - learn.epoch_start, 2),
                          "unfrozen_groups": learn.unfrozen})
        learn.history.append(learn.row)
        best = learn.best
        learn.improved = va_acc is not None and (va_acc > best["val_acc"] or
                                                 (va_acc == best["val_acc"] and vl < best["val_loss"]))
        if learn.improved:
            learn.best = {"epoch": learn.epoch, "val_acc": va_acc, "val_loss": vl}
        learn.val_probs = probs
        learn.info.setdefault("epoch_seconds", []).append(time.perf_counter() - learn.epoch_start)


class EarlyStopping(Callback):
    """Stop after ``patience`` epochs without a new best (needs a validation split)."""

    order = 40

    def __init__(self, patience: int, has_val: bool):
        self.patience, self.has_val, self.bad = int(patience), has_val, 0

    def before_fit(self, learn: Learner) -> None:  # a resumed run counts the epochs since its best
        best = learn.best["epoch"]
        self.bad = sum(1 for h in learn.history[1:] if h["epoch"] > best) if learn.best["val_acc"] >= 0 else 0
        learn.info["stopped_early"] = False

    def after_epoch(self, learn: Learner) -> None:
        if not self.has_val:
            return
        self.bad = 0 if learn.improved else self.bad + 1
        if self.bad >= self.patience:
            learn.stop = True
            learn.info["stopped_early"] = True


@dataclass
class Resume:
    """Where a run continues from: its checkpoint dir and state.json (None for a fresh run)."""

    ckdir: object  # Path of the checkpoint being resumed (may differ from the one written)
    saved: dict | None = None


class Checkpoint(Callback):
    """Resume (before_fit), keep the best epoch's weights + validation probabilities, and at the
    end hand the best weights to ``learn.final_state`` and clean the checkpoint dir up.
    Ctrl-C keeps the run (the best epoch so far) when a best checkpoint exists."""

    order = 45
    order_before_fit = 0  # resume before DDP wraps the model and anyone reads the history

    def __init__(self, ck: Checkpoints, resume: Resume, state_base: dict, val: Val):
        self.ck, self.resume, self.state_base, self.val = ck, resume, state_base, val
        self.main = is_main()

    def before_fit(self, learn: Learner) -> None:
        saved = self.resume.saved
        if saved is None:
            first = learn.history[0]
            learn.best = {"epoch": 0, "val_acc": -1.0, "val_loss": math.inf}
            if first["val_acc"] is not None:
                learn.best = {"epoch": 0, "val_acc": first["val_acc"], "val_loss": first["val_loss"]}
                if self.main:
                    self.ck.save_best(learn.model, head_probs(copy.deepcopy(learn.model.head).cpu(), self.val.x))
            return
        self._load(learn, saved)

    def _load(self, learn: Learner, saved: dict) -> None:
        learn.start_epoch = int(saved["epoch"])
        source = Checkpoints(self.resume.ckdir)
        sd, blob = source.load_last(learn.start_epoch)
        learn.model.load_state_dict(sd)
        learn.optim.opt.load_state_dict(blob["optimizer"])
        learn.optim.sched.load_state_dict(blob["scheduler"])
        if learn.optim.scaler is not None and blob.get("scaler"):
            learn.optim.scaler.load_state_dict(blob["scaler"])
        learn.history = list(saved["history"])
        learn.best = dict(saved["best"])
        if source.dir != self.ck.dir and self.main:  # carry the best weights over to the new run's dir
            sd_best, probs_best = source.load_best()
            self.ck.dir.mkdir(parents=True, exist_ok=True)
            extra = {"_val_probs": torch.from_numpy(probs_best)} if probs_best is not None else {}
            save_safetensors(self.ck.dir / "best.safetensors", {**sd_best, **extra})

    def after_epoch(self, learn: Learner) -> None:
        if not self.main:
            return
        if learn.improved or not self.val.paths:
            self.ck.save_best(learn.model, learn.val_probs)
        state = {**self.state_base, "history": learn.history, "best": learn.best}
        self.ck.save(learn.epoch, learn.model, learn.optim, state)

    def on_interrupt(self, learn: Learner) -> bool:
        return self.main and (self.ck.dir / "best.safetensors").is_file()

    def after_fit(self, learn: Learner) -> None:
        if not self.main:
            learn.final_state, learn.final_val_probs = unwrap(learn.net).state_dict(), None
            return
        learn.final_state, learn.final_val_probs = self.ck.load_best()
        if not learn.interrupted:  # done: keep only the history; the run's own weights are the best ones
            write_json(self.ck.dir / STATE, {**(self.ck.state() or {}), "finished": True})
            self.ck.clear()


class ProgressiveUnfreeze(Callback):
    """Train the last ``start`` depth groups; with ``progressive``, one more group every epoch
    (epoch e trains ``start + e - 1`` groups, whether or not the run was resumed)."""

    order = 10

    def __init__(self, start: int, progressive: bool, n_groups: int):
        self.start, self.progressive, self.n = start, progressive, n_groups

    def _target(self, epoch: int) -> int:
        return min(self.start + (max(epoch, 1) - 1 if self.progressive else 0), self.n)

    def before_fit(self, learn: Learner) -> None:
        learn.set_unfrozen(self._target(learn.start_epoch + 1))

    def before_epoch(self, learn: Learner) -> None:
        if self._target(learn.epoch) != learn.unfrozen:
            learn.set_unfrozen(self._target(learn.epoch))


class FrozenPrefixEngine(Callback):
    """On a CPU whose engine is onnxruntime, the frozen groups' forward pass runs there (see
    :class:`~transferlab.training.frozen.FrozenPrefix`); rebuilt whenever the unfrozen set changes."""

    order = 20

    def __init__(self, batch_size: int, size: int):
        self.batch_size, self.size = batch_size, size
        self.built_for: int | None = None
        self.prefix = None

    def before_epoch(self, learn: Learner) -> None:
        if learn.unfrozen != self.built_for:
            self.prefix = frozen_prefix(learn.model, learn.groups, learn.unfrozen, self.batch_size, self.size,
                                        learn.device)
            self.built_for = learn.unfrozen
        learn.forward = self.prefix or learn.net
        learn.info["frozen_groups_engine"] = "onnxruntime" if self.prefix is not None else "torch"

    def before_fit(self, learn: Learner) -> None:
        learn.info["frozen_groups_engine"] = "torch"


class WiSE(Callback):
    """WiSE-FT (Wortsman et al., CVPR 2022): the run keeps ``alpha`` x the fine-tuned weights +
    (1 - alpha) x the pretrained trunk with a linear probe as its head. The probe is fitted at the
    start of a fresh run and saved (``start.safetensors``) so a resumed run mixes with the same."""

    order = 60

    def __init__(self, alpha: float, pretrained: ImageClassifier, dirs: tuple, fit_probe):
        """``dirs``: the checkpoint dir written, then the one resumed from (if another);
        ``fit_probe()`` -> the linear-probe ``nn.Linear``."""
        self.alpha, self.pretrained, self.dirs, self.fit_probe = float(alpha), pretrained, dirs, fit_probe
        self.start_head: dict | None = None
        self.main = is_main()

    def before_fit(self, learn: Learner) -> None:
        if not self.main:
            return
        if learn.start_epoch == 0 and not learn.history[1:]:
            probe = self.fit_probe()
            self.start_head = {f"head.{k}": v for k, v in probe.state_dict().items()}
            self.dirs[0].mkdir(parents=True, exist_ok=True)
            save_safetensors(self.dirs[0] / "start.safetensors", self.start_head)
        else:
            self.start_head = load_start_head(*self.dirs)

    def after_fit(self, learn: Learner) -> None:
        if self.main:
            learn.final_state = wise_mix(learn.final_state, self.pretrained, self.start_head, self.alpha)
            learn.final_val_probs = None  # the best epoch's probabilities were the unmixed network's


def wise_mix(tuned: dict[str, torch.Tensor], pretrained: ImageClassifier, start_head: dict[str, torch.Tensor],
             alpha: float) -> dict[str, torch.Tensor]:
    """``alpha`` x the fine-tuned weights + (1 - alpha) x the pretrained trunk with a linear
    probe (logistic regression, C chosen as in ``--mode linear``) as its head. Mixing with the
    probe rather than with the warm-up head (AdamW, no C search) measured 90.7 vs 90.3 % on the
    Oxford subset (BENCHMARKS.md, issue 3). Integer buffers (BatchNorm's batch counters) are
    taken from the fine-tuned side."""
    start = {**{k: v for k, v in pretrained.state_dict().items() if not k.startswith("head.")}, **start_head}
    return {k: (alpha * v.float() + (1 - alpha) * start[k].float()).to(v.dtype)
            if k in start and v.is_floating_point() else v for k, v in tuned.items()}


@dataclass
class ProgressCallback(Callback):
    """A bar per epoch (running loss and accuracy), ending with the epoch's validation numbers.
    ``progress``: True / False / a bar factory (see :mod:`transferlab.progress`)."""

    progress: object = True
    order: int = 90
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    _advance: object = None

    def before_epoch(self, learn: Learner) -> None:
        bar: Bar = resolve(self.progress if is_main() else False)
        total = len(learn.sampler) * (learn.sampler.num_replicas or 1)
        self._advance = self._stack.enter_context(bar(f"epoch {learn.epoch}/{learn.epochs}", total))

    def after_batch(self, learn: Learner) -> None:
        b = learn.batch
        self._advance(b["n"], info=f"loss {b['loss']:.3f}  acc {b['acc']:.3f}")

    def after_epoch(self, learn: Learner) -> None:
        r = learn.row
        v = "" if r["val_acc"] is None else f"  val loss {r['val_loss']:.3f}  val acc {r['val_acc']:.3f}"
        self._advance(0, info=f"train loss {r['train_loss']:.3f}  acc {r['train_acc']:.3f}{v}")
        self._stack.close()

    def after_fit(self, learn: Learner) -> None:
        self._stack.close()

    def on_interrupt(self, learn: Learner) -> bool:
        self._stack.close()
        return False
