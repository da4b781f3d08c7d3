"""What an export directory holds: its file names and the exported graph's input and outputs.
Read here (:class:`~transferlab.inference.onnx_model.ExportedModel`, and the TensorFlow readers
of :mod:`.tf_model`), written by :mod:`transferlab.export`; torch-free."""

from __future__ import annotations

import json
from pathlib import Path

INPUT = "pixels"
OUTPUTS = ("probs", "logits", "features", "fmap")
MODEL, LABELS, PREPROCESSING, HEAD, EXPORT, CARD, README = (
    "model.onnx", "labels.json", "preprocessing.json", "head.safetensors", "export.json", "MODEL_CARD.md",
    "README.md")
BATCH = 32
# The TensorFlow formats: a SavedModel folder, and LiteRT files in float32 and one smaller variant,
# int8 weights or, where those lose too much, float16 (:mod:`transferlab.export.tflite` says why).
# Every one has the signature SIGNATURE: INPUT (uint8 [n, S, S, 3]) in, OUTPUTS out, like model.onnx.
SAVED_MODEL, TFLITE, SIGNATURE = "saved_model", "model.tflite", "serving_default"
SMALL_TFLITES = {"int8": "model_int8.tflite", "float16": "model_float16.tflite"}  # smallest first
SMALL_TFLITE = SMALL_TFLITES["int8"]
# The model file that marks each kind of export, in the order a folder holding several is read
# (onnxruntime first: the fastest here, and it needs neither TensorFlow nor LiteRT).
MARKERS = {"onnx": MODEL, "savedmodel": f"{SAVED_MODEL}/saved_model.pb", "litert": TFLITE}


def read_json(path: Path) -> dict:
    """A JSON file's object, or {} when it is missing or unreadable (optional metadata)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def export_kind(spec: str | Path) -> str | None:
    """Which kind of export a directory is (a key of :data:`MARKERS`: labels.json and that
    model file), or None when it is not one."""
    d = Path(spec)
    if not (d / LABELS).is_file():
        return None
    return next((kind for kind, marker in MARKERS.items() if (d / marker).is_file()), None)


def small_tflite(directory: str | Path) -> str | None:
    """The smaller LiteRT variant an export folder holds (a value of :data:`SMALL_TFLITES`), or None."""
    return next((f for f in SMALL_TFLITES.values() if (Path(directory) / f).is_file()), None)


def is_export_dir(spec: str | Path) -> bool:
    """True for a directory written by an export (labels.json and an ONNX, SavedModel or LiteRT model)."""
    return export_kind(spec) is not None
