"""An export directory run by onnxruntime (:class:`ExportedModel`): PIL + numpy preprocessing,
the heat map from the exported feature map in numpy. No torch import."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..data.pil import pil_pixels
from ..errors import ExportError
from .base import PixelPredictor
from .heatmap import cam_weights, normalize_cam
from .layout import EXPORT, HEAD, INPUT, LABELS, MODEL, PREPROCESSING, read_json


def session(path: Path, threads: int = 0):
    """An onnxruntime CPU session for ``path``."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads  # 0: onnxruntime's default (one per physical core)
    opts.log_severity_level = 3
    # no spin-waiting: spinning threads would hold the cores that decode photos (see runtime notes)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _load_head(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        spec = json.loads((f.metadata() or {}).get("head", "{}"))
        return {"spec": spec, **{k: f.get_tensor(k) for k in f.keys()}}  # noqa: SIM118 - safe_open has no iter


class ExportedModel(PixelPredictor):
    """An export directory run by onnxruntime, with PIL + numpy preprocessing: no torch needed.

    Photos are decoded like the training pipeline (EXIF orientation, RGB, JPEG draft decoding,
    torchvision's resize + centre-crop geometry) but resampled by PIL, which differs from torch's
    antialiased resize by up to ~2/255 per pixel: probabilities from files can differ slightly
    from the Run's (the export's own parity check is on identical pixels).
    """

    def __init__(self, directory: str | Path, threads: int = 0):
        d = Path(directory)
        for name in (MODEL, LABELS, PREPROCESSING):
            if not (d / name).is_file():
                raise ExportError(f"not an export directory (needs {MODEL}, {LABELS}, {PREPROCESSING}): {d}")
        self.directory = d
        self.classes = list(json.loads((d / LABELS).read_text()))
        self.pre = json.loads((d / PREPROCESSING).read_text())
        meta = read_json(d / EXPORT)
        self.threshold = meta.get("threshold")
        self.config = None  # a run's RunConfig; an export carries export.json instead
        self.head = _load_head(d / HEAD) if (d / HEAD).is_file() else None
        self.cam_ok = bool(meta.get("cam")) and self.head is not None
        self.session = session(d / MODEL, threads)
        bb = meta.get("backbone") or {}
        self.info = {"kind": "onnx", "backbone": bb.get("name"), "source": str(d),
                     "weights_source": bb.get("source"), "input_size": int(self.pre["input_size"]),
                     "cam": self.cam_ok}

    def preprocess(self, image) -> np.ndarray:
        pre = self.pre
        return pil_pixels(image, int(pre["input_size"]), int(pre["resize_size"]), pre.get("interpolation", "bicubic"))

    def _forward(self, nhwc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probs, feats = self.session.run(["probs", "features"], {INPUT: np.ascontiguousarray(nhwc)})
        return probs, feats

    def _analyze(self, nhwc: np.ndarray):
        probs, feats, fmap = self.session.run(["probs", "features", "fmap"], {INPUT: np.ascontiguousarray(nhwc)})
        k = int(probs[0].argmax())
        cam = None
        if self.cam_ok:
            w = cam_weights(self.head, feats[0], k)
            cam = normalize_cam(np.maximum(np.tensordot(w, fmap[0], axes=(0, 0)), 0))
        return probs[0], feats[0], cam


