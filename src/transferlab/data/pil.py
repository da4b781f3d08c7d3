"""The torch-free twin of the training pipeline's decode, for predictors that must run where
PyTorch is not installed (:class:`transferlab.export.ExportedModel`): PIL + numpy only.

Photos are read by :func:`~transferlab.data.images.load_rgb` (EXIF orientation, every mode to
RGB, JPEG draft decoding, decompression-bomb refusal) and cut with torchvision's resize +
centre-crop geometry, but resampled by PIL, which differs from torch's antialiased resize by up
to ~2/255 per pixel. Keep this module free of torch (and of :mod:`transferlab.data.geometry`,
which imports it): ``tests/test_export.py`` checks with ``sys.modules['torch'] = None``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..errors import ImageError
from .images import BadImage, _to_rgb, load_rgb, missing_reason

RESAMPLE = {"nearest": Image.Resampling.NEAREST, "nearest-exact": Image.Resampling.NEAREST,
            "bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
            "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING,
            "lanczos": Image.Resampling.LANCZOS}


def open_image(path: str | os.PathLike, min_side: int | None = None) -> Image.Image:
    """:func:`load_rgb` for a file the user named: anything missing or unreadable is an
    :class:`~transferlab.errors.ImageError` naming the file."""
    p = Path(path)
    if not p.is_file():
        raise ImageError(f"{p} is a directory; give an image file" if p.is_dir() else
                         f"image not found: {p}" if not p.is_symlink() else f"{missing_reason(p)}: {p}")
    try:
        return load_rgb(p, min_side=min_side)
    except BadImage as e:
        raise ImageError(f"cannot read {p}: {e}") from None


def as_rgb(image) -> Image.Image:
    """A PIL image or a uint8 HxW / HxWx3 / HxWx4 array -> RGB PIL image, with the same EXIF
    and mode handling as a decoded file (alpha composited on white, 16-bit grey rescaled)."""
    if isinstance(image, Image.Image):
        return _to_rgb(ImageOps.exif_transpose(image))
    a = np.asarray(image)
    if a.dtype != np.uint8 or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ImageError(f"expected an HxWx3 uint8 array, got {a.dtype} {tuple(a.shape)}")
    return _to_rgb(Image.fromarray(a))


def resize_crop(img: Image.Image, size: int, resize_size: int, interpolation: str = "bicubic") -> np.ndarray:
    """torchvision's ``resize(resize_size)`` + ``center_crop(size)`` geometry with one PIL
    resample of the kept box (only the size x size output pixels are computed). An image
    already size x size passes through untouched, as in the training pipeline (a saved
    adversarial PNG must stay exact)."""
    s, r = size, resize_size
    w, h = img.size
    if (w, h) == (s, s):
        return np.asarray(img)
    nw, nh = (r, int(r * h / w)) if w <= h else (int(r * w / h), r)  # shorter side -> r, longer truncated
    resample = RESAMPLE.get(interpolation, Image.Resampling.BICUBIC)
    if min(nw, nh) < s:  # a crop larger than the resized image: torchvision zero-pads
        return _pad_center_crop(np.asarray(img.resize((nw, nh), resample)), s)
    top, left = round((nh - s) / 2.0), round((nw - s) / 2.0)
    sx, sy = w / nw, h / nh
    box = (left * sx, top * sy, (left + s) * sx, (top + s) * sy)
    return np.asarray(img.resize((s, s), resample, box=box))


def _pad_center_crop(a: np.ndarray, s: int) -> np.ndarray:
    """torchvision's ``center_crop`` when the crop exceeds the image: zero padding split
    ``p // 2`` before and the rest after, then the usual rounded offsets."""
    ph, pw = max(0, s - a.shape[0]), max(0, s - a.shape[1])
    a = np.pad(a, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    top, left = round((a.shape[0] - s) / 2.0), round((a.shape[1] - s) / 2.0)
    return a[top:top + s, left:left + s]


def pil_pixels(image, size: int, resize_size: int, interpolation: str = "bicubic") -> np.ndarray:
    """A path, PIL image or uint8 array -> the model's [size, size, 3] uint8 input (JPEG draft
    decoding for files: libjpeg scales down while both sides stay >= ``resize_size``)."""
    img = open_image(image, min_side=resize_size) if isinstance(image, (str, os.PathLike)) else as_rgb(image)
    return resize_crop(img, size, resize_size, interpolation)
