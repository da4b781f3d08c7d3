"""The one input pipeline: image files (or in-memory images) -> batches of uint8 pixels.
Features, prediction, evaluation and robustness all go through here; who runs the model on those
batches is :mod:`transferlab.runtime`.

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
  onnxruntime (fp32, same features to 1e-5); see :func:`transferlab.runtime.engine.engine_default`.
"""


from __future__ import annotations

import contextlib
import os
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import ImageError
from .geometry import DataConfig
from .images import BadImage, as_image_list, is_path, load_rgb_array, missing_reason  # noqa: F401 - re-exported


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
    arr = load_rgb_array(path, min_side=dc.resize_size)
    out = dc.resize_crop_array(arr)
    return arr if out is None else out


def decode(path: str | Path, dc: DataConfig) -> torch.Tensor:
    """One file -> [3, S, S] float tensor in [0, 1], with JPEG draft decoding for large files."""
    return torch.from_numpy(decode_array(path, dc).copy()).permute(2, 0, 1).float().div_(255.0)


def load_image(path: str | Path, dc: DataConfig) -> torch.Tensor:
    """A photo named by the user as the model sees it ([3, S, S] in [0, 1], the same decode as
    every batch); a missing or unreadable file raises :class:`~transferlab.errors.ImageError`."""
    p = Path(path)
    if not p.exists():
        raise ImageError(f"image not found: {p}" if not p.is_symlink() else f"{missing_reason(p)}: {p}")
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
        return missing_reason(path)
    except PermissionError:
        return "permission denied"
    except IsADirectoryError:
        return "is a directory"


def default_workers() -> int:
    """Decode threads: one per core. On a small CPU they share the cores with torch's threads
    (and fill its gaps); on a GPU box decoding is the bottleneck and wants every core."""
    return max(1, min(32, os.cpu_count() or 2))


NICE_ENV = "TRANSFERLAB_DECODE_NICE"


def _lower_priority(target: int) -> None:
    """Thread initializer: name the OS thread (``top -H`` shows ``decode_N``) and, on Linux,
    renice this thread only (``setpriority`` on a thread id), so decode threads yield the cores
    to torch's threads and fill the gaps between its kernels. ``target`` is never below the
    creating thread's own niceness (see :func:`decode_niceness`): no privilege is needed, and
    a process started under ``nice -n 19`` keeps all its threads there."""
    tid = threading.get_native_id()
    with contextlib.suppress(OSError):
        Path(f"/proc/self/task/{tid}/comm").write_text(threading.current_thread().name[:15])
    if hasattr(os, "setpriority"):
        with contextlib.suppress(OSError):
            if target > os.getpriority(os.PRIO_PROCESS, tid):
                os.setpriority(os.PRIO_PROCESS, tid, target)


def default_nice() -> int:
    """How much lower than the process decode threads run (``TRANSFERLAB_DECODE_NICE``, an
    increment 0..19); see :func:`_lower_priority`. 10 measured best of 0/10/19 with 1-2
    threads on a quiet 2-core slice (benchmarks/decode_strategies.py, BENCHMARKS.md); the
    margin is small, hence the knob. A value that is not an integer in 0..19 is a user error:
    negative values would ask for more priority than the user gave the process."""
    from .._io import env_number

    return env_number(NICE_ENV, 10, int, lambda v: 0 <= v <= 19,
                      "give an integer from 0 to 19 (how much lower than the process the decode threads run)")


def decode_niceness(increment: int) -> int:
    """The absolute niceness for decode threads: the calling thread's own (new threads inherit
    it) plus ``increment``, capped at 19, the lowest priority there is."""
    try:
        own = os.getpriority(os.PRIO_PROCESS, 0)
    except (AttributeError, OSError):
        own = 0
    return min(19, own + max(0, increment))


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
    copy to the GPU can be ``non_blocking``. ``nice``: how much lower than the caller the
    decode threads run (an increment; default :func:`default_nice`).
    """
    workers = workers or default_workers()
    s = dc.input_size
    pin = pin_memory and torch.cuda.is_available()
    target = decode_niceness(default_nice() if nice is None else nice)
    with ThreadPoolExecutor(workers, thread_name_prefix="decode", initializer=_lower_priority,
                            initargs=(target,)) as pool:
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




def to_uint8(x: torch.Tensor) -> np.ndarray:
    """[3, S, S] tensor in [0, 1] -> [S, S, 3] uint8: exactly what a PNG stores."""
    return (x.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


# ----------------------------------------------------------------------------------------------
# Images given in memory (PIL images, numpy arrays) as well as files
# ----------------------------------------------------------------------------------------------
def image_array(item, dc: DataConfig) -> np.ndarray:
    """A path, a PIL image or a uint8 HxWx3 RGB array -> the model's uint8 [S, S, 3] input (the
    same resize + centre crop as every file); anything unreadable raises ImageError."""
    from PIL import Image

    if is_path(item):
        p = Path(item)
        if not p.is_file():
            raise ImageError(f"{p} is a directory; give an image file" if p.is_dir() else
                             f"image not found: {p}" if not p.is_symlink() else f"{missing_reason(p)}: {p}")
        try:
            return decode_array(p, dc)
        except BadImage as e:
            raise ImageError(f"cannot read {p}: {e}") from None
    if isinstance(item, Image.Image):
        arr = np.asarray(item.convert("RGB"))
    elif isinstance(item, np.ndarray) and item.dtype == np.uint8 and item.ndim == 3 and item.shape[2] == 3:
        arr = item
    else:
        what = f"array {item.dtype} {item.shape}" if isinstance(item, np.ndarray) else type(item).__name__
        raise ImageError(f"an image must be a file path, a PIL image or a uint8 HxWx3 RGB array, not {what}")
    out = dc.resize_crop_array(np.ascontiguousarray(arr))
    return arr if out is None else out
