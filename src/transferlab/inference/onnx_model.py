"""Predictors that share one interface: :class:`ExportedModel` (an export directory run by
onnxruntime, PIL + numpy preprocessing: no torch import) and :class:`TorchPredictor` (a
:class:`~transferlab.run.Run`). A web app takes either from :func:`load_predictor`.

This module imports torch only inside the functions of :class:`TorchPredictor`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.pil import as_rgb, pil_pixels
from ..errors import ExportError, ImageError, TransferlabError
from .layout import BATCH, EXPORT, HEAD, INPUT, LABELS, MODEL, PREPROCESSING, read_json, run_threshold


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


class _Predictor:
    """Shared verbs; subclasses say how a photo becomes pixels and how pixels become outputs."""

    classes: list[str]
    threshold: float | None
    info: dict

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

    def embed(self, images, batch_size: int = BATCH) -> np.ndarray:
        """L2-normalised embeddings [n, D]: cosine similarity is a dot product (duplicate search)."""
        return _l2(self._outputs([self.preprocess(im) for im in images], batch_size)[1])

    def analyze(self, image) -> Analysis:
        """Probabilities, embedding and the top-1 class's CAM of one image in one pass."""
        pixels = self.preprocess(image)
        probs, feats, cam = self._analyze(pixels[None])
        k = int(probs.argmax())
        return Analysis(probs=probs, embedding=_l2(feats[None])[0], cam=cam, class_idx=k,
                        label=self.classes[k], pixels=pixels)

    def predict(self, images, top_k: int = 5, threshold: float | None = None) -> list[dict]:
        """Rows in :mod:`transferlab.evaluate.predict`'s format, so the CLI, CSV and web app treat
        either kind of model alike; an unreadable file gets an error row (a missing one raises
        ImageError). ``threshold`` (the "unsure" cut-off) defaults to the model's own."""
        from ..evaluate.predict import error_row, prediction_row

        threshold = self.threshold if threshold is None else threshold
        out, pixels = [], []
        for im in images:
            path = str(im) if isinstance(im, (str, os.PathLike)) else None
            if path is not None and not Path(path).exists() and not Path(path).is_symlink():
                raise ImageError(f"image not found: {path}")
            try:
                pixels.append(self.preprocess(im))
                out.append(path)
            except ImageError as e:
                out.append(error_row(path, str(e).removeprefix(f"cannot read {path}: ")))
        probs = iter(self._outputs(pixels, BATCH)[0])
        return [r if isinstance(r, dict) else prediction_row(r, next(probs), self.classes, top_k, threshold)
                for r in out]

    def heatmap_overlay(self, image, cam: np.ndarray, alpha: float = 0.45):
        """The preprocessed photo (or ``Analysis.pixels``) with ``cam`` overlaid as a colour map."""
        pixels = image if _is_pixels(image, self.input_size) else self.preprocess(image)
        return heatmap_overlay(pixels, cam, alpha)

    @property
    def input_size(self) -> int:
        return int(self.info["input_size"])


def _is_pixels(image, size: int) -> bool:
    return isinstance(image, np.ndarray) and image.shape == (size, size, 3) and image.dtype == np.uint8


def _l2(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


# ----------------------------------------------------------------------------------------------
# Class-activation maps in numpy
# ----------------------------------------------------------------------------------------------
def normalize_cam(cam: np.ndarray) -> np.ndarray:
    """Scale a map to [0, 1] by its maximum; the same rule as
    :func:`transferlab.explain.cam.normalize_cam` (repeated here: that module imports torch)."""
    top = float(cam.max()) if cam.size else 0.0
    return (cam / top).astype(np.float32) if top > 0 else np.zeros_like(cam, np.float32)


def heatmap_overlay(pixels: np.ndarray, cam: np.ndarray, alpha: float = 0.45):
    """uint8 [S, S, 3] + CAM [h, w] in [0, 1] -> PIL image: the map upsampled (bilinear) and
    coloured with matplotlib's ``jet`` when available, else a blue-cyan-yellow-red ramp."""
    from PIL import Image

    s = pixels.shape[0]
    up = np.asarray(Image.fromarray(np.asarray(cam, np.float32), "F").resize((s, s), Image.Resampling.BILINEAR))
    rgb = _colormap(np.clip(up, 0, 1))
    out = (1 - alpha) * pixels.astype(np.float32) + alpha * rgb * 255.0
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8), "RGB")


def _colormap(v: np.ndarray) -> np.ndarray:
    try:
        from matplotlib import colormaps

        return colormaps["jet"](v)[..., :3]
    except ImportError:  # a jet-like ramp: piecewise-linear R, G, B
        r = np.clip(1.5 - np.abs(4 * v - 3), 0, 1)
        g = np.clip(1.5 - np.abs(4 * v - 2), 0, 1)
        b = np.clip(1.5 - np.abs(4 * v - 1), 0, 1)
        return np.stack([r, g, b], -1)


