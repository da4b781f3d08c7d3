"""The one input pipeline: image files -> batches of pixels, and the model settings (device,
channels_last, bf16, torch.compile) used to run them. Features, prediction, evaluation and
robustness all go through here.

Why it looks like this (measured on a 2-core AVX512-bf16 CPU, efficientnet_lite0, issue 5):

- Decoding happens in worker threads: PIL releases the GIL while it decodes and resamples, so
  threads overlap the model without pickling pixels between processes.
- Large JPEGs are decoded at 1/2..1/8 scale by libjpeg (``Image.draft``, in :func:`load_rgb`),
  then resized *and* centre-cropped in one PIL resample (``box=``): only the S x S output pixels
  are computed, with the same geometry as torchvision's resize + centre crop.
- Batches stay **uint8** and are laid out NHWC, which viewed as NCHW *is* ``channels_last``:
  a quarter of the bytes to move (pinned + non_blocking on CUDA) and the float conversion
  happens on the device, fused with the model's normalisation when compiled.
- On CPUs without native bf16 (AVX2 only) torch's fp32 kernels for these depthwise-separable
  networks are slow: efficientnet_lite0 ran at 24 img/s eager and 49 compiled, against 140-160
  in onnxruntime on the same 2 cores. There the model is exported once to ONNX and run by
  onnxruntime (fp32, same features to 1e-5); see :func:`engine_default`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .backbones import DataConfig
from .images import BadImage, load_rgb


@dataclass
class Batch:
    """Decoded images of one batch. ``data`` is uint8 [b, 3, S, S] in ``channels_last`` memory
    (NHWC); ``pixels`` is the float [0, 1] view most callers want."""

    indices: list[int]  # positions in the input list of the images in ``data``
    data: torch.Tensor  # [b, 3, S, S] uint8, channels_last
    failed: list[tuple[int, str]] = field(default_factory=list)  # (position, reason)

    @property
    def pixels(self) -> torch.Tensor:
        """[b, 3, S, S] float32 in [0, 1] (channels_last)."""
        return to_pixels(self.data)


def to_pixels(data: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """uint8 batch -> float [0, 1] on ``device``: move the small uint8 tensor, convert there."""
    if device is not None:
        data = data.to(device, non_blocking=True)
    return data.float().div_(255.0)


# ----------------------------------------------------------------------------------------------
# Decoding one file
# ----------------------------------------------------------------------------------------------
def decode_array(path: str | Path, dc: DataConfig) -> np.ndarray:
    """One file -> [S, S, 3] uint8 RGB, with JPEG draft decoding for large files."""
    arr = np.asarray(load_rgb(path, min_side=dc.resize_size))
    out = dc.resize_crop_array(arr)
    return arr if out is None else out


def decode(path: str | Path, dc: DataConfig) -> torch.Tensor:
    """One file -> [3, S, S] float tensor in [0, 1], with JPEG draft decoding for large files."""
    return torch.from_numpy(decode_array(path, dc).copy()).permute(2, 0, 1).float().div_(255.0)


def load_image(path: str | Path, dc: DataConfig) -> torch.Tensor:
    """A photo named by the user as the model sees it ([3, S, S] in [0, 1], the same decode as
    every batch); a missing or unreadable file raises :class:`~transferlab.errors.ImageError`."""
    from .errors import ImageError

    p = Path(path)
    if not p.exists():
        raise ImageError(f"image not found: {p}")
    if p.is_dir():
        raise ImageError(f"{p} is a directory; give an image file")
    try:
        return decode(p, dc)
    except BadImage as e:
        raise ImageError(f"cannot read {p}: {e}") from None


def _safe_decode_into(path, dc: DataConfig, out: np.ndarray) -> str | None:
    """Decode into a row of the batch buffer; the reason as a string if the file is unreadable."""
    try:
        out[...] = decode_array(path, dc)
        return None
    except BadImage as e:
        return str(e)
    except FileNotFoundError:
        return "file not found"
    except PermissionError:
        return "permission denied"
    except IsADirectoryError:
        return "is a directory"


def default_workers() -> int:
    """Decode threads: one per core. On a small CPU they share the cores with torch's threads
    (and fill its gaps); on a GPU box decoding is the bottleneck and wants every core."""
    return max(1, min(32, os.cpu_count() or 2))


def _lower_priority(nice: int) -> None:
    """Thread initializer: on Linux ``setpriority`` on a thread id renices that thread only, so
    decode threads yield the cores to torch's threads and fill the gaps between its kernels."""
    if nice and hasattr(os, "setpriority"):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)


