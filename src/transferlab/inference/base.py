"""The :class:`Predictor` protocol: what every model that answers "which class is this photo?"
offers, whatever runs it — a trained run or a bare backbone in PyTorch
(:class:`~transferlab.inference.torch_model.Run`), an export in onnxruntime
(:class:`~transferlab.inference.onnx_model.ExportedModel`). ``evaluate``, ``explain``, ``attack``,
``export``, the web app and the CLI take a Predictor from :func:`~transferlab.inference.load_model`.

:class:`PixelPredictor` implements the shared verbs once on top of two primitives a subclass
gives: how a photo becomes pixels (``preprocess``) and how pixels become outputs (``_forward``,
``_analyze``). Torch-free: an export predicts on a machine without PyTorch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from ..data.images import with_folders
from ..errors import ImageError, TransferlabError
from ..progress import resolve
from .layout import BATCH
from .rows import DEFAULT_TOP_K, Predictions, error_row, prediction_row

Skipped = list[tuple[str, str]]


@dataclass
class Analysis:
    """One image, one forward pass: class probabilities, L2-normalised embedding, and the CAM
    of the top-1 class (None when the model's embedding is not a pooled feature map)."""

    probs: np.ndarray  # [K]
    embedding: np.ndarray  # [D]
    cam: np.ndarray | None  # [h, w] in [0, 1]
    class_idx: int
    label: str
    pixels: np.ndarray = field(repr=False)  # [S, S, 3] uint8, the photo as the model saw it


@runtime_checkable
class Predictor(Protocol):
    """A classifier of photos. ``info`` says what runs it: ``kind`` (torch | onnx | savedmodel |
    litert), ``backbone``, ``source`` (run, export or backbone name), ``weights_source``,
    ``input_size``, ``cam``."""

    classes: list[str]
    threshold: float | None
    info: dict

    @property
    def name(self) -> str: ...

    def preprocess(self, image) -> np.ndarray: ...

    def predict_proba(self, images, batch_size: int = ...) -> np.ndarray: ...

    def predict_proba_paths(self, paths, batch_size: int = ..., *, progress=False,
                            cache: bool = False) -> tuple[np.ndarray, Skipped]: ...

    def predict(self, images, top_k: int = ..., threshold: float | None = None) -> list[dict]: ...

    def embed(self, images, batch_size: int = ...) -> np.ndarray: ...

    def analyze(self, image) -> Analysis: ...


class PixelPredictor:
    """Shared verbs; subclasses say how a photo becomes pixels and how pixels become outputs."""

    classes: list[str]
    threshold: float | None
    info: dict

    @property
    def name(self) -> str:
        return str(self.info.get("source"))

    def preprocess(self, image) -> np.ndarray:
        """A path, PIL image or HxWx3 uint8 array -> [S, S, 3] uint8 pixels, as the model sees it."""
        raise NotImplementedError

    def _forward(self, nhwc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 [n, S, S, 3] -> (probs [n, K], pooled features [n, D])."""
        raise NotImplementedError

    def _analyze(self, nhwc: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """uint8 [1, S, S, 3] -> (probs [K], features [D], CAM of the top-1 class or None)."""
        raise NotImplementedError

    def _outputs(self, pixels: list[np.ndarray], batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Preprocessed images -> (probs [n, K], features [n, D]), ``batch_size`` at a time."""
        if not pixels:
            return np.zeros((0, len(self.classes)), np.float32), np.zeros((0, 0), np.float32)
        outs = [self._forward(np.stack(pixels[i:i + batch_size])) for i in range(0, len(pixels), batch_size)]
        return np.concatenate([p for p, _ in outs]), np.concatenate([f for _, f in outs])

    def predict_proba(self, images, batch_size: int = BATCH) -> np.ndarray:
        """Class probabilities [n, K]; an unreadable image raises ImageError naming it."""
        return self._outputs([self.preprocess(im) for im in images], batch_size)[0]

    def predict_proba_paths(self, paths, batch_size: int = BATCH, *, progress=False,
                            cache: bool = False) -> tuple[np.ndarray, Skipped]:
        """(probs [n_readable, K], skipped [(path, why)]): unreadable files are skipped and
        reported, never raised (``cache`` is a torch run's feature cache; ignored here)."""
        del cache
        probs, skipped = [], []
        paths = [str(p) for p in paths]
        with resolve(progress)("predict", len(paths)) as advance:
            for i in range(0, len(paths), batch_size):
                pixels = []
                for p in paths[i:i + batch_size]:
                    try:
                        pixels.append(self.preprocess(p))
                    except ImageError as e:
                        skipped.append((p, str(e).removeprefix(f"cannot read {p}: ")))
                probs.append(self._outputs(pixels, batch_size)[0])
                advance(len(paths[i:i + batch_size]))
        k = len(self.classes)
        return (np.concatenate(probs) if probs else np.zeros((0, k), np.float32)), skipped

    def embed(self, images, batch_size: int = BATCH) -> np.ndarray:
        """L2-normalised embeddings [n, D]: cosine similarity is a dot product (duplicate search)."""
        return l2_normalize(self._outputs([self.preprocess(im) for im in images], batch_size)[1])

    def analyze(self, image) -> Analysis:
        """Probabilities, embedding and the top-1 class's CAM of one image in one pass."""
        pixels = self.preprocess(image)
        probs, feats, cam = self._analyze(pixels[None])
        k = int(probs.argmax())
        return Analysis(probs=probs, embedding=l2_normalize(feats[None])[0], cam=cam, class_idx=k,
                        label=self.classes[k], pixels=pixels)

    def predict(self, images, top_k: int = DEFAULT_TOP_K, threshold: float | None = None,
                tta: str | None = None) -> Predictions:
        """Rows in :mod:`transferlab.inference.rows`'s format, so the CLI, CSV and web app treat
        every kind of model alike; an unreadable file gets an error row (a missing one raises
        ImageError). ``threshold`` (the "unsure" cut-off) defaults to the model's own."""
        if tta:
            raise TransferlabError(f"tta is not available for {self.info.get('kind')} models")
        threshold = self.threshold if threshold is None else threshold
        out, pixels = [], []
        for im in with_folders(images):  # one photo, a list, or folders of them
            path = str(im) if isinstance(im, (str, os.PathLike)) else None
            if path is not None and not Path(path).exists() and not Path(path).is_symlink():
                raise ImageError(f"image not found: {path}")
            try:
                pixels.append(self.preprocess(im))
                out.append(path)
            except ImageError as e:
                out.append(error_row(path, str(e).removeprefix(f"cannot read {path}: ")))
        probs = iter(self._outputs(pixels, BATCH)[0])
        return Predictions([r if isinstance(r, dict) else prediction_row(r, next(probs), self.classes, top_k, threshold)
                            for r in out], self.name)

    def heatmap_overlay(self, image, cam: np.ndarray, alpha: float = 0.45):
        """The preprocessed photo (or ``Analysis.pixels``) with ``cam`` overlaid as a colour map."""
        from .heatmap import heatmap_overlay

        pixels = image if _is_pixels(image, self.input_size) else self.preprocess(image)
        return heatmap_overlay(pixels, cam, alpha)

    @property
    def input_size(self) -> int:
        return int(self.info["input_size"])


def _is_pixels(image, size: int) -> bool:
    return isinstance(image, np.ndarray) and image.shape == (size, size, 3) and image.dtype == np.uint8


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
