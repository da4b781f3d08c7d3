"""The frozen depth groups of a CPU fine-tune run by onnxruntime, the trainable rest in torch."""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from ..models.classifier import ImageClassifier
from ..runtime.distributed import world_size
from ..runtime.engine import choose_engine, warn_fallback
from ..runtime.onnx import OnnxFeatures


# ----------------------------------------------------------------------------------------------
# The frozen groups in onnxruntime (where it is measured faster than torch)
# ----------------------------------------------------------------------------------------------
class _Prefix(nn.Module):
    """normalize + the frozen depth groups in order: [0, 1] NHWC pixels -> the activation the first
    trainable group takes. NHWC in, so a channels_last batch goes to onnxruntime without a copy."""

    def __init__(self, model: ImageClassifier, names: list[str]):
        super().__init__()
        self.normalize = model.normalize
        self.parts = nn.ModuleList(model.trunk.get_submodule(n) for n in names)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x.permute(0, 3, 1, 2))
        for m in self.parts:
            x = m(x)
        return x


def _suffix_view(module: nn.Module, names: list[str], copies: list | None = None) -> nn.Module:
    """A shallow copy of ``module`` with the submodules ``names`` replaced by Identity. It shares
    every other module (and so every parameter) with the original, which stays untouched: training
    the view trains the model, and the model's state_dict stays complete. ``copies`` collects
    (copy, original) container pairs, whose train/eval flags the caller keeps in step."""
    view = copy.copy(module)
    view._modules = dict(module._modules)
    if copies is not None:
        copies.append((view, module))
    nested: dict[str, list[str]] = {}
    for n in names:
        first, _, rest = n.partition(".")
        nested.setdefault(first, []).append(rest)
    for first, rests in nested.items():
        view._modules[first] = (nn.Identity() if "" in rests
                                else _suffix_view(module._modules[first], rests, copies))
    return view


class FrozenPrefix:
    """The frozen depth groups of a CPU fine-tune, run by onnxruntime; the trainable rest in torch.

    With ``--unfreeze last:K`` most of a step's time is the frozen groups' forward pass (lite2 at
    384 px, batch 32: 3.2 s of 4.7 s in torch fp32 on an AVX2 CPU), and onnxruntime runs that part
    several times faster (see :class:`transferlab.runtime.onnx.OnnxFeatures`). The frozen groups are a
    fixed function while they stay frozen (eval-mode BatchNorm, no dropout), so the export stays
    valid until the unfrozen set changes. Built only after checking that the trunk really is its
    depth groups applied in order (the view's output equals the trunk's on a probe batch).
    """

    def __init__(self, model: ImageClassifier, names: list[str], batch_size: int, size: int, threads: int):
        self.model, self.batch_size = model, batch_size
        self.prefix = _Prefix(model, names).eval()  # its modes only matter to the export
        self.copies: list[tuple[nn.Module, nn.Module]] = []
        self.suffix = _suffix_view(model.trunk, names, self.copies)
        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                probe = torch.rand((2, size, size, 3), generator=torch.Generator().manual_seed(0))
                want = model.trunk(model.normalize(probe.permute(0, 3, 1, 2)))
                got = self.suffix(self.prefix(probe))
            if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-3, atol=1e-4):
                raise ValueError("the trunk is not its depth groups applied in order")
        finally:
            model.train(was)
        self.onnx = OnnxFeatures(self.prefix, (batch_size, size, size, 3), threads, graph=self.prefix,
                                 dtype=torch.float32)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] pixels [n, 3, S, S] (channels_last) -> logits, gradients for the trainable part."""
        for view, original in self.copies:  # e.g. a trunk's own dropout looks at its flag
            view.training = original.training
        n = x.shape[0]
        nhwc = x.permute(0, 2, 3, 1)
        if n < self.batch_size:
            nhwc = torch.cat([nhwc, nhwc.new_zeros((self.batch_size - n, *nhwc.shape[1:]))])
        h = torch.from_numpy(self.onnx(np.ascontiguousarray(nhwc.detach().numpy()))[:n])
        return self.model.head(self.suffix(h.contiguous(memory_format=torch.channels_last)))


def frozen_prefix(model: ImageClassifier, groups: list[list[str]], n_unfrozen: int, batch_size: int,
                  size: int, device: torch.device) -> FrozenPrefix | None:
    """A :class:`FrozenPrefix` when it applies: one CPU process where onnxruntime is the engine for
    this network at this input size (``TRANSFERLAB_ENGINE``, else measured: see
    :func:`transferlab.runtime.engine.choose_engine`), with at least one frozen group. None otherwise, or
    (with a warning) when the export fails: torch then runs the whole network as before."""
    names = [n for g in groups[: len(groups) - n_unfrozen] for n in g]
    if not names or device.type != "cpu" or world_size() > 1:
        return None
    if choose_engine(model, device, size) != "onnxruntime":  # TRANSFERLAB_ENGINE, else the measured verdict
        return None
    try:
        return FrozenPrefix(model, names, batch_size, size, torch.get_num_threads())
    except Exception as e:  # an architecture the exporter (or the view) cannot handle
        warn_fallback("frozen layers in onnxruntime", e, "running torch")
        return None


