"""The TensorFlow exports as predictors, without torch: :class:`SavedModelPredictor` runs
``saved_model/`` in TensorFlow through its ``serving_default`` signature, :class:`LiteRTModel` a
``.tflite`` file in the LiteRT interpreter (``ai-edge-litert``), as a phone runs it. Both are
:class:`~.folder.ExportFolder` subclasses: the same labels, preprocessing, threshold and heat map
as the ONNX export's :class:`~.onnx_model.ExportedModel`; only the engine differs.

Importing this module imports neither TensorFlow nor LiteRT; both come from the ``tensorflow``
extra (``pip install 'transferlab[tensorflow]'``). Written by :mod:`transferlab.export.tf`.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from ..errors import ExportError
from .folder import ExportFolder
from .layout import INPUT, MARKERS, SAVED_MODEL, SIGNATURE, SMALL_TFLITE, TFLITE, small_tflite

EXTRA = "pip install 'transferlab[tensorflow]'"


def import_tensorflow():
    """The ``tensorflow`` module, or ExportError naming the extra. Where triton is installed (it
    comes with torch) it is imported first: triton loaded into a process that already holds
    TensorFlow 2.21 segfaults, and torch loads triton lazily (``torch._dynamo``, which torchvision
    imports), so a later torch import could otherwise crash the process."""
    with contextlib.suppress(ImportError):
        import triton  # noqa: F401
    try:
        import tensorflow as tf
    except ImportError:
        raise ExportError(f"TensorFlow is not installed: {EXTRA}") from None
    return tf


def cpu_threads() -> int:
    """The cores this process may use (a container's or ``taskset``'s limit, not the machine's)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class LiteRTRunner:
    """One ``.tflite`` file in the LiteRT interpreter (XNNPACK on the CPU): uint8 pixels -> the
    ``serving_default`` signature's outputs as numpy arrays. The interpreter is not thread-safe;
    neither is this (the web app runs predictions under a lock)."""

    def __init__(self, path: str | Path, threads: int = 0):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise ExportError(f"running a LiteRT model needs ai-edge-litert: {EXTRA}") from None
        self.path = Path(path)
        self.interpreter = Interpreter(model_path=str(path), num_threads=threads or cpu_threads())
        self.runner = self.interpreter.get_signature_runner(SIGNATURE)

    def __call__(self, pixels: np.ndarray, names=("probs", "features")) -> tuple[np.ndarray, ...]:
        outs = self.runner(**{INPUT: np.ascontiguousarray(pixels, np.uint8)})
        return tuple(np.array(outs[n]) for n in names)  # copies: the interpreter reuses its buffers


class SavedModelPredictor(ExportFolder):
    """``saved_model/`` of an export, run by TensorFlow through its ``serving_default`` signature."""

    kind = "savedmodel"
    model_file = MARKERS["savedmodel"]
    what = "a SavedModel export directory"

    def __init__(self, directory: str | Path):
        super().__init__(directory)
        self._tf = import_tensorflow()
        self._fn = self._tf.saved_model.load(str(self.directory / SAVED_MODEL)).signatures[SIGNATURE]

    def _run(self, nhwc: np.ndarray, names: tuple[str, ...]) -> tuple[np.ndarray, ...]:
        outs = self._fn(**{INPUT: self._tf.constant(nhwc)})
        return tuple(outs[n].numpy() for n in names)


class LiteRTModel(ExportFolder):
    """A ``.tflite`` file of an export (``model.tflite``, or with ``small=True`` the smaller
    variant: ``model_int8.tflite`` or ``model_float16.tflite``), run by the LiteRT interpreter."""

    kind = "litert"
    model_file = TFLITE
    what = "a LiteRT export directory"

    def __init__(self, directory: str | Path, small: bool = False, threads: int = 0):
        super().__init__(directory, (small_tflite(directory) or SMALL_TFLITE) if small else TFLITE)
        self._runner = LiteRTRunner(self.directory / self.model_file, threads)

    def _run(self, nhwc: np.ndarray, names: tuple[str, ...]) -> tuple[np.ndarray, ...]:
        return self._runner(nhwc, names)
