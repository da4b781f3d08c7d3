"""Engine names, the ``TRANSFERLAB_ENGINE`` switch and the fallback warning: what the feature
runner and the engine choice (:mod:`transferlab.runtime.engine`) share. Kept apart so the
choice can time runners without an import cycle."""

from __future__ import annotations

import importlib.util
import os
import warnings

import torch

from ..errors import TransferlabError

ENGINES = ("auto", "torch", "onnxruntime")


def onnxruntime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def engine_override(device: torch.device) -> str | None:
    """The engine the user (``TRANSFERLAB_ENGINE=torch|onnxruntime``) or the device forces; None
    means ``auto``: the engine measured fastest here (:func:`transferlab.runtime.engine.choose_engine`)."""
    env = os.environ.get("TRANSFERLAB_ENGINE", "auto").strip().lower() or "auto"
    if env not in ENGINES:
        raise TransferlabError(f"TRANSFERLAB_ENGINE={env!r}: choose one of {', '.join(ENGINES)}")
    if device.type != "cpu":
        return "torch"  # onnxruntime here is the CPU build
    return None if env == "auto" else env


def warn_fallback(what: str, e: Exception, instead: str, stacklevel: int = 3) -> None:
    """One-line warning when a fast path (compile, ONNX export) fails and a slower one takes over."""
    why = (str(e).strip().splitlines() or [""])[0][:200]
    warnings.warn(f"{what} failed ({type(e).__name__}: {why}); {instead}", stacklevel=stacklevel)
