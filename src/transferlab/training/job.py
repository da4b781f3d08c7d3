"""What a trainer gets (:class:`Job`) and what it returns (:class:`Fitted`).

Every trainer has the same signature, ``trainer(job) -> Fitted``, so :mod:`transferlab.training.api`
can list them in one explicit table instead of modules registering themselves on import.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data.datasets import ImageDataset
from ..models.classifier import Backbone
from .options import RunOptions


@dataclass
class Job:
    """One training job: the backbone, the two splits and the options, validated."""

    backbone: Backbone
    train: ImageDataset
    val: ImageDataset
    run: RunOptions
    options: object  # LinearOptions | HeadOptions | FinetuneOptions | AutoOptions
    out: Path
    progress: object = True  # see transferlab.progress.resolve
    callbacks: list = field(default_factory=list)  # extra fine-tuning callbacks

    @property
    def seed(self) -> int:
        return self.run.seed


@dataclass
class Fitted:
    """What a trainer returns: the head (and, for fine-tuning, the whole network)."""

    head: nn.Module
    head_spec: dict
    val_probs: np.ndarray | None  # [n_val_ok, k]
    val_ok: np.ndarray | None  # bool mask over the val split
    train_accuracy: float | None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    model_state: dict[str, torch.Tensor] | None = None  # whole ImageClassifier (finetune)
    info: dict = field(default_factory=dict)  # mode-specific settings / history
    history: list[dict] = field(default_factory=list)
    best_epoch: int | None = None  # the epoch whose weights the run keeps (curves mark it)
    backbone: Backbone | None = None  # the run's backbone when the trainer chose it (auto, --feature-aug)
    # held-out (logits [n, k], labels [n], source) for temperature scaling when there are no
    # validation probabilities (CV out-of-fold logits, a head's early-stopping hold-out)
    calibration: tuple[np.ndarray, np.ndarray, str] | None = None
