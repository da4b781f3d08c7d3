"""The report of the export that wrote a directory, and the writer's constants; the file names
are the reader's (:mod:`transferlab.inference.layout`). Torch-free."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from ..display import card, one_line
from ..errors import ExportError
from ..inference.layout import (  # noqa: F401 - the file names, shared with the reader
    BATCH,
    CARD,
    EXPORT,
    HEAD,
    INPUT,
    LABELS,
    MODEL,
    OUTPUTS,
    PREPROCESSING,
    README,
    SAVED_MODEL,
    SIGNATURE,
    SMALL_TFLITES,
    TFLITE,
    read_json,
)

__all__ = ["ExportError", "ExportReport", "read_json"]

OPSET = 17
MAX_DPROB = 1e-4  # parity bound between PyTorch and onnxruntime on identical pixels


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

    def __repr__(self) -> str:
        return one_line("ExportReport", {"out_dir": self.out_dir, "opset": self.opset, "images": self.n_images,
                                         "top1_agreement": self.top1_agreement,
                                         "max_abs_dprob": float(f"{self.max_abs_dprob:.2g}")})

    def _repr_html_(self) -> str:
        return card(f"Export {Path(self.out_dir).name}", {
            "files": ", ".join(Path(f).name for f in self.files), "opset": self.opset,
            "checked on": f"{self.n_images} {self.verify_source}",
            "top-1 agreement with PyTorch": f"{self.top1_agreement:.1%}",
            "largest probability difference": f"{self.max_abs_dprob:.1e}",
            "speed (PyTorch → onnxruntime)": f"{self.torch_img_s:.0f} → {self.onnx_img_s:.0f} images/s"})

    def to_dict(self) -> dict:
        return asdict(self)