def default_nice() -> int:
    """Niceness of decode threads (``TRANSFERLAB_DECODE_NICE``); see :func:`_lower_priority`.
    10 measured best of 0/10/19 with 1-2 threads on a quiet 2-core slice (benchmarks/
    decode_strategies.py, BENCHMARKS.md); the margin is small, hence the knob."""
    return int(os.environ.get("TRANSFERLAB_DECODE_NICE", "10"))


def iter_batches(
    paths: Sequence[str | Path],
    dc: DataConfig,
    batch_size: int = 64,
    workers: int | None = None,
    *,
    prefetch: int = 2,
    pin_memory: bool = False,
    nice: int | None = None,
) -> Iterator[Batch]:
    """Decode in a thread pool while the caller runs the model on earlier batches.

    Up to ``prefetch`` batches are decoded ahead. Unreadable files are reported in
    ``Batch.failed``, never raised. ``pin_memory`` (CUDA) allocates page-locked batches so the
    copy to the GPU can be ``non_blocking``. ``nice`` lowers the decode threads' priority.
    """
    workers = workers or default_workers()
    s = dc.input_size
    pin = pin_memory and torch.cuda.is_available()
    nice = default_nice() if nice is None else nice
    with ThreadPoolExecutor(workers, thread_name_prefix="decode", initializer=_lower_priority,
                            initargs=(nice,)) as pool:
        queue: deque[tuple[int, torch.Tensor, list[Future]]] = deque()
        starts = iter(range(0, len(paths), batch_size))

        def submit() -> bool:
            start = next(starts, None)
            if start is None:
                return False
            chunk = paths[start : start + batch_size]
            buf = torch.empty((len(chunk), s, s, 3), dtype=torch.uint8, pin_memory=pin)
            arr = buf.numpy()
            queue.append((start, buf, [pool.submit(_safe_decode_into, p, dc, arr[i]) for i, p in
                                       enumerate(chunk)]))
            return True

        for _ in range(max(1, prefetch)):
            submit()
        while queue:
            start, buf, futures = queue.popleft()
            batch = _collect(start, buf, futures)
            submit()
            yield batch


def _collect(start: int, buf: torch.Tensor, futures: list[Future]) -> Batch:
    reasons = [f.result() for f in futures]
    ok = [i for i, r in enumerate(reasons) if r is None]
    failed = [(start + i, r) for i, r in enumerate(reasons) if r is not None]
    if len(ok) < len(reasons):
        buf = buf[ok] if ok else buf[:0]
    # NHWC memory viewed as NCHW is exactly torch.channels_last: no copy.
    return Batch([start + i for i in ok], buf.permute(0, 3, 1, 2), failed)


