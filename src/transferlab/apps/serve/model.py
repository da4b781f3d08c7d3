"""The model behind the catalog: one predictor, asked one photo at a time.

Predictions run under a lock: Grad-CAM hooks gradients into the network, and two heat maps
computed at once on one torch model would see each other's activations. On the 2-core machines
this project targets, one inference at a time is also the fastest order.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import threading
from dataclasses import dataclass

import numpy as np
from PIL import Image

DISPLAY_SIDE = 448  # the heat map is shown at least this large (2x the usual 224 crop)


@dataclass
class Analysis:
    """What the page and the API show about one photo."""

    top: list[tuple[str, float]]
    unsure: bool
    threshold: float
    embedding: np.ndarray
    heatmap: str | None  # data: URL of a JPEG, or None when not asked for


def load_model(spec: str):
    """The predictor for ``spec`` (export dir, run dir or backbone name), imported late so the
    web app's modules load without the model stack."""
    from ...inference.load import load_model as _load

    return _load(spec)


def _overlay_fn(predictor):
    """``predictor.heatmap_overlay(pixels, cam)`` if it has one, else the numpy one."""
    fn = getattr(predictor, "heatmap_overlay", None)
    if fn is None:
        from ...inference.heatmap import heatmap_overlay as fn
    return fn


def embed_key(predictor) -> str:
    """Which embedding space a vector lives in: vectors are compared only within one key, so a
    catalog served with a new network never matches photos through incomparable features."""
    # "source" (the run or export) is part of the key: a fine-tuned network's features differ from
    # its backbone's. Serving another run therefore re-embeds the stored photos once, at startup.
    info = dict(getattr(predictor, "info", {}) or {})
    keep = {k: info.get(k) for k in ("backbone", "source")}
    blob = json.dumps(keep, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class ModelService:
    """Top-k, "not sure", embedding and heat map for an uploaded photo."""

    def __init__(self, predictor, threshold: float | None = None, top_k: int = 3):
        self.predictor = predictor
        self.classes = [str(c) for c in predictor.classes]
        self.classes_set = frozenset(self.classes)
        own = getattr(predictor, "threshold", None)
        self.threshold = float(threshold if threshold is not None else own if own is not None else 0.5)
        self.top_k = max(1, min(top_k, len(self.classes)))
        self.embed_key = embed_key(predictor)
        self._overlay = _overlay_fn(predictor)
        self._lock = threading.Lock()

    def analyze(self, image: Image.Image, heatmap: bool = True) -> Analysis:
        with self._lock:
            a = self.predictor.analyze(image)  # one pass: probabilities, embedding and CAM
        probs, emb = np.asarray(a.probs), np.asarray(a.embedding)
        order = np.argsort(-probs, kind="stable")[: self.top_k]
        top = [(self.classes[i], float(probs[i])) for i in order]
        data_url = self._heatmap_url(a.pixels, a.cam) if heatmap and a.cam is not None else None
        return Analysis(top, top[0][1] < self.threshold, self.threshold, emb.astype(np.float32), data_url)

    def embed(self, images: list[Image.Image]) -> np.ndarray:
        with self._lock:
            return np.asarray(self.predictor.embed(images), dtype=np.float32)

    def _heatmap_url(self, pixels: np.ndarray, cam: np.ndarray) -> str:
        """The CAM over the crop the model saw, as an inline JPEG (no file to clean up)."""
        overlay = self._overlay(pixels, np.asarray(cam, dtype=np.float32)).convert("RGB")
        if overlay.width < DISPLAY_SIDE:
            overlay = overlay.resize((DISPLAY_SIDE, DISPLAY_SIDE), Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        overlay.save(buf, format="JPEG", quality=85)
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")

    @property
    def info(self) -> dict:
        return dict(getattr(self.predictor, "info", {}) or {})
