"""The hot loop: uint8 batches from the decoder -> pooled features, with the fast settings
(channels_last, bf16 autocast, torch.compile, or onnxruntime). See :mod:`transferlab.data.loader`
for why batches look the way they do."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data.geometry import DataConfig
from ..data.loader import Batch, iter_batches
from .device import autocast, bf16_default, compile_default, default_device, device_name
from .onnx import OnnxFeatures
from .switches import ENGINES, engine_override, warn_fallback


class FeatureRunner:
    """``model.features`` on uint8 channels_last batches with the fast settings.

    ``engine``: ``torch`` runs channels_last weights under bf16
    autocast (see :func:`bf16_default`), optionally ``torch.compile``d; ``onnxruntime`` runs an
    fp32 ONNX export of the model (bf16 and compile do not apply). Compiled and ONNX graphs have
    a fixed batch shape: short batches are zero-padded to ``batch_size``. ``compile_seconds`` is
    the one-off cost (compile or export), measured on the first call. ``engine`` None or ``auto``
    here means ``TRANSFERLAB_ENGINE``, else torch: the runner cannot time engines for a network it
    has not seen at its input size, so callers that can ask :func:`transferlab.runtime.engine.engine_default`.
    """

    def __init__(
        self,
        model: nn.Module,
        device: torch.device | str | None = None,
        *,
        bf16: bool | None = None,
        channels_last: bool = True,
        compile: bool | None = None,
        batch_size: int = 64,
        engine: str | None = None,
    ):
        self.device = torch.device(device) if device else default_device()
        self.engine = (engine_override(self.device) or "torch") if engine in (None, "auto") else engine
        if self.engine not in ENGINES[1:]:
            raise ValueError(f"engine must be one of {ENGINES}, not {engine!r}")
        if self.engine == "onnxruntime" and self.device.type != "cpu":
            raise ValueError("engine 'onnxruntime' runs on the CPU only")
        onnx = self.engine == "onnxruntime"
        self.bf16 = False if onnx else bf16_default(self.device) if bf16 is None else bf16
        self.channels_last = channels_last
        self.compile = False if onnx else compile_default() if compile is None else compile
        self.batch_size = batch_size
        self.compile_seconds: float | None = None
        self._onnx: OnnxFeatures | None = None
        self.model = model.to(self.device)
        if channels_last and not onnx:
            self.model = self.model.to(memory_format=torch.channels_last)
        fn = self._eager
        if self.compile:
            fn = torch.compile(self._eager, dynamic=False)
        self._fn: Callable[[torch.Tensor], torch.Tensor] = fn

    def _eager(self, data: torch.Tensor) -> torch.Tensor:
        x = data.float().div(255.0)
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        x = x.contiguous(memory_format=fmt)
        with autocast(self.device, self.bf16):
            f = self.model.features(x)
        return f.float()

    @property
    def settings(self) -> dict:
        return {
            "device": device_name(self.device),
            "engine": self.engine,
            "bf16": self.bf16,
            "channels_last": self.channels_last,
            "compile": self.compile,
            "batch_size": self.batch_size,
            "torch_threads": torch.get_num_threads(),
        }

    def _fallback(self, what: str, e: Exception) -> None:
        warn_fallback(what, e, "running torch eager", stacklevel=4)
        self.engine, self.compile, self._fn, self._onnx = "torch", False, self._eager, None

    def _run_onnx(self, data: torch.Tensor) -> torch.Tensor:
        nhwc = data.permute(0, 2, 3, 1)  # our batches are NHWC in memory: a view, no copy
        if self._onnx is None or self._onnx.stale(tuple(nhwc.shape)):
            t0 = time.perf_counter()
            try:
                self._onnx = OnnxFeatures(self.model, tuple(nhwc.shape), torch.get_num_threads())
            except Exception as e:  # an architecture the exporter cannot handle: torch always works
                self._fallback("ONNX export", e)
                return self._fn(data)
            if self.compile_seconds is None:
                self.compile_seconds = time.perf_counter() - t0
        return torch.from_numpy(self._onnx(np.ascontiguousarray(nhwc.numpy())))

    @torch.inference_mode()
    def __call__(self, data: torch.Tensor) -> torch.Tensor:
        """uint8 [b, 3, S, S] -> float32 features [b, d] on the CPU."""
        n = data.shape[0]
        data = data.to(self.device, non_blocking=True)
        if (self.compile or self.engine == "onnxruntime") and n < self.batch_size:
            pad = data.new_zeros((self.batch_size - n, *data.shape[1:])).contiguous(
                memory_format=torch.channels_last
            )
            data = torch.cat([data, pad])
        if self.engine == "onnxruntime":
            out = self._run_onnx(data)
        elif self.compile and self.compile_seconds is None:
            t0 = time.perf_counter()
            try:
                out = self._fn(data)
            except Exception as e:  # inductor needs a C++ toolchain and can fail; eager always works
                self._fallback("torch.compile", e)
                out = self._fn(data)
            self.compile_seconds = time.perf_counter() - t0
        else:
            out = self._fn(data)
        return out[:n].cpu()


def run_features(
    paths: Sequence[str | Path],
    dc: DataConfig,
    runner: FeatureRunner,
    workers: int | None = None,
    prefetch: int = 2,
) -> Iterator[tuple[Batch, np.ndarray]]:
    """The hot loop shared by ``features.extract`` and ``bench``: decode ahead in threads, one
    model call per batch, features out as float32 numpy [b, d] (empty when a whole batch failed).
    Nothing is accumulated here, so memory stays flat however many images stream through."""
    batches = iter_batches(paths, dc, runner.batch_size, workers, prefetch=prefetch,
                           pin_memory=runner.device.type == "cuda")
    for batch in batches:
        feats = runner(batch.data).numpy() if batch.indices else np.zeros((0, 0), np.float32)
        yield batch, feats
