"""A run directory is the unit of exchange: ``config.json`` + ``model.safetensors`` (+ metrics,
figures). :func:`load` turns a run directory *or* a bare backbone name (its ImageNet head) into a
:class:`Run`, which every model consumer (evaluate, predict, dream, attack, export...) takes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .data.geometry import DataConfig
from .data.loader import as_image_list
from .errors import ImageError, RunError, TransferlabError
from .models.classifier import Backbone, ImageClassifier
from .models.heads import build_head
from .models.labels import resolve_class
from .models.registry import create_backbone

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
METRICS = "metrics.json"


@dataclass
class Run:
    """A classifier: backbone + head + its class names. ``path`` is None for a bare backbone."""

    backbone: Backbone
    classes: list[str]
    config: dict = field(default_factory=dict)
    path: Path | None = None
    synonyms: list[list[str]] | None = None
    metrics: dict = field(default_factory=dict)  # metrics.json of a trained run (empty for a backbone)
    # the network (takes [0, 1] pixels): a fine-tuned run's own; else None, and ``model`` is the
    # backbone's trunk with ``head``, put together on first use (a cached job never builds it)
    network: ImageClassifier | None = field(default=None, repr=False)
    head: torch.nn.Module | None = field(default=None, repr=False)

    @property
    def model(self) -> ImageClassifier:
        if self.network is None:
            bb = self.backbone.model
            self.network = ImageClassifier(bb.normalize, bb.trunk, self.head if self.head is not None else bb.head)
        return self.network

    def _pooled_head(self) -> torch.nn.Module:
        """The head on pooled features, without putting the network together."""
        return self.head if self.network is None and self.head is not None else self.model.head

    @property
    def pretrained_trunk(self) -> bool:
        """Whether the network's trunk is the backbone's pretrained one, so that its features may
        come from (and go to) the feature cache under the backbone's key; a fine-tuned run's may not."""
        if self.network is None:
            return True
        return self.backbone.built and self.network.trunk is self.backbone.model.trunk

    @property
    def name(self) -> str:
        return str(self.path) if self.path else self.backbone.name

    @property
    def data_config(self) -> DataConfig:
        return self.backbone.data_config

    def class_index(self, query: str) -> int:
        """Index of a class by (fuzzy) name; see :func:`transferlab.models.labels.resolve_class`."""
        return resolve_class(query, self.classes, self.synonyms)

    @torch.no_grad()
    def predict_proba(self, images, batch_size: int = 64, progress=False, tta: str | None = None) -> np.ndarray:
        """Class probabilities [n, k], one row per image, in order (like scikit-learn).

        ``images``: file paths, PIL images or uint8 HxWx3 RGB arrays (mixed freely), or one of
        them. A missing or unreadable file raises :class:`~transferlab.errors.ImageError`; use
        :meth:`predict_proba_paths` to skip (and report) unreadable files instead.
        ``tta``: ``flip`` or ``flip+crops`` test-time augmentation (:mod:`transferlab.evaluate.tta`)."""
        from .data.loader import image_array, is_path

        items = as_image_list(images)
        if all(is_path(i) for i in items):
            probs, skipped = self.predict_proba_paths(items, batch_size, progress=progress, tta=tta)
            if skipped:
                image_array(skipped[0][0], self.data_config)  # raises the ImageError that says why
                raise ImageError(f"cannot read {skipped[0][0]}: {skipped[0][1]}")
            return probs
        if tta:
            from .evaluate.tta import predict_proba_tta_arrays

            return predict_proba_tta_arrays(self, items, tta, batch_size=batch_size)
        from .features import extract_arrays

        arrays = [image_array(i, self.data_config) for i in items]
        feats = extract_arrays(self.backbone, arrays, model=self.model, batch_size=batch_size)
        return self.model.head(torch.from_numpy(feats)).softmax(-1).numpy()

    @torch.no_grad()
    def predict_proba_paths(self, paths, batch_size: int = 64, *, progress=False, cache: bool = False,
                            tta: str | None = None) -> tuple[np.ndarray, list[tuple[str, str]]]:
        """The batch path for many files (evaluate, robustness): (probs [n_readable, k], skipped
        [(path, why)]); unreadable files are skipped and reported, never raised.
        ``cache``: reuse/store pooled features (only when the trunk is the pretrained one).
        An ensemble or feature view with its pretrained trunk takes the per-member path its head
        was trained on (:func:`transferlab.features.extract_view`), cached or not."""
        from .features import extract, extract_view

        if tta:
            from .evaluate.tta import predict_proba_tta

            return predict_proba_tta(self, paths, tta, batch_size=batch_size, progress=progress)
        if self.pretrained_trunk:
            feats = extract_view(self.backbone, paths, cache=cache, progress=progress, batch_size=batch_size)
        else:
            feats = extract(self.backbone, paths, model=self.model, cache=cache, progress=progress,
                            batch_size=batch_size)
        logits = self._pooled_head()(torch.from_numpy(feats.features))
        return logits.softmax(-1).numpy(), feats.skipped

    @property
    def threshold(self) -> float | None:
        """Top-1 probability below which predictions are "unsure" (chosen on the run's validation
        data when it was trained; None for a bare backbone or a run trained without validation)."""
        return (self.config.get("predict") or {}).get("threshold")

    @property
    def is_finetuned(self) -> bool:
        return self.config.get("mode") == "finetune"

    def predict(self, images, top_k: int = 5, tta: str | None = None, threshold: float | None = None) -> list[dict]:
        """Top-k predictions per image as rows ``{"path", "status", "label", "score", "top": [{"label",
        "score"}, ...]}`` (paths, PIL images or uint8 HxWx3 arrays; an unreadable file gets a
        ``status: error`` row); see :mod:`transferlab.evaluate.predict`."""
        from .evaluate.predict import predict

        return predict(self, images, top_k=top_k, tta=tta, threshold=threshold)

    def evaluate(self, data, split: str | None = None, out: str | Path | None = None, **kw) -> dict:
        from .evaluate.evaluate import evaluate

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
    return Run(backbone=bb, classes=bb.class_names, synonyms=bb.class_synonyms)


def from_backbone(name: str, weights: str | Path | None = None) -> Run:
    bb = create_backbone(name, weights=weights)
    return Run(backbone=bb, classes=bb.class_names, synonyms=bb.class_synonyms)


def _head(spec: dict, classes: list[str], cfg_file: Path) -> torch.nn.Module:
    """The head a run's config describes; its output size must be the number of classes, or
    every prediction would name the wrong class (a hand-edited or mixed-up config.json)."""
    try:
        head = build_head(spec)
    except (KeyError, TypeError, ValueError) as e:
        raise RunError(f"unreadable {cfg_file}: bad head {spec!r} ({e})") from None
    outs = [m.out_features for m in head.modules() if isinstance(m, torch.nn.Linear)]
    if not outs or outs[-1] != len(classes):
        raise RunError(f"{cfg_file} lists {len(classes)} classes but its head has "
                       f"{outs[-1] if outs else 'no'} outputs; the run directory is inconsistent")
    return head


def _calibrate(head: torch.nn.Module, cfg: dict, cfg_file: Path) -> None:
    """Apply the run's temperature (``config["calibration"]``, fitted on held-out data when it
    was trained) to its head, so every probability the run gives is calibrated."""
    from .evaluate.calibration import apply_temperature

    t = (cfg.get("calibration") or {}).get("temperature")
    if t is None:
        return
    try:
        t = float(t)
    except (TypeError, ValueError):
        t = -1.0
    if not 0 < t < float("inf"):
        raise RunError(f"unreadable {cfg_file}: calibration temperature must be a number > 0")
    apply_temperature(head, t)


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
    head = _head(head_spec, classes, cfg_file)
    if any(k.startswith("trunk.") for k in sd):  # fine-tuned: a network of its own, never the backbone's
        network = create_backbone(bb_cfg["name"], weights=bb_cfg.get("weights_path"), input_size=size).model
        network.head = head
        _load_weights(network, sd, w_file)
    else:  # a head on the pretrained trunk: checked and loaded without building the trunk
        network = None
        _load_weights(torch.nn.ModuleDict({"head": head}), sd, w_file)
    _calibrate(head, cfg, cfg_file)
    for m in (head, network):
        if m is not None:
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)
    try:
        metrics = json.loads((path / METRICS).read_text()) if (path / METRICS).is_file() else {}
    except ValueError:
        metrics = {}
    return Run(backbone=bb, classes=classes, config=cfg, path=path, synonyms=None, metrics=metrics, network=network,
               head=head)


def _load_weights(model: torch.nn.Module, sd: dict, w_file: Path) -> None:
    """``sd`` into ``model``: every head tensor present, nothing the model lacks, shapes matching."""
    try:
        missing, unexpected = model.load_state_dict(sd, strict=False)
    except RuntimeError as e:  # a tensor of the wrong shape
        raise RunError(f"{w_file} does not match its config: {str(e).splitlines()[-1].strip()[:200]}") from None
    if unexpected or any(k.startswith("head.") for k in missing):
        raise RunError(f"{w_file} does not match its config (missing {missing[:3]}, unexpected {unexpected[:3]})")
