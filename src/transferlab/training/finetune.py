"""Mode ``finetune``: the recipe (end-to-end, fastai-style), with checkpoint/resume and
DistributedDataParallel under ``torchrun``. The loop is :class:`~transferlab.training.learner.Learner`;
everything around it is a callback (:mod:`transferlab.training.callbacks`).

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
- **Frozen groups run in onnxruntime on CPUs without bf16** (:mod:`transferlab.training.frozen`):
  with ``unfreeze="last:K"`` their forward pass is most of a step, and it needs no gradients.
- **``wise`` < 1 keeps a WiSE-FT mix** of the fine-tuned weights and the pretrained trunk with a
  linear probe: on ~20 photos per class the mix beat both of its ends (BENCHMARKS.md, issue 3).
- **BatchNorm statistics stay frozen by default** (``bn="frozen"``): with ~20 images per class
  and CPU-sized batches, running statistics re-estimated from augmented mini-batches are noisier
  than the ImageNet ones; it also keeps DDP ranks identical without SyncBatchNorm.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError, RunError
from ..models.groups import depth_groups
from ..models.heads import build_head
from ..probe import fit_linear_probe
from ..runtime.device import amp_dtype, default_device
from ..runtime.distributed import finish_distributed, init_distributed, is_main, world_size
from .augment import AugmentedImages, mixer
from .callbacks import (
    Checkpoint,
    EarlyStopping,
    FrozenPrefixEngine,
    ProgressCallback,
    ProgressiveUnfreeze,
    Recorder,
    Resume,
    Val,
    WiSE,
)
from .checkpoints import CHECKPOINT_DIR, STATE, Checkpoints, resumed_backbone
from .head import fit_head, score, split_features
from .job import Fitted, Job
from .learner import Learner, Optim, predict_paths
from .options import FinetuneOptions, HeadOptions, parse_unfreeze

__all__ = ["resumed_backbone", "train_finetune"]


@dataclass
class Setup:
    """A fine-tuning job after resume bookkeeping: the options and seed in force, devices, dirs."""

    job: Job
    options: FinetuneOptions
    seed: int
    device: torch.device
    ck: Checkpoints  # where this run writes its checkpoints
    resume: Resume


def _setup(job: Job) -> Setup:
    o = job.options
    device = init_distributed() if world_size() > 1 else torch.device(o.device or default_device())
    ckdir = Path(o.resume or job.out or "runs/finetune") / CHECKPOINT_DIR
    saved = Checkpoints(ckdir).state() if o.resume else None
    if o.resume and saved is None:
        raise RunError(f"nothing to resume: no {CHECKPOINT_DIR}/{STATE} in {o.resume}")
    if saved and saved.get("finished"):
        raise RunError(f"{o.resume} finished its {saved['epoch']} epochs already; nothing to resume")
    seed = job.seed
    if saved:  # a resumed run continues with the recipe it started with
        o = replace(o, **{k: v for k, v in saved["options"].items() if k in o.recipe()}).validate()
        seed = saved.get("seed", seed)
    ck = Checkpoints(Path(job.out) / CHECKPOINT_DIR) if job.out is not None else Checkpoints(ckdir)
    if saved is None and is_main():
        ck.clear(finished_too=True)  # a fresh run never mixes with old checkpoints
    return Setup(job, o, seed, device, ck, Resume(ckdir, saved))


@dataclass
class Data:
    """Readable images and their cached features, per split."""

    train_paths: list[str]
    yt: np.ndarray
    xt: np.ndarray
    val: Val
    ok_v: np.ndarray | None
    skipped: list


def _data(s: Setup) -> Data:
    job = s.job
    (xt, yt, ok_t, sk_t), (xv, yv, ok_v, sk_v) = split_features(job.backbone, job.train, job.val,
                                                                progress=job.progress, device=s.device)
    if len(np.unique(yt)) < 2:
        raise DataError("the training split has readable images of fewer than 2 classes")
    train_paths = [p for p, o in zip(job.train.paths, ok_t, strict=True) if o]
    val_paths = [p for p, o in zip(job.val.paths, ok_v, strict=True) if o] if ok_v is not None else []
    return Data(train_paths, yt, xt, Val(val_paths, yv, xv, job.backbone.data_config), ok_v, sk_t + sk_v)


def _warm_start(s: Setup, d: Data, spec: dict):
    """The head to start from and epoch 0 of the curves: fitted on cached features (frozen
    trunk), or a fresh head scored as it is; a resumed run's head comes from its checkpoint."""
    o = s.options
    if s.resume.saved is not None:
        return build_head(spec), []
    if int(o.head_epochs) > 0:
        fit = HeadOptions(epochs=int(o.head_epochs), lr=3e-3, batch_size=64, weight_decay=o.weight_decay,
                          patience=15, label_smoothing=o.label_smoothing)
        warm = fit_head(spec, (d.xt, d.yt), (d.val.x, d.val.y), fit, s.seed)
        return warm.head, [{"epoch": 0, "phase": "head (frozen trunk, cached features)",
                            "train_loss": warm.train_loss, "train_acc": warm.train_acc,
                            "val_loss": warm.val_loss, "val_acc": warm.val_acc}]
    torch.manual_seed(s.seed)
    head = build_head(spec)
    return head, [{"epoch": 0, "phase": "untrained head", **score(head, d.xt, d.yt, "train"),
                   **score(head, d.val.x, d.val.y, "val")}]


