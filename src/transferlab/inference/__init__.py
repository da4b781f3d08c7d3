"""Layer 6: inference — every model that predicts, behind one :class:`Predictor` protocol.

- :func:`load_model` (:mod:`.load`): an export directory, a run directory or a backbone name;
- :class:`Run` (:mod:`.torch_model`): a trained run or a bare backbone in PyTorch;
- :class:`ExportedModel` (:mod:`.onnx_model`): an export in onnxruntime, without torch;
  :class:`SavedModelPredictor` / :class:`LiteRTModel` (:mod:`.tf_model`): its TensorFlow and LiteRT
  files (the ``tensorflow`` extra); all three on :class:`ExportFolder` (:mod:`.folder`);
- :class:`RunConfig` (:mod:`.config`): the typed run config, its only reader and writer;
- :mod:`.tta` (test-time augmentation), :mod:`.rows` (the prediction rows of the CLI, CSV and web
  app), :mod:`.cam` (Grad-CAM) and :mod:`.heatmap` (the same map in numpy).

Names are imported on first use (PEP 562), so an export predicts without importing torch.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "Analysis": ".base", "Predictor": ".base", "PixelPredictor": ".base",
    "RunConfig": ".config", "BackboneRef": ".config", "SCHEMA_VERSION": ".config",
    "load_model": ".load", "load": ".load", "load_run": ".load", "from_backbone": ".load", "load_export": ".load",
    "Run": ".torch_model", "ExportedModel": ".onnx_model", "is_export_dir": ".layout", "export_kind": ".layout",
    "ExportFolder": ".folder", "SavedModelPredictor": ".tf_model", "LiteRTModel": ".tf_model",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
