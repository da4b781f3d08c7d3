"""What an export directory holds: its file names and the exported graph's input and outputs.
Read here (:class:`~transferlab.inference.onnx_model.ExportedModel`), written by
:mod:`transferlab.export`; torch-free."""

from __future__ import annotations

import json
from pathlib import Path

INPUT = "pixels"
OUTPUTS = ("probs", "logits", "features", "fmap")
MODEL, LABELS, PREPROCESSING, HEAD, EXPORT, CARD = (
    "model.onnx", "labels.json", "preprocessing.json", "head.safetensors", "export.json", "MODEL_CARD.md")
BATCH = 32


def read_json(path: Path) -> dict:
    """A JSON file's object, or {} when it is missing or unreadable (optional metadata)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def is_export_dir(spec: str | Path) -> bool:
    """True for a directory written by an export (it has model.onnx and labels.json)."""
    return (Path(spec) / MODEL).is_file() and (Path(spec) / LABELS).is_file()
