"""Cross-validation on cached features: the linear probe over a C grid and the MLP head, with
feature-level flip augmentation done right.

With augmentation a photo contributes two training rows (its features and its mirror's), so the
folds are drawn over *photos*: a held-out photo's mirror never sits in the training rows (that
would leak it), and the held-out photo is scored on the mean of its two feature vectors, exactly
as the run will score new photos. The same folds (seeded ``StratifiedKFold``) serve every
candidate, so their scores are comparable; the out-of-fold logits of the chosen setting are kept
for temperature scaling.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import DataError
from ..evaluate.calibration import decision_logits

Splits = list[tuple[np.ndarray, np.ndarray]]


@dataclass
class CVResult:
    """Mean and standard deviation of the fold accuracies of the best setting (``c`` for the
    linear probe), every setting's fold accuracies, the out-of-fold logits of the best one, and
    the time of one fit (the mean over folds) and of the whole cross-validation."""

    mean: float
    sd: float
    c: float | None = None
    scores: dict = field(default_factory=dict)  # setting -> fold accuracies
    oof_logits: np.ndarray | None = None
    fit_s: float = 0.0
    seconds: float = 0.0


def fold_splits(y: np.ndarray, folds: int, seed: int) -> Splits:
    """Seeded stratified folds over the photos (fewer when a class has fewer photos)."""
    from sklearn.model_selection import StratifiedKFold

    counts = np.bincount(y)
    folds = int(min(folds, counts[counts > 0].min()))
    if folds < 2:
        raise DataError("cross-validation needs at least 2 readable training photos of every class")
    return list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))


def _logits(lr, x: np.ndarray, k: int) -> np.ndarray:
    """[n, k] logits of a fitted LogisticRegression (a class absent from the fold's training rows
    gets -1e4)."""
    return decision_logits(lr.decision_function(x), lr.classes_, k)


def cv_linear(x: np.ndarray, y: np.ndarray, c_grid, splits: Splits, seed: int,
              mirror: np.ndarray | None = None) -> CVResult:
    """Fold accuracies of StandardScaler + LogisticRegression for every C (cold fits, the same
    estimator as the linear mode's); best C = highest mean, then the smaller C. One BLAS thread:
    see :func:`one_thread`."""
    with one_thread():
        return _cv_linear(x, y, c_grid, splits, seed, mirror)


def one_thread():
    """BLAS/OpenMP limited to one thread. lbfgs on a few hundred rows does small matrix products
    whose extra threads only spin: on the shared 2-core machine one Oxford fit took 8-18 s with
    the default two threads and 0.5-1.5 s with one (the same finding as fit_head's)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1)


def _cv_linear(x, y, c_grid, splits: Splits, seed: int, mirror) -> CVResult:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from .head import fold_rows

    t0, k = time.perf_counter(), int(y.max()) + 1
    scores = {c: [] for c in c_grid}
    oof = {c: np.zeros((len(y), k)) for c in c_grid}
    fit_s = []
    for tr, va in splits:
        xt, yt, xv = fold_rows(x, y, tr, va, mirror)
        sc = StandardScaler().fit(xt)
        xt, xv = sc.transform(xt), sc.transform(xv)
        for c in c_grid:
            t = time.perf_counter()
            lr = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(xt, yt)
            fit_s.append(time.perf_counter() - t)
            oof[c][va] = _logits(lr, xv, k)
            scores[c].append(float((oof[c][va].argmax(1) == y[va]).mean()))
    best = max(c_grid, key=lambda c: (np.mean(scores[c]), -c))
    return CVResult(float(np.mean(scores[best])), float(np.std(scores[best])), best, scores, oof[best],
                    float(np.mean(fit_s)), time.perf_counter() - t0)


def fit_mlp(x: np.ndarray, y: np.ndarray, k: int, opts, seed: int, mirror: np.ndarray | None = None):
    """An MLP head (:func:`transferlab.training.head.fit_head`, the ``head`` mode's) with early
    stopping on 15 % of the photos held out. Returns (head, spec). On the raw features like
    ``--mode head``: standardising them first cost 2 of 1,200 PetImages val photos (lite2)."""
    from sklearn.model_selection import train_test_split

    from .head import fit_head, fold_rows

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
