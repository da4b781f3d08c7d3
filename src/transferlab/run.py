"""A run directory is the unit of exchange: ``config.json`` + ``model.safetensors`` (+ metrics,
figures). :func:`load` turns a run directory *or* a bare backbone name (its ImageNet head) into a
:class:`Run`, which every model consumer (evaluate, predict, dream, attack, export...) takes."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .backbones import Backbone, DataConfig, ImageClassifier, create_backbone, resolve_class
from .errors import RunError, TransferlabError
from .heads import build_head

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
METRICS = "metrics.json"


@dataclass
class Run:
    """A classifier: backbone + head + its class names. ``path`` is None for a bare backbone."""

    backbone: Backbone
    model: ImageClassifier  # takes [0, 1] pixels
    classes: list[str]
    config: dict = field(default_factory=dict)
    path: Path | None = None
    synonyms: list[list[str]] | None = None

    @property
    def name(self) -> str:
        return str(self.path) if self.path else self.backbone.name

    @property
    def data_config(self) -> DataConfig:
        return self.backbone.data_config

    def class_index(self, query: str) -> int:
        """Index of a class by (fuzzy) name; see :func:`transferlab.backbones.resolve_class`."""
        return resolve_class(query, self.classes, self.synonyms)

    @torch.no_grad()
    def predict_proba(self, images, batch_size: int = 64, progress: bool = False,
                      cache: bool = False, tta: str | None = None) -> tuple[np.ndarray, list]:
        """Class probabilities for image paths. Returns (probs [n_ok, k], skipped [(path, why)]).
        ``cache``: reuse/store pooled features (only when the trunk is the pretrained one).
        ``tta``: ``flip`` or ``flip+crops`` test-time augmentation (see :mod:`transferlab.tta`)."""
        from .features import extract

        if tta:
            from .tta import predict_proba_tta

            return predict_proba_tta(self, images, tta, batch_size=batch_size, progress=progress)

        feats = extract(self.backbone, images, model=self.model, cache=cache, progress=progress,
                        batch_size=batch_size)
        logits = self.model.head(torch.from_numpy(feats.features))
        return logits.softmax(-1).numpy(), feats.skipped

    @property
    def is_finetuned(self) -> bool:
        return self.config.get("mode") == "finetune"

    def predict(self, images, top_k: int = 3) -> list[dict]:
        """Top-k predictions per image: ``[{"path", "top": [(class, prob), ...]} | {"path", "error"}]``."""
        from .predict import predict

        return predict(self, images, top_k=top_k)

    def evaluate(self, data, split: str | None = None, out: str | Path | None = None, **kw) -> dict:
        from .evaluate import evaluate

        return evaluate(self, data, split=split, out=out, **kw)


def load(spec: str | Path, weights: str | Path | None = None) -> Run:
    """A run directory, or a backbone name meaning that backbone's ImageNet classifier."""
    p = Path(spec)
    if p.is_dir():
        return load_run(p)
    if str(spec).endswith(("/", "\\")) or (p.suffix == "" and p.parent != Path(".") and not p.exists()):
        raise RunError(f"run directory not found: {spec}")
    try:
        bb = create_backbone(str(spec), weights=weights)
    except TransferlabError as e:
        raise type(e)(f"'{spec}' is neither a run directory nor a usable backbone: {e}") from None
    return Run(backbone=bb, model=bb.model, classes=bb.class_names, synonyms=bb.class_synonyms)


def from_backbone(name: str, weights: str | Path | None = None) -> Run:
    bb = create_backbone(name, weights=weights)
    return Run(backbone=bb, model=bb.model, classes=bb.class_names, synonyms=bb.class_synonyms)


def load_run(path: str | Path) -> Run:
    path = Path(path)
    cfg_file, w_file = path / CONFIG, path / WEIGHTS
    if not cfg_file.is_file() or not w_file.is_file():
        raise RunError(f"not a run directory (needs {CONFIG} and {WEIGHTS}): {path}")
    try:
        cfg = json.loads(cfg_file.read_text())
        bb_cfg = cfg["backbone"]
        classes = list(cfg["classes"])
        head_spec = cfg["head"]
    except (ValueError, KeyError, TypeError) as e:
        raise RunError(f"unreadable {cfg_file}: {e}") from None
    try:
        size = int(cfg.get("preprocessing", {}).get("input_size") or 0) or None
    except (TypeError, ValueError, AttributeError) as e:
        raise RunError(f"unreadable {cfg_file}: {e}") from None
    bb = create_backbone(bb_cfg["name"], weights=bb_cfg.get("weights_path"), input_size=size)
    if bb_cfg.get("weights_digest") and bb_cfg["weights_digest"] != bb.weights_digest:
        raise RunError(
            f"run {path} was trained on {bb.name} weights {bb_cfg['weights_digest']}, "
            f"but the installed weights are {bb.weights_digest}"
        )
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        sd = load_file(str(w_file))
    except (SafetensorError, OSError) as e:
        raise RunError(f"unreadable {w_file}: {e}") from None
    model = copy.deepcopy(bb.model) if any(k.startswith("trunk.") for k in sd) else ImageClassifier(
        bb.model.normalize, bb.model.trunk, torch.nn.Identity()
    )
    model.head = build_head(head_spec)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if unexpected or any(k.startswith("head.") for k in missing):
        raise RunError(f"{w_file} does not match its config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return Run(backbone=bb, model=model, classes=classes, config=cfg, path=path, synonyms=None)
