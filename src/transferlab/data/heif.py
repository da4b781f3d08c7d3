"""iPhone photos (HEIC/HEIF) and AVIF, read by Pillow wherever transferlab reads a photo.

pillow-heif (libheif, bundled in its wheels) registers a Pillow opener, so ``Image.open`` reads
HEIC like any JPEG and everything above (``load_rgb``, the catalog's uploads, training data)
needs no special case. AVIF is Pillow's own from Pillow 11.3 on; with an older Pillow,
pillow-heif's AVIF opener is used where that version still has one.
"""

from __future__ import annotations

import threading

HEIF_EXTENSIONS = (".heic", ".heif", ".avif")
_lock = threading.Lock()
_registered: bool | None = None


def register() -> bool:
    """Teach Pillow HEIC/HEIF (and AVIF where needed); idempotent. False if pillow-heif is not
    installed (then such files are reported as unreadable images, as before)."""
    global _registered
    with _lock:
        if _registered is None:
            _registered = _register()
        return _registered


def _register() -> bool:
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    from PIL import features

    if not features.check("avif") and hasattr(pillow_heif, "register_avif_opener"):
        pillow_heif.register_avif_opener()
    return True
