"""Multinomial logistic regression on pooled features, written once.

StandardScaler + LogisticRegression (lbfgs) is the probe of the linear mode, of every
cross-validated candidate of ``auto``, of ``review``'s out-of-fold scores and of the demo's
raw-pixel baseline. C is chosen on a validation split (:func:`val_path`) or by k-fold CV
(:func:`cv_linear`); folds are clamped to the smallest class in one place (:func:`clamp_folds`).

Feature-level flip augmentation is handled here too: with ``mirror`` a photo contributes two
training rows (its features and its mirror's), folds are drawn over *photos* so a held-out
photo's mirror never leaks into the training rows, and a held-out photo is scored on the mean of
its two feature vectors, exactly as the run scores new photos.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..errors import DataError

C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
MAX_ITER = 2000
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


def one_thread():
    """BLAS/OpenMP limited to one thread. lbfgs on a few hundred rows does small matrix products
    whose extra threads only spin: on the shared 2-core machine one Oxford fit took 8-18 s with
    the default two threads and 0.5-1.5 s with one (the same finding as fit_head's)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1)


def logreg(c: float, seed: int, max_iter: int = MAX_ITER):
    """The probe's estimator: standardised features into an L2-regularised multinomial logistic
    regression (lbfgs) with inverse regularisation ``c``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter, random_state=seed))


def fit_logreg(x: np.ndarray, y: np.ndarray, c: float, seed: int = 0, max_iter: int = MAX_ITER):
    """:func:`logreg` fitted on one BLAS thread."""
    with one_thread():
        return logreg(c, seed, max_iter).fit(x, y)


def clamp_folds(y: np.ndarray, folds: int) -> int:
    """``folds``, or fewer when the smallest class present has fewer photos (< 2: no CV possible)."""
    counts = np.bincount(y)
    return int(min(folds, counts[counts > 0].min())) if len(counts) else 0


def fold_splits(y: np.ndarray, folds: int, seed: int) -> Splits:
    """Seeded stratified folds over the photos (fewer when a class has fewer photos)."""
    from sklearn.model_selection import StratifiedKFold

    folds = clamp_folds(y, folds)
    if folds < 2:
        raise DataError("cross-validation needs at least 2 readable training photos of every class")
    return list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))


def fold_rows(x: np.ndarray, y: np.ndarray, tr: np.ndarray, va: np.ndarray, mirror: np.ndarray | None):
    """(train x, train y, held-out x): mirrored rows added to the training photos, held-out photos
    scored on the mean of both views."""
    if mirror is None:
        return x[tr], y[tr], x[va]
    return np.concatenate([x[tr], mirror[tr]]), np.concatenate([y[tr], y[tr]]), (x[va] + mirror[va]) / 2


def decision_logits(z: np.ndarray, classes: np.ndarray, k: int) -> np.ndarray:
    """[n, k] logits from a scikit-learn ``decision_function`` over the ``classes`` it was fitted
    on: binary (one score z) becomes [-z/2, z/2], whose softmax is sigmoid(z); a class it never
    saw gets -1e4, so it is never predicted."""
    if z.ndim == 1:
        z = np.stack([-z / 2, z / 2], 1)
    out = np.full((len(z), k), -1e4, np.float64)
    out[:, classes] = z
    return out


def cv_linear(x: np.ndarray, y: np.ndarray, c_grid, splits: Splits, seed: int,
              mirror: np.ndarray | None = None) -> CVResult:
    """Fold accuracies of the probe for every C in ``c_grid`` (cold fits, one scaler per fold);
    best C = highest mean, then the smaller C; the best C's out-of-fold logits."""
    with one_thread():
        return _cv_linear(x, y, tuple(c_grid), splits, seed, mirror)


def _cv_linear(x, y, c_grid, splits: Splits, seed: int, mirror) -> CVResult:
    t0, k = time.perf_counter(), int(y.max()) + 1
    scores = {c: [] for c in c_grid}
    oof = {c: np.zeros((len(y), k)) for c in c_grid}
    fit_s = []
    for tr, va in splits:
        xt, yt, xv = fold_rows(x, y, tr, va, mirror)
        est = logreg(1.0, seed)
        sc, lr = est[0].fit(xt), est[-1]
        xt, xv = sc.transform(xt), sc.transform(xv)
        for c in c_grid:
            t = time.perf_counter()
            lr.set_params(C=c).fit(xt, yt)
            fit_s.append(time.perf_counter() - t)
            oof[c][va] = decision_logits(lr.decision_function(xv), lr.classes_, k)
            scores[c].append(float((oof[c][va].argmax(1) == y[va]).mean()))
    best = max(c_grid, key=lambda c: (np.mean(scores[c]), -c))
    return CVResult(float(np.mean(scores[best])), float(np.std(scores[best])), best, scores, oof[best],
                    float(np.mean(fit_s)), time.perf_counter() - t0)


def cross_val_logits(x: np.ndarray, y: np.ndarray, folds: int, c: float, seed: int) -> np.ndarray:
    """Out-of-fold logits [n, k] of the probe at one C (``review``'s scores)."""
    return cv_linear(x, y, (c,), fold_splits(y, folds, seed), seed).oof_logits


def choose_c(x: np.ndarray, y: np.ndarray, seed: int, folds: int = 5) -> tuple[float, dict]:
    """(C, {C: mean fold accuracy}) by k-fold CV over :data:`C_GRID`; (1.0, {}) when a class has
    fewer than two photos."""
    if clamp_folds(y, folds) < 2:
        return 1.0, {}
    r = cv_linear(x, y, C_GRID, fold_splits(y, folds, seed), seed)
    return r.c, {c: float(np.mean(v)) for c, v in r.scores.items()}


def val_path(xt, yt, xv, yv, seed: int) -> tuple[dict[float, float], dict]:
    """Validation accuracy along :data:`C_GRID`, warm-starting each fit from the previous solution
    (a regularisation path, which cuts the solver's iterations several-fold), and each C's fitted
    pipeline: the chosen one is the final model, no cold refit (that refit was the single most
    expensive fit of a cached re-train, issue 16)."""
    est = logreg(C_GRID[0], seed)
    sc, lr = est[0].fit(xt), est[-1].set_params(warm_start=True)
    xt_s, xv_s = sc.transform(xt), sc.transform(xv)
    scores, fits = {}, {}
    for c in C_GRID:
        lr.set_params(C=c)
        scores[c] = float(lr.fit(xt_s, yt).score(xv_s, yv))
        fits[c] = copy.deepcopy(est)
    return scores, fits


def to_linear(clf, k: int) -> nn.Linear:
    """Fold a fitted StandardScaler + LogisticRegression into one nn.Linear over raw features (a
    class with no training image gets bias -1e4: never predicted)."""
    scaler, lr = clf[0], clf[-1]
    w = lr.coef_ / scaler.scale_[None, :]
    b = lr.intercept_ - (lr.coef_ * (scaler.mean_ / scaler.scale_)[None, :]).sum(1)
    if w.shape[0] == 1:  # binary: softmax over [-z/2, z/2] equals sigmoid(z)
        w = np.concatenate([-w / 2, w / 2])
        b = np.concatenate([-b / 2, b / 2])
    full_w = np.zeros((k, w.shape[1]), np.float32)
    full_b = np.full(k, -1e4, np.float32)
    full_w[lr.classes_] = w
    full_b[lr.classes_] = b
    lin = nn.Linear(w.shape[1], k)
    lin.weight.data = torch.from_numpy(full_w)
    lin.bias.data = torch.from_numpy(full_b)
    return lin


def fit_linear_probe(xt: np.ndarray, yt: np.ndarray, xv: np.ndarray | None, yv: np.ndarray | None, k: int,
                     seed: int = 0, c: float | None = None) -> tuple[nn.Linear, float, dict]:
    """The probe as a torch head: (head, C, {C: score}). C is chosen on the validation split, or by
    k-fold CV on the training features when there is none, unless given. One BLAS thread."""
    with one_thread():
        scores: dict = {}
        if c is None and xv is not None and len(yv):
            scores, fits = val_path(xt, yt, xv, yv, seed)
            c = max(scores, key=lambda cc: (scores[cc], -cc))
            return to_linear(fits[c], k), c, scores
        if c is None:
            c, scores = choose_c(xt, yt, seed)
        return to_linear(logreg(c, seed).fit(xt, yt), k), c, scores
