"""An export directory as a :class:`~.base.PixelPredictor`, whatever engine runs its model file:
:class:`ExportFolder` reads what every export folder holds (labels, preprocessing, threshold, the
head's weights for the CAM), decodes photos with PIL + numpy, and turns the model's outputs into
probabilities, embeddings and heat maps. A subclass only runs its model file (``_run``):
onnxruntime (:mod:`.onnx_model`), TensorFlow or LiteRT (:mod:`.tf_model`). No torch import.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..data.pil import pil_pixels
from ..errors import ExportError
from .base import PixelPredictor
from .heatmap import cam_weights, normalize_cam
from .layout import EXPORT, HEAD, LABELS, PREPROCESSING, read_json


def load_head(path: Path) -> dict:
    """``head.safetensors``: the head's spec and float32 tensors (numpy)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        spec = json.loads((f.metadata() or {}).get("head", "{}"))
        return {"spec": spec, **{k: f.get_tensor(k) for k in f.keys()}}  # noqa: SIM118 - safe_open has no iter


class ExportFolder(PixelPredictor):
    """An export directory; the subclass says which ``model_file`` it runs (relative to the
    folder), its ``kind`` (``info["kind"]``) and how to run it (``_run``).

    Photos are decoded like the training pipeline (EXIF orientation, RGB, JPEG draft decoding,
    torchvision's resize + centre-crop geometry) but resampled by PIL, which differs from torch's
    antialiased resize by up to ~2/255 per pixel: probabilities from files can differ slightly
    from the Run's (the export's own parity check is on identical pixels).
    """

    kind = ""
    model_file = ""
    what = "an export directory"  # for the error when a file is missing

    def __init__(self, directory: str | Path, model_file: str | None = None):
        d = Path(directory)
        self.model_file = model_file or self.model_file
        for name in (self.model_file, LABELS, PREPROCESSING):
            if not (d / name).is_file():
                raise ExportError(f"not {self.what} (needs {self.model_file}, {LABELS}, {PREPROCESSING}): {d}")
        self.directory = d
        self.classes = list(json.loads((d / LABELS).read_text()))
        self.pre = json.loads((d / PREPROCESSING).read_text())
        meta = read_json(d / EXPORT)
        self.threshold = meta.get("threshold")
        self.config = None  # a run's RunConfig; an export carries export.json instead
        self.head = load_head(d / HEAD) if (d / HEAD).is_file() else None
        self.cam_ok = bool(meta.get("cam")) and self.head is not None
        bb = meta.get("backbone") or {}
        self.info = {"kind": self.kind, "backbone": bb.get("name"), "source": str(d), "file": self.model_file,
                     "weights_source": bb.get("source"), "input_size": int(self.pre["input_size"]),
                     "cam": self.cam_ok}

    def _run(self, nhwc: np.ndarray, names: tuple[str, ...]) -> tuple[np.ndarray, ...]:
        """uint8 [n, S, S, 3] -> the named outputs of the model file (see layout.OUTPUTS), numpy."""
        raise NotImplementedError

    def preprocess(self, image) -> np.ndarray:
        pre = self.pre
        return pil_pixels(image, int(pre["input_size"]), int(pre["resize_size"]), pre.get("interpolation", "bicubic"))

    def _forward(self, nhwc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probs, feats = self._run(np.ascontiguousarray(nhwc, np.uint8), ("probs", "features"))
        return probs, feats

    def _analyze(self, nhwc: np.ndarray):
        probs, feats, fmap = self._run(np.ascontiguousarray(nhwc, np.uint8), ("probs", "features", "fmap"))
        k = int(probs[0].argmax())
        cam = None
        if self.cam_ok:
            fm = channels_first(fmap[0], feats.shape[-1])
            cam = normalize_cam(np.maximum(np.tensordot(cam_weights(self.head, feats[0], k), fm, axes=(0, 0)), 0))
        return probs[0], feats[0], cam


def channels_first(fmap: np.ndarray, channels: int) -> np.ndarray:
    """One feature map as [C, h, w]: ONNX gives it so; onnx2tf's TensorFlow graphs give [h, w, C]."""
    if fmap.shape[0] != channels and fmap.shape[-1] == channels:
        return np.moveaxis(fmap, -1, 0)
    return fmap
