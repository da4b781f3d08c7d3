"""ONNX -> TensorFlow: the classifier as a float NCHW ONNX graph (:func:`float_onnx`), converted
by onnx2tf into a Keras model and saved as a SavedModel with transferlab's signatures
(:func:`to_savedmodel`). Used by :mod:`.tf`; the LiteRT files are converted from that SavedModel
(:mod:`.tflite`).

onnx2tf was chosen over litert-torch (PyTorch -> LiteRT directly) because it reads the graph that
has already passed the ONNX export's parity check, gives a SavedModel *and* the input of the
LiteRT converter in one pass, and needs no JAX or transformers (litert-torch does, and writes no
SavedModel). The conversion runs offline: network connections are refused while onnx2tf runs
(some of its code paths fetch sample images), and quantisation uses no calibration data.
"""

from __future__ import annotations

import contextlib
import io
import socket
import warnings
from pathlib import Path

import numpy as np

from ..errors import ExportError
from ..inference.tf_model import import_tensorflow
from .layout import INPUT, OPSET, OUTPUTS, SIGNATURE
from .onnx import _whole_classifier


def float_onnx(run, path: Path, probe: np.ndarray) -> None:
    """The classifier as ONNX on float NCHW pixels in [0, 1], for onnx2tf. Not the export's
    uint8 NHWC graph: onnx2tf turns NCHW graphs into NHWC TensorFlow ones, which is what it does
    best, and the uint8 graph's Cast/Div prologue broke its Keras model ("Output tensors of a
    Functional model must be the output of a TensorFlow Layer"). The uint8 -> float step is put
    back in TensorFlow, so the SavedModel takes what the ONNX graph takes."""
    import torch

    whole = _whole_classifier(run)

    class FloatInput(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.whole = whole
            self.eval()

        def forward(self, x):
            fm, pooled = self.whole.split(self.whole.model.normalize(x))
            logits = self.whole.model.head(pooled)
            return logits.softmax(-1), logits, pooled, fm

    axes = {name: {0: "batch"} for name in ("x", *OUTPUTS)}
    x = torch.from_numpy(np.ascontiguousarray(probe)).permute(0, 3, 1, 2).float() / 255.0
    with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(FloatInput(), (x,), str(path), input_names=["x"], output_names=list(OUTPUTS),
                          dynamic_axes=axes, opset_version=OPSET, do_constant_folding=True, dynamo=False)


def to_savedmodel(onnx_path: Path, dest: Path, size: int) -> None:
    """``onnx_path`` (from :func:`float_onnx`) converted by onnx2tf, saved at ``dest`` with the
    ``serving_default`` signature (uint8 [n, size, size, 3] -> dict of :data:`OUTPUTS`) and ``embed``."""
    tf = import_tensorflow()
    keras_model = _onnx2tf(onnx_path, dest.parent / "onnx2tf")
    names = [n.split(":")[0] for n in keras_model.output_names]
    missing = [n for n in OUTPUTS if n not in names]
    if missing:
        raise ExportError(f"onnx2tf lost the outputs {missing} (it gave {names})")
    spec = tf.TensorSpec([None, size, size, 3], tf.uint8, name=INPUT)

    class Exported(tf.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        @tf.function(input_signature=[spec])
        def serve(self, pixels):
            outs = self.model(tf.cast(pixels, tf.float32) / 255.0)
            return {n: tf.identity(outs[names.index(n)], name=n) for n in OUTPUTS}

        @tf.function(input_signature=[spec])
        def embed(self, pixels):
            return self.model(tf.cast(pixels, tf.float32) / 255.0)[names.index("features")]

    module = Exported(keras_model)
    with _quiet():
        tf.saved_model.save(module, str(dest), signatures={SIGNATURE: module.serve.get_concrete_function(),
                                                           "embed": module.embed.get_concrete_function()})


def _onnx2tf(onnx_path: Path, work: Path, strict: bool = False):
    """onnx2tf's Keras model of ``onnx_path``, simplified first by onnxsim in this process (onnx2tf
    would call an ``onnxsim`` executable, which is not on PATH outside an activated venv; without
    it the "same" padding's shape arithmetic stays in the graph and onnx2tf pads the wrong axis).
    ``strict``: onnx2tf's per-op accuracy correction, slow; our own parity check decides instead."""
    import onnx
    import onnx2tf
    import onnxsim

    work.mkdir(parents=True, exist_ok=True)
    try:
        with _offline(), _quiet():
            model, ok = onnxsim.simplify(onnx.load(str(onnx_path)))
            if not ok:
                raise ExportError("onnxsim could not check the simplified ONNX graph")
            onnx.save(model, str(onnx_path))
            return onnx2tf.convert(input_onnx_file_path=str(onnx_path), output_folder_path=str(work),
                                   disable_model_save=True, non_verbose=True, not_use_onnxsim=True,
                                   disable_strict_mode=not strict)
    except ExportError:
        raise
    except Exception as e:
        why = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ExportError(f"onnx2tf could not convert the model: {why}") from None


@contextlib.contextmanager
def _offline():
    """Refuse every network connection while the converter runs: an export works offline, and
    a converter that tries to fetch something should fail here, not hang or depend on the network."""
    def refuse(*args, **kwargs):
        raise OSError("network access is disabled during a transferlab export")

    saved = socket.socket.connect, socket.create_connection
    socket.socket.connect, socket.create_connection = refuse, refuse  # type: ignore[method-assign]
    try:
        yield
    finally:
        socket.socket.connect, socket.create_connection = saved  # type: ignore[method-assign]


@contextlib.contextmanager
def _quiet():
    """onnx2tf and TensorFlow print progress on stdout, which would corrupt ``--json`` output."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield
