"""Where and in which precision the model runs: device, bf16 autocast, torch.compile switch.

bf16 autocast only pays on CPUs with native bf16 math (AVX512-BF16, AMX) and on CUDA, and for
training on a CPU only with AMX (:func:`amp_dtype`); on an AVX2-only CPU torch's fp32 kernels are
slow, and :mod:`transferlab.runtime.engine` hands the model to onnxruntime instead.
"""

from __future__ import annotations

import contextlib
import os
from functools import lru_cache
from pathlib import Path

import torch


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@lru_cache(maxsize=1)
def _cpu_flags() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_has_bf16() -> bool:
    """bf16 autocast only pays on CPUs with native bf16 math (AVX512-BF16 or AMX)."""
    return " avx512_bf16" in _cpu_flags() or " amx_bf16" in _cpu_flags()


def cpu_has_amx() -> bool:
    """AMX tiles: the CPU bf16 that training is left on (see :func:`amp_dtype`)."""
    return " amx_bf16" in _cpu_flags()


BF16_ENV = "TRANSFERLAB_BF16"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def bf16_forced() -> bool | None:
    """``TRANSFERLAB_BF16``: 1 forces bf16 autocast (on a CPU without native bf16 torch emulates
    it: slower, same numbers as a bf16 CPU, which is what a test of bf16 paths wants), 0 forces
    fp32; unset or empty means the hardware decides."""
    raw = os.environ.get(BF16_ENV, "").strip().lower()
    if not raw:
        return None
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    from ..errors import SettingError

    raise SettingError(f"{BF16_ENV}={raw!r}: give 1 (bf16 autocast) or 0 (fp32), or leave it unset")


def bf16_default(device: torch.device) -> bool:
    """bf16 on CUDA and on bf16-capable CPUs; ``TRANSFERLAB_BF16`` forces it on or off."""
    forced = bf16_forced()
    if forced is not None:
        return forced
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




def amp_dtype(device: torch.device) -> tuple[torch.dtype | None, bool]:
    """Training precision: (autocast dtype or None, needs GradScaler). CUDA: bf16, or fp16 +
    GradScaler on cards without bf16. CPU: bf16 only with AMX. On AVX512-BF16 without AMX, bf16
    inference is faster than fp32 (54 vs 36 img/s) but a fine-tuning epoch is slower (lite0, last:3,
    710 photos: 22.7-24.6 s vs 14.2-16.7 s with the frozen groups in onnxruntime; session 8), so
    training there runs fp32. ``TRANSFERLAB_BF16`` forces either way."""
    if device.type == "cuda":
        if not bf16_default(device):
            return None, False
        return (torch.bfloat16, False) if torch.cuda.is_bf16_supported() else (torch.float16, True)
    forced = bf16_forced()
    on = cpu_has_amx() if forced is None else forced
    return (torch.bfloat16, False) if on else (None, False)


def amp_autocast(device: torch.device, dtype: torch.dtype | None):
    """Autocast to ``dtype`` (from :func:`amp_dtype`), or nothing for fp32."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