def cam_weights(head: dict, features: np.ndarray, k: int) -> np.ndarray:
    """d logit_k / d pooled features: Grad-CAM's channel weights (times 1/hw) when the features
    are the feature map's global average. Linear head: ``W[k]``; MLP head (exact-erf GELU):
    ``W1^T (W2[k] * gelu'(W1 f + b1))`` with ``gelu'(z) = Phi(z) + z phi(z)``."""
    if head["spec"].get("type") == "linear":
        return head["weight"][k].astype(np.float64)
    z = head["fc1.weight"].astype(np.float64) @ features + head["fc1.bias"]
    phi = np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + np.vectorize(math.erf)(z / math.sqrt(2)))
    return head["fc1.weight"].T.astype(np.float64) @ (head["fc2.weight"][k] * (cdf + z * phi))


# ----------------------------------------------------------------------------------------------
# onnxruntime, no torch
# ----------------------------------------------------------------------------------------------
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


class ExportedModel(_Predictor):
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


# ----------------------------------------------------------------------------------------------
# Torch-backed predictor, and the dispatchers
# ----------------------------------------------------------------------------------------------
class TorchPredictor(_Predictor):
    """A :class:`~transferlab.run.Run` behind the same interface as :class:`ExportedModel`
    (decoded by the training pipeline, CAM by autograd Grad-CAM)."""

    def __init__(self, run):
        self.run = run
        self.classes = list(run.classes)
        self.threshold = run_threshold(run.config)
        self.info = {"kind": "torch", "backbone": run.backbone.name, "source": run.name,
                     "weights_source": run.backbone.source, "input_size": run.data_config.input_size,
                     "cam": True}

    def preprocess(self, image) -> np.ndarray:
        """Files decode exactly as in training and ``Run.predict_proba``; in-memory images get the
        same EXIF / mode handling as :class:`ExportedModel` gives them, then the same resize."""
        from ..data.loader import image_array

        if not isinstance(image, (str, os.PathLike)):
            image = np.asarray(as_rgb(image))
        return image_array(Path(image) if isinstance(image, os.PathLike) else image, self.run.data_config)

    def _forward(self, nhwc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        with torch.inference_mode():
            f = self.run.model.features(to_float(nhwc))
            return self.run.model.head(f).softmax(-1).numpy(), f.numpy()

    def _analyze(self, nhwc: np.ndarray):
        from ..explain.cam import grad_cam

        r = grad_cam(self.run, to_float(nhwc))
        return r.probs[0], r.features[0], r.cam[0]


def to_float(nhwc: np.ndarray):
    """uint8 [n, S, S, 3] -> float tensor [n, 3, S, S] in [0, 1] (imports torch)."""
    import torch

    # np.require copies only arrays torch cannot wrap safely (read-only PIL buffers, strided views)
    return torch.from_numpy(np.require(nhwc, requirements=["C", "W"])).permute(0, 3, 1, 2).float() / 255.0


def load_exported(directory: str | Path) -> ExportedModel:
    """An export directory written by :func:`~transferlab.export.onnx.export_onnx`, ready to
    predict without torch."""
    return ExportedModel(directory)


def is_export_dir(spec: str | Path) -> bool:
    """True for a directory written by an export (it has model.onnx and labels.json)."""
    return (Path(spec) / MODEL).is_file() and (Path(spec) / LABELS).is_file()


def load_predictor(spec: str | Path) -> ExportedModel | TorchPredictor:
    """An export directory (has model.onnx + labels.json) -> :class:`ExportedModel`; otherwise a
    run directory or backbone name via :func:`transferlab.run.load` -> :class:`TorchPredictor`."""
    if is_export_dir(spec):
        return ExportedModel(spec)
    from ..run import load

    return TorchPredictor(load(spec))


def predict_model(spec: str | Path, paths, *, top_k: int = 5, threshold: float | None = None,
                  tta: str | None = None) -> list[dict]:
    """Prediction rows for image files with a model named by the user: an export directory runs
    in onnxruntime without importing torch; a run directory or backbone name runs through the
    run's batched, threaded pipeline (faster for folders than one image at a time)."""
    if is_export_dir(spec):
        if tta:
            raise TransferlabError("--tta is not available for an exported model")
        return load_exported(spec).predict(paths, top_k=top_k, threshold=threshold)
    from ..run import load

    return load(spec).predict(paths, top_k=top_k, tta=tta, threshold=threshold)
