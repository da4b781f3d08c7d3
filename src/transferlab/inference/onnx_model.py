"""An export directory run by onnxruntime (:class:`ExportedModel`): PIL + numpy preprocessing,
the heat map from the exported feature map in numpy (:class:`~.folder.ExportFolder`). No torch import."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .folder import ExportFolder
from .layout import INPUT, MODEL


def session(path: Path, threads: int = 0):
    """An onnxruntime CPU session for ``path``."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads  # 0: onnxruntime's default (one per physical core)
    opts.log_severity_level = 3
    # no spin-waiting: spinning threads would hold the cores that decode photos (see runtime notes)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class ExportedModel(ExportFolder):
    """An export directory's ``model.onnx`` run by onnxruntime, with PIL + numpy preprocessing:
    no torch needed."""

    kind = "onnx"
    model_file = MODEL

    def __init__(self, directory: str | Path, threads: int = 0):
        super().__init__(directory)
        self.session = session(self.directory / MODEL, threads)

    def _run(self, nhwc: np.ndarray, names: tuple[str, ...]) -> tuple[np.ndarray, ...]:
        return tuple(self.session.run(list(names), {INPUT: nhwc}))
