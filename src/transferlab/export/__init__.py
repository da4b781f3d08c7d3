"""Layer 10: ONNX export of a whole classifier, its model card, and predictors that share one
interface (:class:`ExportedModel` runs an export without torch; :class:`TorchPredictor` a Run).

- :mod:`.onnx`: :func:`export_onnx` (write + verify against PyTorch), :func:`verification_images`;
- :mod:`.card`: :func:`model_card`, :func:`weights_licence`;
- :mod:`.predictor`: :class:`ExportedModel`, :class:`TorchPredictor`, :class:`Analysis`,
  :func:`load_predictor`, :func:`load_exported`, :func:`is_export_dir`, :func:`predict_model`;
- :mod:`.layout`: file names, :class:`ExportReport`.

Importing this package imports no torch (``tests/test_export.py`` runs it with torch blocked).
"""

from ..errors import ExportError
from .card import model_card, weights_licence
from .layout import ExportReport, run_threshold
from .onnx import export_onnx, verification_images
from .predictor import (
    Analysis,
    ExportedModel,
    TorchPredictor,
    cam_weights,
    heatmap_overlay,
    is_export_dir,
    load_exported,
    load_predictor,
    normalize_cam,
    predict_model,
)

__all__ = [
    "Analysis", "ExportError", "ExportReport", "ExportedModel", "TorchPredictor", "cam_weights", "export_onnx",
    "heatmap_overlay", "is_export_dir", "load_exported", "load_predictor", "model_card", "normalize_cam",
    "predict_model", "run_threshold", "verification_images", "weights_licence",
]
