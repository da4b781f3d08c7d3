"""Reading one image safely: every mode becomes RGB, EXIF orientation applied, bad files raise.

A dataset loader calls :func:`load_rgb` and turns :class:`BadImage` into a skipped-file entry.
Nothing here ever writes to the file it reads.
"""

from __future__ import annotations

import errno
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")

# PIL warns above MAX_IMAGE_PIXELS and raises above twice that; we refuse at the warning level
# (about 89 Mpx, e.g. 10000x8900), far above any real photo a CNN needs.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS


class BadImage(Exception):
    """The file is not a readable image (empty, truncated, not an image, decompression bomb)."""


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def expand_image_paths(items) -> list[Path]:
    """Files as given, folders replaced by their image files (recursively, in natural order):
    ``predict MODEL photos/`` catalogues a whole folder. A name that does not exist is the user's
    typo and raises :class:`~transferlab.errors.ImageError`; a folder without images too."""
    from ..errors import ImageError

    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted((f for f in p.rglob("*") if is_image_file(f) and f.is_file()), key=natural_key)
            if not found:
                raise ImageError(f"no image files under {p}")
            out.extend(found)
        elif p.exists() or p.is_symlink():
            out.append(p)
        else:
            raise ImageError(f"image not found: {p}")
    return out


def natural_key(p: Path) -> list:
    """Sort key that puts 2.jpg before 10.jpg (folder, then digits as numbers)."""
    import re

    return [str(p.parent), *(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name))]


def missing_reason(path: str | Path) -> str:
    """Why a path that cannot be opened is missing, in the user's terms: a plain missing file,
    a link to nowhere, or a link that (eventually) points at itself."""
    if not os.path.islink(path):
        return "file not found"
    try:
        os.stat(path)
    except OSError as e:
        return "symbolic link loop" if e.errno == errno.ELOOP else "broken symbolic link"
    return "file not found"


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16-bit / 32-bit greyscale: PIL's convert("L") clips at 255, so rescale by range instead.
        arr = np.asarray(im, dtype=np.float32)
        top = 65535.0 if im.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        im = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, im).convert("RGB")
    return im.convert("RGB")


def load_rgb(path: str | Path, min_side: int | None = None) -> Image.Image:
    """Decode ``path`` into an RGB PIL image.

    ``min_side``: if the file is a JPEG much larger than needed, let libjpeg decode it at
    1/2, 1/4 or 1/8 scale (``Image.draft``) while keeping both sides >= ``min_side``.
    That is exact for the subsequent downscale and several times cheaper.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if min_side and im.format == "JPEG" and min(im.size) >= 2 * min_side:
                    w, h = im.size
                    scale = min_side / min(w, h)
                    im.draft("RGB", (max(1, int(w * scale)), max(1, int(h * scale))))
                im.load()
                im = ImageOps.exif_transpose(im)
                return _to_rgb(im)
    except FileNotFoundError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadImage(_short_reason(e)) from None
    except (OSError, ValueError, SyntaxError, MemoryError) as e:
        raise BadImage(_short_reason(e)) from None


def _short_reason(e: BaseException) -> str:
    if isinstance(e, UnidentifiedImageError):
        return "not an image"
    if isinstance(e, OSError) and e.errno == errno.ELOOP:
        return "symbolic link loop"
    if isinstance(e, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return "too many pixels (decompression bomb?)"
    msg = str(e).split("\n")[0]
    if "truncated" in msg:
        return "truncated image"
    return msg or type(e).__name__


def save_png(image: np.ndarray, path: str | Path) -> Path:
    """uint8 [H, W, 3] -> lossless PNG, written atomically. Adversarial images and dreams must be
    lossless: JPEG would change the very pixels that were scored."""
    from .._io import atomic_write
    from ..errors import TransferlabError

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise TransferlabError(f"--out must be a .png file (lossless), got {path.name}")
    return atomic_write(path, lambda t: Image.fromarray(image, "RGB").save(t, format="PNG"))