def group_lrs(o: FinetuneOptions, n: int) -> list[float]:
    """Discriminative rates: the deepest trunk group ``lr * trunk_lr``, geometric down to
    ``lr * trunk_lr / lr_mult`` for the stem (AdamW moves every weight by ~lr per step whatever
    its gradient, so pretrained convs need a much smaller step than a fresh head)."""
    return [o.lr * o.trunk_lr / o.lr_mult ** ((n - 1 - i) / max(n - 1, 1)) for i in range(n)]


def _optim(model, groups: list[list[str]], o: FinetuneOptions, steps_per_epoch: int, device) -> Optim:
    """AdamW over every depth group (frozen ones simply get no gradients) + one-cycle."""
    param_groups = [{"params": [p for name in g for p in model.trunk.get_submodule(name).parameters()], "lr": lr}
                    for g, lr in zip(groups, group_lrs(o, len(groups)), strict=True)]
    param_groups.append({"params": list(model.head.parameters()), "lr": o.lr})
    opt = torch.optim.AdamW(param_groups, lr=o.lr, weight_decay=o.weight_decay)
    total = max(int(o.epochs) * steps_per_epoch, 4)  # OneCycleLR needs >= 2 steps in each phase
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[g["lr"] for g in opt.param_groups], total_steps=total,
        pct_start=max(float(o.pct_start), 2.0 / total), div_factor=25.0, final_div_factor=1e4,
    )
    _, need_scaler = amp_dtype(device)
    return Optim(opt, sched, torch.amp.GradScaler("cuda") if need_scaler else None)


def default_workers(device: torch.device) -> int:
    """DataLoader processes per rank: decoding + augmentation overlaps the model on a spare core."""
    per_rank = (os.cpu_count() or 1) // world_size()
    if device.type == "cuda":
        return max(1, min(8, per_rank - 1))
    return 1 if per_rank >= 2 else 0


def _learner(s: Setup, d: Data, model, history: list[dict]) -> Learner:
    o, bb = s.options, s.job.backbone
    groups = depth_groups(model.trunk)
    model.requires_grad_(True)
    model.to(s.device).to(memory_format=torch.channels_last)  # before the optimizer sees the params
    data = AugmentedImages(d.train_paths, d.yt, bb.data_config, o.aug)
    steps = math.ceil(math.ceil(len(data) / world_size()) / int(o.batch_size))
    learn = Learner(model, data, o, _optim(model, groups, o, steps, s.device), s.device, seed=s.seed,
                    amp_dtype=amp_dtype(s.device)[0], mixer=mixer(o, len(s.job.train.classes)),
                    workers=o.workers if o.workers is not None else default_workers(s.device), groups=groups,
                    history=history)
    learn.callbacks = _callbacks(s, d, groups) + list(s.job.callbacks)
    return learn


