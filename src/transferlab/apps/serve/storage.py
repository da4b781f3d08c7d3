"""Uploaded bytes -> a checked photo, and the media folder that keeps photos by content hash.

Why content hashes: a client's file name never reaches the filesystem (no path tricks, no
clashes), the same photo uploaded twice is stored once, and the CSV export points at files whose
names say what they contain. Thumbnails are made once, when the photo is first stored.
"""

from __future__ import annotations

import hashlib
import io
import re
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..._io import atomic_write
from ...data.heif import register as register_heif

register_heif()
# PIL format name -> the extension the stored file gets (what `transferlab train` will read).
FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif",
           "HEIF": ".heic", "AVIF": ".avif"}  # HEIF/AVIF: iPhone and newer Android photos (data/heif.py)
ACCEPTED = "JPEG, PNG, WebP, HEIC, AVIF, GIF, BMP or TIFF"
THUMB_SIDE = 320
# Large JPEGs are decoded at 1/2-1/8 scale (libjpeg's draft mode) with both sides kept >= this:
# the model resizes to ~256 px and the thumbnail is 320 px, so nothing is lost, and a 12 Mpx
# phone photo costs a fraction of the time and memory. The original file is stored unchanged.
DECODE_MIN_SIDE = 640
# At most this many uploads are decoded at once: each may hold max_pixels x 4 bytes.
_DECODING = threading.BoundedSemaphore(4)
SHA_RE = re.compile(r"^[0-9a-f]{64}$")


class UploadRejected(Exception):
    """The upload is not a photo we accept; ``status`` is the HTTP code the client gets."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Photo:
    """A decoded, accepted upload. ``data`` are the original bytes, stored unchanged; ``image``
    may be a reduced-scale decode (see DECODE_MIN_SIDE); width and height are the file's."""

    data: bytes
    sha256: str
    ext: str
    image: Image.Image
    width: int
    height: int


@dataclass
class Limits:
    max_bytes: int
    max_pixels: int
    max_side: int


def decode_upload(data: bytes, limits: Limits) -> Photo:
    """Check and decode an upload. Sizes are checked from the header before any pixel is
    decoded, so a decompression bomb costs nothing."""
    if not data:
        raise UploadRejected(400, "the file is empty")
    if len(data) > limits.max_bytes:
        raise UploadRejected(413, f"the file is larger than {limits.max_bytes / 2**20:g} MB")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            ext = _check_header(im, limits)
            w, h = im.size  # the file's size (a draft decode shrinks im.size)
            with _DECODING:
                image = _decode(im)
    except UploadRejected:
        raise
    except UnidentifiedImageError:
        raise UploadRejected(415, f"this is not an image this app reads ({ACCEPTED})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UploadRejected(400, "the image has too many pixels (decompression bomb?)") from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as e:
        raise UploadRejected(400, f"the image is damaged and cannot be read ({_reason(e)})") from None
    if (w > h) != (image.width > image.height):  # turned as the decoded (EXIF-rotated) image is
        w, h = h, w
    return Photo(data, hashlib.sha256(data).hexdigest(), ext, image, w, h)


def _check_header(im: Image.Image, limits: Limits) -> str:
    if im.format not in FORMATS:
        raise UploadRejected(415, f"{im.format} images are not accepted ({ACCEPTED})")
    w, h = im.size
    if w < 1 or h < 1:
        raise UploadRejected(400, "the image has no pixels")
    if w * h > limits.max_pixels or max(w, h) > limits.max_side:
        raise UploadRejected(400, f"the image is too large ({w}x{h} pixels; at most "
                                  f"{limits.max_pixels / 1e6:g} megapixels, {limits.max_side} px a side)")
    return FORMATS[im.format]


def _decode(im: Image.Image) -> Image.Image:
    w, h = im.size
    if im.format == "JPEG" and min(w, h) >= 2 * DECODE_MIN_SIDE:
        scale = DECODE_MIN_SIDE / min(w, h)
        im.draft("RGB", (max(1, round(w * scale)), max(1, round(h * scale))))
    im.load()
    return _to_rgb(ImageOps.exif_transpose(im))


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any mode -> RGB; transparency is composited on white (what a person sees in a browser)."""
    if im.mode == "RGB":
        return im
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        im = im.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", im.size, "white"), im).convert("RGB")
    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        # 16/32-bit grey: convert("L") would clip at 255, so scale by the range instead.
        arr = np.asarray(im, dtype=np.float32)
        top = 65535.0 if im.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        return Image.fromarray(np.clip(arr / top * 255 + 0.5, 0, 255).astype(np.uint8), "L").convert("RGB")
    return im.convert("RGB")


def _reason(e: BaseException) -> str:
    msg = str(e).split("\n")[0]
    return "truncated" if "truncated" in msg else (msg or type(e).__name__)


class MediaStore:
    """``root/ab/<sha>.<ext>`` for photos and ``root/thumbs/<sha>.jpg`` for thumbnails.

    Writes are atomic (temp file + rename), so a crash never leaves half a photo, and idempotent,
    so two processes storing one photo at once both succeed."""

    def __init__(self, root: Path):
        self.root = Path(root)
        (self.root / "thumbs").mkdir(parents=True, exist_ok=True)

    def photo_path(self, sha: str, ext: str) -> Path:
        _check_sha(sha)
        if ext not in FORMATS.values():
            raise ValueError(f"bad extension {ext!r}")
        return self.root / sha[:2] / f"{sha}{ext}"

    def thumb_path(self, sha: str) -> Path:
        _check_sha(sha)
        return self.root / "thumbs" / f"{sha}.jpg"

    def ensure(self, photo: Photo) -> None:
        """Store the photo and its thumbnail unless already there."""
        path = self.photo_path(photo.sha256, photo.ext)
        new = not path.is_file()
        if new:
            atomic_write(path, lambda t: t.write_bytes(photo.data))
        try:
            self.ensure_thumb(photo.sha256, photo.image)
        except BaseException:  # e.g. the disk filled up: no photo without its thumbnail either
            if new:
                path.unlink(missing_ok=True)
            raise

    def ensure_thumb(self, sha: str, image: Image.Image) -> None:
        thumb = self.thumb_path(sha)
        if not thumb.is_file():
            small = image.copy()
            small.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.Resampling.LANCZOS)
            atomic_write(thumb, lambda t: small.save(t, format="JPEG", quality=85))

    def exists(self, sha: str, ext: str) -> bool:
        return self.photo_path(sha, ext).is_file()

    def remove(self, sha: str, ext: str) -> None:
        self.photo_path(sha, ext).unlink(missing_ok=True)
        self.thumb_path(sha).unlink(missing_ok=True)


def _check_sha(sha: str) -> None:
    if not SHA_RE.match(sha):
        raise ValueError("not a sha256 hex digest")
