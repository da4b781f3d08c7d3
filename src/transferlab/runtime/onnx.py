"""A model's pooled features (or the frozen part of a fine-tuned network) exported to ONNX and
run by onnxruntime; :class:`OnnxFeatures` notices when the torch weights changed since."""

from __future__ import annotations

import contextlib
import contextvars
import importlib.util
import io
import warnings

import numpy as np
import torch
from torch import nn


class _NHWCFeatures(nn.Module):
    """uint8 NHWC pixels -> pooled features: the graph handed to onnxruntime, so batches go in
    as they come out of the decoder, without a transpose or float copy in Python."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.features(x.permute(0, 3, 1, 2).float().div(255.0))


_LEAN = contextvars.ContextVar("transferlab_lean_sessions", default=False)


@contextlib.contextmanager
def lean_sessions():
    """Sessions created inside run without onnxruntime's memory arena. With the arena a session
    keeps its peak activations (~3.2 GB for lite2 @ 384 px, batch 64) even after it is dropped, so
    the auto search, which runs a dozen networks in one process, reached 19-24 GB; without it
    5.4-9.2 GB in the same time (BENCHMARKS.md, session 7). Everywhere else the arena stays: one
    network's inference is 30 % faster with it."""
    token = _LEAN.set(True)
    try:
        yield
    finally:
        _LEAN.reset(token)


def _weights_version(model: nn.Module) -> int:
    """Changes whenever a parameter or buffer is replaced or updated in place (torch bumps a
    tensor's ``_version`` on every in-place write), so an exported copy can tell it is stale."""
    return hash(tuple((id(t), t._version) for t in (*model.parameters(), *model.buffers())))


def export_onnx(graph: nn.Module, example: torch.Tensor) -> bytes:
    """``graph`` as an ONNX model (bytes) with a fixed input shape, input "x", output "f".

    The TorchScript exporter (``dynamo=False``) first: 0.5 s for efficientnet_lite0 against 5-7 s
    for the dynamo exporter, and after onnxruntime's graph optimisation both graphs are the same
    49 fused convolutions (checked, issue 16), with features equal to torch fp32 to 1e-5. The
    dynamo exporter (needs ``onnxscript``) is the fallback for what the old one cannot trace, and
    takes over when a torch release drops the old exporter.
    """
    # inference_mode(False): the exporters trace, which inference tensors forbid; stdout is captured
    # because the exporters print progress lines that would corrupt --json output.
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad(), \
            contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            buf = io.BytesIO()
            torch.onnx.export(graph, (example,), buf, dynamo=False, input_names=["x"], output_names=["f"],
                              opset_version=17)
            return buf.getvalue()
        except Exception as legacy_error:
            if importlib.util.find_spec("onnxscript") is None:
                raise
            try:
                program = torch.onnx.export(graph, (example,), dynamo=True, input_names=["x"], output_names=["f"],
                                            verbose=False)
            except Exception:
                raise legacy_error from None
            return program.model_proto.SerializeToString()


class OnnxFeatures:
    """``model.features`` (or another ``graph`` of ``model``'s weights: the frozen part of a
    fine-tuned network) exported to ONNX (:func:`export_onnx`) and run by onnxruntime.

    The graph has a static batch shape (static shapes ran ~40 % faster than a dynamic batch
    axis); callers pad short batches. ``stale(shape)`` says when the torch model has changed
    since the export (e.g. trained further) or the batch shape differs, so the runner exports
    again instead of using old weights or failing on the shape.
    """

    def __init__(self, model: nn.Module, shape: tuple[int, ...], threads: int, graph: nn.Module | None = None,
                 dtype: torch.dtype = torch.uint8):
        import onnxruntime as ort

        self.model, self.shape = model, shape
        self.version = _weights_version(model)
        was_training = model.training
        graph = (graph if graph is not None else _NHWCFeatures(model)).eval()
        try:
            proto = export_onnx(graph, torch.zeros(shape, dtype=dtype))
        finally:
            model.train(was_training)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        opts.enable_cpu_mem_arena = not _LEAN.get()
        # No spin-waiting between kernels: spinning ORT threads hold the cores the decode threads
        # need; off measured b/c 0.93-0.94 against 0.86-0.88 on 2 cores, at the same (c).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(proto, opts, providers=["CPUExecutionProvider"])

    def stale(self, shape: tuple[int, ...]) -> bool:
        return shape != self.shape or _weights_version(self.model) != self.version

    def __call__(self, nhwc: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"x": nhwc})[0]


