"""A trained run, or a bare backbone (its ImageNet head), as a :class:`~.base.Predictor` in
PyTorch: :class:`Run`. Folders of photos go through the batched, threaded, cached feature
pipeline (:mod:`transferlab.features`); single photos and heat maps through the same network.

Loading a run directory is :func:`transferlab.inference.load.load_run`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..data.geometry import DataConfig
from ..data.images import as_image_list, is_path, with_folders
from ..data.loader import image_array
from ..data.pil import as_rgb
from ..display import Table, card, one_line, percent
from ..errors import ImageError, RunError
from ..models.classifier import Backbone, ImageClassifier
from ..models.labels import resolve_class
from .base import PixelPredictor
from .config import RunConfig
from .rows import DEFAULT_TOP_K, Predictions, prediction_row, rows_for_paths


@dataclass(eq=False, repr=False)
class Run(PixelPredictor):
    """A classifier: backbone + head + its class names. ``path`` and ``config`` are None for a
    bare backbone."""

    backbone: Backbone
    classes: list[str]
    config: RunConfig | None = None
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

    @property
    def mode(self) -> str | None:
        """linear | head | finetune | auto; None for a bare backbone (its ImageNet head)."""
        return self.config.mode if self.config else None

    @property
    def threshold(self) -> float | None:
        """Top-1 probability below which predictions are "unsure" (chosen on the run's validation
        data when it was trained; None for a bare backbone or a run trained without validation)."""
        return self.config.threshold if self.config else None

    @property
    def is_finetuned(self) -> bool:
        return self.mode == "finetune"

    @property
    def info(self) -> dict:
        return {"kind": "torch", "backbone": self.backbone.name, "source": self.name,
                "weights_source": self.backbone.source, "input_size": self.data_config.input_size, "cam": True}

    @property
    def leaderboard(self) -> Table | None:
        """An ``auto`` run's search, best first: one row per candidate (view, head, C, CV accuracy
        and spread, timings, status); None for other runs."""
        auto = self.config.auto if self.config else None
        if not auto:
            return None
        return Table(auto.get("leaderboard") or [], name=f"Leaderboard ({auto.get('why', '')})"[:120])

    # ------------------------------------------------------------------ how it shows itself
    def summary(self) -> dict:
        """The headline facts of the run: what a repr and a card show."""
        m, cfg = self.metrics, self.config
        return {"name": self.name, "mode": self.mode or "imagenet", "backbone": self.backbone.name,
                "classes": len(self.classes), "val_accuracy": m.get("val_accuracy"),
                "train_accuracy": m.get("train_accuracy"),
                "ece": ((m.get("calibration") or {}).get("ece_after")),
                "threshold": cfg.threshold if cfg else None, "seconds": m.get("seconds")}

    def __repr__(self) -> str:
        s = self.summary()
        where = {"path": s["name"]} if self.path else {}
        return one_line("Run", {**where, "mode": s["mode"], "backbone": s["backbone"], "classes": s["classes"],
                                "val_accuracy": s["val_accuracy"], "threshold": s["threshold"]})

    def _repr_html_(self) -> str:
        s = self.summary()
        fields = {"mode": s["mode"], "backbone": s["backbone"], "classes": s["classes"],
                  "validation accuracy": percent(s["val_accuracy"]), "train accuracy": percent(s["train_accuracy"]),
                  "ECE after calibration": percent(s["ece"]), "unsure below": s["threshold"],
                  "training time": None if s["seconds"] is None else f"{s['seconds']:.1f} s"}
        figs = [self.path / f for f in ("confusion.png", "reliability.png", "curves.png")] if self.path else []
        figs = [f for f in figs if f.is_file()]
        return card(f"Run {s['name']}", fields, figs, [f.stem for f in figs])

    def plot_curves(self, out: str | Path | None = None):
        """A fine-tuning run's loss and accuracy per epoch (best epoch marked), as a Figure."""
        from ..report.figures import plot_curves, saved

        history = self.metrics.get("history")
        if not history:
            raise RunError(f"{self.name} has no training curves (only fine-tuning runs have epochs)")
        return saved(plot_curves(history, best_epoch=self.metrics.get("best_epoch")), out)

    def plot_confusion(self, out: str | Path | None = None):
        """The confusion matrix on the run's own validation photos, as a Figure."""
        from ..report.figures import plot_confusion, saved

        val = self.metrics.get("val") or {}
        if "confusion" not in val:
            raise RunError(f"{self.name} kept no validation photos (val_fraction 0): evaluate it on data instead")
        return saved(plot_confusion(val["confusion"], self.classes, title="Validation confusion"), out)

    def class_index(self, query: str) -> int:
        """Index of a class by (fuzzy) name; see :func:`transferlab.models.labels.resolve_class`."""
        return resolve_class(query, self.classes, self.synonyms)

    # ------------------------------------------------------------------ many photos
    @torch.no_grad()
    def predict_proba(self, images, batch_size: int = 64, progress=False, tta: str | None = None) -> np.ndarray:
        """Class probabilities [n, k], one row per image, in order (like scikit-learn).

        ``images``: file paths, PIL images or uint8 HxWx3 RGB arrays (mixed freely), or one of
        them. A missing or unreadable file raises :class:`~transferlab.errors.ImageError`; use
        :meth:`predict_proba_paths` to skip (and report) unreadable files instead.
        ``tta``: ``flip`` or ``flip+crops`` test-time augmentation (:mod:`transferlab.inference.tta`)."""
        items = as_image_list(images)
        if all(is_path(i) for i in items):
            probs, skipped = self.predict_proba_paths(items, batch_size, progress=progress, tta=tta)
            if skipped:
                image_array(skipped[0][0], self.data_config)  # raises the ImageError that says why
                raise ImageError(f"cannot read {skipped[0][0]}: {skipped[0][1]}")
            return probs
        if tta:
            from .tta import predict_proba_tta_arrays

            return predict_proba_tta_arrays(self, items, tta, batch_size=batch_size)
        from ..features import extract_arrays

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
        from ..features import extract, extract_view

        if tta:
            from .tta import predict_proba_tta

            return predict_proba_tta(self, paths, tta, batch_size=batch_size, progress=progress)
        if self.pretrained_trunk:
            feats = extract_view(self.backbone, paths, cache=cache, progress=progress, batch_size=batch_size)
        else:
            feats = extract(self.backbone, paths, model=self.model, cache=cache, progress=progress,
                            batch_size=batch_size)
        logits = self._pooled_head()(torch.from_numpy(feats.features))
        return logits.softmax(-1).numpy(), feats.skipped

    def predict(self, images, top_k: int = DEFAULT_TOP_K, tta: str | None = None,
                threshold: float | None = None, batch_size: int = 32) -> Predictions:
        """Top-k rows per image (:mod:`transferlab.inference.rows`) for paths (a folder: its
        photos), PIL images or uint8 HxWx3 arrays (``path`` is None for in-memory images). A
        missing file raises ImageError; an unreadable one gets an ``error`` row so one bad photo
        does not hide the others.
        ``threshold`` defaults to the run's."""
        items = with_folders(images)
        threshold = self.threshold if threshold is None else threshold
        if not all(is_path(i) for i in items):
            probs = self.predict_proba(items, batch_size=batch_size, tta=tta)
            return Predictions([prediction_row(str(i) if is_path(i) else None, p, self.classes, top_k, threshold)
                                for i, p in zip(items, probs, strict=True)], self.name)
        for p in items:  # a typo in a path is a user error, not a skipped photo
            if not Path(p).is_file():
                image_array(p, self.data_config)  # raises ImageError: not found / a directory
        probs, skipped = self.predict_proba_paths(items, batch_size=batch_size, tta=tta)
        rows = rows_for_paths([str(p) for p in items], probs, dict(skipped), self.classes, top_k, threshold)
        return Predictions(rows, self.name)

    # ------------------------------------------------------------------ one photo (PixelPredictor)
    def preprocess(self, image) -> np.ndarray:
        """Files decode exactly as in training and :meth:`predict_proba`; in-memory images get the
        same EXIF / mode handling as an export gives them, then the same resize."""
        if not isinstance(image, (str, os.PathLike)):
            image = np.asarray(as_rgb(image))
        return image_array(Path(image) if isinstance(image, os.PathLike) else image, self.data_config)

    def _forward(self, nhwc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            f = self.model.features(to_float(nhwc))
            return self.model.head(f).softmax(-1).numpy(), f.numpy()

    def _analyze(self, nhwc: np.ndarray):
        from .cam import grad_cam

        r = grad_cam(self, to_float(nhwc))
        return r.probs[0], r.features[0], r.cam[0]


def to_float(nhwc: np.ndarray) -> torch.Tensor:
    """uint8 [n, S, S, 3] -> float tensor [n, 3, S, S] in [0, 1]."""
    # np.require copies only arrays torch cannot wrap safely (read-only PIL buffers, strided views)
    return torch.from_numpy(np.require(nhwc, requirements=["C", "W"])).permute(0, 3, 1, 2).float() / 255.0
