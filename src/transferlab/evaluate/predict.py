"""Top-k predictions for images with any Run (trained run or bare backbone)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.loader import as_image_list, image_array, is_path

DEFAULT_TOP_K = 5  # classify and predict alike


def predict(run, images, top_k: int = DEFAULT_TOP_K, batch_size: int = 32, tta: str | None = None) -> list[dict]:
    """``[{"path", "top": [[class, prob], ...]}]`` for file paths, PIL images or uint8 HxWx3
    arrays (``path`` is None for in-memory images). A missing file raises ImageError; an
    unreadable one gets ``{"path", "error"}`` so one bad photo does not hide the others."""
    items = as_image_list(images)
    k = min(top_k, len(run.classes))
    if not all(is_path(i) for i in items):
        probs = run.predict_proba(items, batch_size=batch_size, tta=tta)
        return [_top(run, str(i) if is_path(i) else None, p, k) for i, p in zip(items, probs, strict=True)]
    for p in items:  # a typo in a path is a user error, not a skipped photo
        if not Path(p).is_file():
            image_array(p, run.data_config)  # raises ImageError: not found / a directory
    probs, skipped = run.predict_proba_paths(items, batch_size=batch_size, tta=tta)
    why = dict(skipped)
    out, row = [], 0
    for p in items:
        if str(p) in why:
            out.append({"path": str(p), "error": why[str(p)]})
            continue
        out.append(_top(run, str(p), probs[row], k))
        row += 1
    return out


def _top(run, path: str | None, pr: np.ndarray, k: int) -> dict:
    idx = np.argsort(-pr)[:k]
    return {"path": path, "top": [[run.classes[i], float(pr[i])] for i in idx]}
