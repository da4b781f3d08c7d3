"""Cross-validation of the MLP head on cached features (the linear probe's is
:func:`transferlab.probe.cv_linear`), with feature-level flip augmentation done right.

With augmentation a photo contributes two training rows (its features and its mirror's), so the
folds are drawn over *photos*: a held-out photo's mirror never sits in the training rows (that
would leak it), and the held-out photo is scored on the mean of its two feature vectors, exactly
as the run will score new photos. The same folds (seeded ``StratifiedKFold``) serve every
candidate, so their scores are comparable; the out-of-fold logits of the chosen setting are kept
for temperature scaling.
"""

from __future__ import annotations

import time

import numpy as np
import torch

# the linear probe's CV moved to transferlab.probe; re-exported while callers move
from ..probe import CVResult, Splits, cv_linear, fold_rows, fold_splits, one_thread  # noqa: F401


def fit_mlp(x: np.ndarray, y: np.ndarray, k: int, opts, seed: int, mirror: np.ndarray | None = None):
    """An MLP head (:func:`transferlab.training.head.fit_head`, the ``head`` mode's) with early
    stopping on 15 % of the photos held out. Returns (head, spec). On the raw features like
    ``--mode head``: standardising them first cost 2 of 1,200 PetImages val photos (lite2)."""
    from sklearn.model_selection import train_test_split

    from .head import fit_head

    idx = np.arange(len(y))
    strat = y if np.bincount(y).min() >= 2 else None
    fit_i, stop_i = train_test_split(idx, test_size=0.15, random_state=seed, stratify=strat)
    xf, yf, xs = fold_rows(x, y, fit_i, stop_i, mirror)
    spec = {"type": "mlp", "in": x.shape[1], "hidden": opts.hidden, "out": k, "dropout": opts.dropout}
    r = fit_head(spec, (xf.astype(np.float32), yf), (xs.astype(np.float32), y[stop_i]), opts, seed)
    return r.head, spec


def cv_head(x: np.ndarray, y: np.ndarray, splits: Splits, opts, seed: int,
            mirror: np.ndarray | None = None) -> CVResult:
    """Fold accuracies of :func:`fit_mlp` (its early stopping uses the training folds only)."""
    t0, k = time.perf_counter(), int(y.max()) + 1
    accs, fit_s = [], []
    oof = np.zeros((len(y), k))
    for tr, va in splits:
        t = time.perf_counter()
        head, _ = fit_mlp(x[tr], y[tr], k, opts, seed, None if mirror is None else mirror[tr])
        fit_s.append(time.perf_counter() - t)
        xv = x[va] if mirror is None else (x[va] + mirror[va]) / 2
        with torch.no_grad():
            oof[va] = head.eval()(torch.from_numpy(xv.astype(np.float32))).numpy()
        accs.append(float((oof[va].argmax(1) == y[va]).mean()))
    return CVResult(float(np.mean(accs)), float(np.std(accs)), None, {"mlp": accs}, oof, float(np.mean(fit_s)),
                    time.perf_counter() - t0)
