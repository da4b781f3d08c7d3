"""The one input pipeline: image files -> batches of [0, 1] pixel tensors, and the model settings
(device, channels_last, bf16) used to run them. Features, prediction, evaluation and robustness
all go through here."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch

from .backbones import DataConfig
from .images import BadImage, load_rgb


@dataclass
class Batch:
    indices: list[int]  # positions in the input list of the images in ``pixels``
    pixels: torch.Tensor  # [b, 3, S, S] float32 in [0, 1]
    failed: list[tuple[int, str]] = field(default_factory=list)  # (position, reason)


def decode(path: str | Path, dc: DataConfig) -> torch.Tensor:
    """One file -> [3, S, S] float tensor in [0, 1], with JPEG draft decoding for large files."""
    return dc.preprocess(load_rgb(path, min_side=dc.resize_size))


def _safe_decode(path, dc: DataConfig) -> torch.Tensor | str:
    try:
        return decode(path, dc)
    except BadImage as e:
        return str(e)
    except FileNotFoundError:
        return "file not found"
    except PermissionError:
        return "permission denied"
    except IsADirectoryError:
        return "is a directory"


def default_workers() -> int:
    return max(1, min(8, (os.cpu_count() or 2)))


def iter_batches(
    paths: Sequence[str | Path], dc: DataConfig, batch_size: int = 64, workers: int | None = None
) -> Iterator[Batch]:
    """Decode in a thread pool (PIL releases the GIL in decode and resize) while the caller runs
    the model on the previous batch. Unreadable files are reported in ``Batch.failed``."""
    workers = workers or default_workers()
    with ThreadPoolExecutor(workers) as pool:
        starts = range(0, len(paths), batch_size)
        pending = None
        for s in [*starts, None]:
            nxt = None
            if s is not None:
                chunk = paths[s : s + batch_size]
                nxt = (s, [pool.submit(_safe_decode, p, dc) for p in chunk])
            if pending is not None:
                yield _collect(*pending)
            pending = nxt


def _collect(start: int, futures) -> Batch:
    ok, tensors, failed = [], [], []
    for i, f in enumerate(futures):
        r = f.result()
        if isinstance(r, str):
            failed.append((start + i, r))
        else:
            ok.append(start + i)
            tensors.append(r)
    pixels = torch.stack(tensors) if tensors else torch.empty(0)
    return Batch(ok, pixels, failed)


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


def autocast(device: torch.device, enabled: bool | None = None):
    """bf16 autocast where the hardware supports it (CUDA, or a bf16-capable CPU)."""
    if enabled is None:
        enabled = device.type == "cuda" or cpu_has_bf16()
    if not enabled:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def precision_tag(device: torch.device) -> str:
    return "bf16" if (device.type == "cuda" or cpu_has_bf16()) else "fp32"