def _callbacks(s: Setup, d: Data, groups: list[list[str]]) -> list:
    o, job = s.options, s.job
    n0, progressive = parse_unfreeze(str(o.unfreeze), len(groups))
    state_base = {"seed": s.seed, "options": o.recipe(), "world_size": world_size(),
                  "classes": job.train.classes, "backbone": job.backbone.name,
                  "input_size": job.backbone.data_config.input_size}
    cbs = [Checkpoint(s.ck, s.resume, state_base, d.val), ProgressiveUnfreeze(n0, progressive, len(groups)),
           FrozenPrefixEngine(int(o.batch_size), job.backbone.data_config.input_size), Recorder(d.val),
           EarlyStopping(o.patience, bool(d.val.paths)), ProgressCallback(job.progress)]
    if float(o.wise) < 1:
        k = len(job.train.classes)
        dirs = tuple(dict.fromkeys([s.ck.dir, Path(s.resume.ckdir)]))
        cbs.append(WiSE(o.wise, job.backbone.model, dirs,
                        lambda: fit_linear_probe(d.xt, d.yt, d.val.x, d.val.y, k, s.seed)[0]))
    return cbs


def train_finetune(job: Job) -> Fitted:
    """Head warm-up on cached features, then ``epochs`` epochs of end-to-end training of the
    unfrozen depth groups. Best epoch (validation accuracy, then loss) is what the run keeps;
    without a validation split, the last epoch."""
    s = _setup(job)
    d = _data(s)
    spec = {"type": "linear", "in": job.backbone.feature_dim, "out": len(job.train.classes)}
    model = copy.deepcopy(job.backbone.model)
    model.head, history = _warm_start(s, d, spec)
    learn = _learner(s, d, model, history).fit()
    if world_size() > 1:
        finish_distributed()
    return _fitted(s, d, learn, spec)


def _fitted(s: Setup, d: Data, learn: Learner, spec: dict) -> Fitted:
    """The run's network (best epoch, WiSE-mixed if asked) and what the run config records."""
    bb, o, val = s.job.backbone, s.options, d.val
    final = copy.deepcopy(bb.model)
    final.head = build_head(spec)
    final.load_state_dict({k: v.cpu() for k, v in learn.final_state.items()})
    final.eval().requires_grad_(False)
    best_row = next((h for h in learn.history if h["epoch"] == learn.best["epoch"]), learn.history[-1])
    if not val.paths:
        best_row = learn.history[-1]
    val_probs = learn.final_val_probs
    if val_probs is not None and len(val_probs) != (0 if val.y is None else len(val.y)):
        val_probs = None
    if val_probs is None and val.x is not None and is_main():  # e.g. interrupted before any val pass
        val_probs = predict_paths(final.to(s.device), val.paths, bb.data_config, learn, int(o.batch_size) * 2)
        final.to("cpu")
    return Fitted(head=final.head, head_spec=spec, val_probs=val_probs, val_ok=d.ok_v,
                  train_accuracy=best_row.get("train_acc"), skipped=d.skipped, model_state=final.state_dict(),
                  info=_info(s, d, learn, best_row), history=learn.history, best_epoch=best_row["epoch"])


def _info(s: Setup, d: Data, learn: Learner, best_row: dict) -> dict:
    o, secs = s.options, learn.info.get("epoch_seconds", [])
    return {**o.recipe(), "workers": learn.workers, "best_epoch": best_row["epoch"],
            "epochs_run": len(learn.history) - 1, "stopped_early": learn.info.get("stopped_early", False),
            "interrupted": learn.interrupted,
            "resumed_from_epoch": learn.start_epoch if s.resume.saved else None, "world_size": world_size(),
            "device": str(s.device), "autocast": str(learn.amp_dtype).replace("torch.", "") if learn.amp_dtype
            else "fp32", "depth_groups": len(learn.groups),
            "group_lrs": [round(x, 8) for x in group_lrs(o, len(learn.groups))],
            "frozen_groups_engine": learn.info.get("frozen_groups_engine", "torch"),
            "seconds_per_epoch": round(float(np.mean(secs)), 2) if secs else None,
            "selection": "val_accuracy" if d.val.paths else "last_epoch"}
