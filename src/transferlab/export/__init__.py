"""Layer 10: export of a whole classifier (ONNX, TensorFlow SavedModel, LiteRT) and its model
cards. What reads an export (the onnxruntime, TensorFlow and LiteRT predictors) lives in
:mod:`transferlab.inference`; its names are re-exported here for 0.1.0 code.

- :mod:`.onnx`: :func:`export_onnx` (write + verify against PyTorch), :func:`verification_images`;
- :mod:`.tf`: :func:`export` (any format), :func:`export_tf` (SavedModel / LiteRT via onnx2tf);
  :mod:`.tflite`: LiteRT conversion and the metadata embedded in the file;
- :mod:`.metadata`: what ``model.onnx`` says about itself; :mod:`.hubcard`: README.md with
  Hugging Face model-card front matter;
- :mod:`.card`: :func:`model_card`, :func:`weights_licence`;
- :mod:`.layout`: :class:`ExportReport` and the writer's constants.

Importing this package imports no torch and no TensorFlow (``tests/test_export.py`` runs it with
torch blocked).
"""

from ..errors import ExportError
from ..inference.base import Analysis
from ..inference.heatmap import cam_weights, heatmap_overlay, normalize_cam
from ..inference.layout import is_export_dir
from ..inference.load import load_export as load_exported
from ..inference.load import load_model as load_predictor
from ..inference.onnx_model import ExportedModel
from ..inference.tf_model import LiteRTModel, SavedModelPredictor
from .card import model_card, weights_licence
from .layout import ExportReport
from .onnx import export_onnx, verification_images
from .tf import FORMATS, TFExportReport, export, export_tf

__all__ = [
    "FORMATS", "Analysis", "ExportError", "ExportReport", "ExportedModel", "LiteRTModel", "SavedModelPredictor",
    "TFExportReport", "cam_weights", "export", "export_onnx", "export_tf", "heatmap_overlay", "is_export_dir",
    "load_exported", "load_predictor", "model_card", "normalize_cam", "verification_images", "weights_licence",
]
