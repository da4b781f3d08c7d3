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

from .heif import HEIF_EXTENSIONS, register

register()  # HEIC/HEIF (iPhone photos) and AVIF open like any other photo
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", *HEIF_EXTENSIONS)

# PIL warns above MAX_IMAGE_PIXELS and raises above twice that; we refuse at the warning level
# (about 89 Mpx, e.g. 10000x8900), far above any real photo a CNN needs.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS
MAX_FAST_BYTES = 8 << 20  # larger files are large photos, which draft decoding (Pillow) serves better
HEADER_BYTES = 64 << 10  # enough for the segments before the frame header of any plain JPEG

try:
    import simplejpeg
except ImportError:  # optional: Pillow decodes everything without it
    simplejpeg = None


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


def load_rgb_array(path: str | Path, min_side: int | None = None) -> np.ndarray:
    """:func:`load_rgb` as a uint8 [H, W, 3] array, the same pixels, faster for plain JPEGs.

    A complete baseline or progressive JPEG in YCbCr or greyscale, without EXIF, below the pixel
    limit and too small for draft decoding is decoded by ``simplejpeg`` (libjpeg-turbo, like
    Pillow, without Pillow's per-file overhead: 0.16 against 0.35 ms for a 180 px photo, which is
    a tenth of the CPU a 2-core extraction has per image; identical pixels, checked by
    ``tests/test_images.py`` on every shared photo). Anything else, and any doubt, goes to
    :func:`load_rgb`, which also words the errors."""
    fast = _plain_jpeg(path, min_side)
    return fast if fast is not None else np.asarray(load_rgb(path, min_side))


def _plain_jpeg(path: str | Path, min_side: int | None) -> np.ndarray | None:
    if simplejpeg is None:
        return None
    try:
        with open(path, "rb") as f:
            # the header first: a file that will go to Pillow (EXIF, CMYK, large) is not read twice
            head = f.read(HEADER_BYTES)
            if not _plain_header(head, min_side):
                return None
            data = head + f.read(MAX_FAST_BYTES + 1 - len(head))
    except (OSError, ValueError):
        return None
    # A truncated file lacks the end-of-image marker: Pillow refuses it, and so must we.
    if len(data) > MAX_FAST_BYTES or not data.endswith(b"\xff\xd9"):
        return None
    try:
        return simplejpeg.decode_jpeg(data, colorspace="RGB")
    except ValueError:
        return None


def _plain_header(head: bytes, min_side: int | None) -> bool:
    """Whether the first bytes are those of a JPEG simplejpeg decodes exactly like Pillow: no
    EXIF, YCbCr or greyscale, within the pixel limit, too small for draft decoding."""
    if head[:3] != b"\xff\xd8\xff" or _has_exif(head):
        return False
    h, w, colorspace, _ = simplejpeg.decode_jpeg_header(head)  # ValueError: not readable from the header
    limit = Image.MAX_IMAGE_PIXELS  # read now: the user (or a test) may have changed it
    return colorspace in ("YCbCr", "Gray") and not (limit and h * w > limit) and not (
        min_side and min(w, h) >= 2 * min_side)


def _has_exif(data: bytes) -> bool:
    """Whether the JPEG's header segments hold EXIF (which may rotate the photo: Pillow applies
    that, simplejpeg does not). Written here because simplejpeg reads no metadata; walks the
    segment markers up to the start of scan, and says True for anything unexpected."""
    i = 2
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xDA:  # start of scan: the header is over
            return False
        if marker == 0xE1 and data[i + 4:i + 10] == b"Exif\x00\x00":
            return True
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return True


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
    from ..options import OptionError

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise OptionError("out", f"must be a .png file (lossless), got {path.name}")
    return atomic_write(path, lambda t: Image.fromarray(image, "RGB").save(t, format="PNG"))


def is_path(item) -> bool:
    return isinstance(item, (str, Path))


def as_image_list(images) -> list:
    """One image (a path, a PIL image or an HxWx3 array) or a sequence of them -> a list."""
    one = is_path(images) or isinstance(images, Image.Image) or (isinstance(images, np.ndarray) and images.ndim == 3)
    return [images] if one else list(images)


def with_folders(images) -> list:
    """:func:`as_image_list`, each folder replaced by its image files (recursively, in natural
    order) as on the command line: for ``predict``, whose rows name their photo. Probabilities
    (``predict_proba``) keep one row per item given, so a folder there is refused."""
    return [x for i in as_image_list(images)
            for x in (expand_image_paths([i]) if is_path(i) and Path(i).is_dir() else [i])]