# ----------------------------------------------------------------------------------------------
# Model execution settings
# ----------------------------------------------------------------------------------------------
def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """bf16 autocast only pays on CPUs with native bf16 math (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def bf16_default(device: torch.device) -> bool:
    """bf16 on CUDA and on bf16-capable CPUs; ``TRANSFERLAB_BF16=0`` forces fp32."""
    env = os.environ.get("TRANSFERLAB_BF16")
    if env is not None:
        return env not in ("0", "false", "no", "")
    return device.type == "cuda" or cpu_has_bf16()


def autocast(device: torch.device, enabled: bool | None = None):
    """bf16 autocast where the hardware supports it (CUDA, or a bf16-capable CPU)."""
    if enabled is None:
        enabled = bf16_default(device)
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def precision_tag(device: torch.device, engine: str = "torch") -> str:
    return "bf16" if engine == "torch" and bf16_default(device) else "fp32"


ENGINES = ("auto", "torch", "onnxruntime")


def onnxruntime_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnxscript"))


def engine_default(device: torch.device) -> str:
    """Who runs the model for extraction: ``TRANSFERLAB_ENGINE`` (torch | onnxruntime | auto).
    auto: onnxruntime on a CPU without native bf16 (measured 3x torch.compile there, fp32 exact);
    torch elsewhere (bf16 autocast on AVX512-bf16/AMX CPUs, CUDA)."""
    env = os.environ.get("TRANSFERLAB_ENGINE", "auto").strip().lower() or "auto"
    if env not in ENGINES:
        from .errors import TransferlabError

        raise TransferlabError(f"TRANSFERLAB_ENGINE={env!r}: choose one of {', '.join(ENGINES)}")
    if device.type != "cpu":
        return "torch"  # onnxruntime here is the CPU build
    if env == "auto":
        return "onnxruntime" if not cpu_has_bf16() and onnxruntime_available() else "torch"
    return env


def compile_default() -> bool:
    """``TRANSFERLAB_COMPILE=1`` turns on torch.compile for extraction (costs a one-off compile)."""
    return os.environ.get("TRANSFERLAB_COMPILE", "0") not in ("0", "false", "no", "")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu ({model or 'unknown'}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()})"


def warn_fallback(what: str, e: Exception, instead: str, stacklevel: int = 3) -> None:
    """One-line warning when a fast path (compile, ONNX export) fails and a slower one takes over."""
    why = (str(e).strip().splitlines() or [""])[0][:200]
    warnings.warn(f"{what} failed ({type(e).__name__}: {why}); {instead}", stacklevel=stacklevel)


class _NHWCFeatures(nn.Module):
    """uint8 NHWC pixels -> pooled features: the graph handed to onnxruntime, so batches go in
    as they come out of the decoder, without a transpose or float copy in Python."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.features(x.permute(0, 3, 1, 2).float().div(255.0))


def _weights_version(model: nn.Module) -> int:
    """Changes whenever a parameter or buffer is replaced or updated in place (torch bumps a
    tensor's ``_version`` on every in-place write), so an exported copy can tell it is stale."""
    return hash(tuple((id(t), t._version) for t in (*model.parameters(), *model.buffers())))


class OnnxFeatures:
    """``model.features`` (or another ``graph`` of ``model``'s weights: the frozen part of a
    fine-tuned network) exported to ONNX (torch.onnx, dynamo exporter) and run by onnxruntime.

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
            # inference_mode(False): the exporter traces, which inference tensors forbid; stdout is
            # captured because the exporter prints progress lines that would corrupt --json output.
            with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad(), \
                    contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                program = torch.onnx.export(graph, (torch.zeros(shape, dtype=dtype),), dynamo=True,
                                             input_names=["x"], output_names=["f"], verbose=False)
            proto = program.model_proto.SerializeToString()
        finally:
            model.train(was_training)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        # No spin-waiting between kernels: spinning ORT threads hold the cores the decode threads
        # need; off measured b/c 0.93-0.94 against 0.86-0.88 on 2 cores, at the same (c).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(proto, opts, providers=["CPUExecutionProvider"])

    def stale(self, shape: tuple[int, ...]) -> bool:
        return shape != self.shape or _weights_version(self.model) != self.version

    def __call__(self, nhwc: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"x": nhwc})[0]


class FeatureRunner:
    """``model.features`` on uint8 channels_last batches with the fast settings.

    ``engine`` (see :func:`engine_default`): ``torch`` runs channels_last weights under bf16
    autocast (see :func:`bf16_default`), optionally ``torch.compile``d; ``onnxruntime`` runs an
    fp32 ONNX export of the model (bf16 and compile do not apply). Compiled and ONNX graphs have
    a fixed batch shape: short batches are zero-padded to ``batch_size``. ``compile_seconds`` is
    the one-off cost (compile or export), measured on the first call.
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
        self.engine = engine_default(self.device) if engine in (None, "auto") else engine
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
