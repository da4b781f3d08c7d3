"""What an export directory holds: its file names, the exported graph's input and outputs, and
the report of the export that wrote it. Shared by the writer (:mod:`.onnx`, :mod:`.card`) and
the reader (:mod:`.predictor`); torch-free."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import ExportError

__all__ = ["ExportError", "ExportReport", "read_json", "run_threshold"]

OPSET = 17
INPUT = "pixels"
OUTPUTS = ("probs", "logits", "features", "fmap")
MODEL, LABELS, PREPROCESSING, HEAD, EXPORT, CARD = (
    "model.onnx", "labels.json", "preprocessing.json", "head.safetensors", "export.json", "MODEL_CARD.md")
MAX_DPROB = 1e-4  # parity bound between PyTorch and onnxruntime on identical pixels
BATCH = 32


@dataclass
class ExportReport:
    """What :func:`~transferlab.export.onnx.export_onnx` wrote and how closely onnxruntime
    reproduces PyTorch."""

    out_dir: str
    files: list[str]
    opset: int
    export_seconds: float
    verify_source: str  # "given images", "training data" or "scikit-image samples"
    n_images: int
    skipped: list[tuple[str, str]]
    max_abs_dprob: float
    max_abs_dfeatures: float
    top1_agreement: float
    torch_img_s: float
    onnx_img_s: float
    cam: bool  # the CAM can be computed from the exported outputs
    fmap_hw: list[int]  # spatial size of the feature map (the CAM's resolution)
    batch_size: int = BATCH

    def to_dict(self) -> dict:
        return asdict(self)


def read_json(path: Path) -> dict:
    """A JSON file's object, or {} when it is missing or unreadable (optional metadata)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def run_threshold(config: dict) -> float | None:
    """A decision threshold stored in a run's config (``predict.threshold`` or ``threshold``)."""
    t = (config.get("predict") or {}).get("threshold", config.get("threshold"))
    return float(t) if t is not None else None
