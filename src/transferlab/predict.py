"""Top-k predictions for image files with any Run (trained run or bare backbone)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import ImageError


def predict(run, images: Sequence[str | Path], top_k: int = 3, batch_size: int = 32,
            tta: str | None = None) -> list[dict]:
    """``[{"path", "top": [[class, prob], ...]}]``; unreadable files get ``{"path", "error"}``."""
    for p in images:
        if not Path(p).exists():
            raise ImageError(f"image not found: {p}")
        if Path(p).is_dir():
            raise ImageError(f"{p} is a directory; give image files")
    probs, skipped = run.predict_proba(images, batch_size=batch_size, tta=tta)
    why = dict(skipped)
    out, row = [], 0
    k = min(top_k, len(run.classes))
    for p in images:
        if str(p) in why:
            out.append({"path": str(p), "error": why[str(p)]})
            continue
        pr = probs[row]
        row += 1
        idx = np.argsort(-pr)[:k]
        out.append({"path": str(p), "top": [[run.classes[i], float(pr[i])] for i in idx]})
    return out
