"""Layer 10: ONNX export of a whole classifier and its model card. What reads an export (the
onnxruntime predictor) lives in :mod:`transferlab.inference`; its names are re-exported here for
0.1.0 code.

- :mod:`.onnx`: :func:`export_onnx` (write + verify against PyTorch), :func:`verification_images`;
- :mod:`.card`: :func:`model_card`, :func:`weights_licence`;
- :mod:`.layout`: :class:`ExportReport` and the writer's constants.

Importing this package imports no torch (``tests/test_export.py`` runs it with torch blocked).
"""

from ..errors import ExportError
from ..inference.base import Analysis
from ..inference.heatmap import cam_weights, heatmap_overlay, normalize_cam
from ..inference.layout import is_export_dir
from ..inference.load import load_model as load_predictor
from ..inference.onnx_model import ExportedModel
from ..inference.onnx_model import ExportedModel as load_exported
from .card import model_card, weights_licence
from .layout import ExportReport
from .onnx import export_onnx, verification_images

__all__ = [
    "Analysis", "ExportError", "ExportReport", "ExportedModel", "cam_weights", "export_onnx", "heatmap_overlay",
    "is_export_dir", "load_exported", "load_predictor", "model_card", "normalize_cam", "verification_images",
    "weights_licence",
]
