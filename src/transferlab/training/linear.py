"""Mode ``linear``: multinomial logistic regression on cached pooled features, C chosen on the
validation split (or by k-fold CV without one), folded into one ``nn.Linear`` over raw features."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..data.datasets import ImageDataset
from ..errors import DataError
from ..features import extract_view
from ..models.classifier import Backbone
from ..models.views import with_options
from .cv import cv_linear, fold_splits, one_thread
from .job import Fitted, Job

# ----------------------------------------------------------------------------------------------
# mode "linear": multinomial logistic regression on pooled features
# ----------------------------------------------------------------------------------------------
C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


def features_for(bb: Backbone, ds: ImageDataset, progress: bool, description: str, flip: bool | None = None):
    """(features, labels, ok mask, skipped) of a split; views (ensembles, ``:flip``) go through
    the per-member cache (:func:`transferlab.features.extract_view`)."""
    f = extract_view(bb, ds.paths, flip=flip, progress=progress, description=description)
    return f.features, ds.labels[f.ok], f.ok, f.skipped


def train_rows(bb: Backbone, ds: ImageDataset, progress, aug: bool):
    """(features, labels, mirrored features or None, skipped) of the training photos: with
    ``aug``, each photo's mirror too (cached under its own key), rows aligned."""
    if not aug:
        x, y, _, skipped = features_for(bb, ds, progress, "features (train)")
        return x, y, None, skipped
    a, b = (extract_view(bb, ds.paths, flip=f, progress=progress, description="features (train)")
            for f in (False, True))
    ok = a.ok & b.ok
    return a.features[ok[a.ok]], ds.labels[ok], b.features[ok[b.ok]], a.skipped


def _cv_c(x, y, mirror, c, seed: int):
    """C by 5-fold CV on the training photos (mirrors kept with their photo), and the chosen C's
    out-of-fold logits for temperature scaling; (1.0, {}, None) when a class is too small."""
    counts = np.bincount(y)
    if counts[counts > 0].min() < 2:
        return (c or 1.0), {}, None
    r = cv_linear(x, y, (c,) if c else C_GRID, fold_splits(y, 5, seed), seed, mirror)
    return r.c, {cc: float(np.mean(v)) for cc, v in r.scores.items()}, (r.oof_logits, y, "cv")


def _fit_logreg(x: np.ndarray, y: np.ndarray, c: float, seed: int):
    return _fit_logreg_estimator(c, seed).fit(x, y)


def _to_linear(clf, k: int) -> nn.Linear:
    """Fold StandardScaler + LogisticRegression into one nn.Linear over raw features."""
    scaler, lr = clf[0], clf[-1]
    w = lr.coef_ / scaler.scale_[None, :]
    b = lr.intercept_ - (lr.coef_ * (scaler.mean_ / scaler.scale_)[None, :]).sum(1)
    if w.shape[0] == 1:  # binary: softmax over [-z/2, z/2] equals sigmoid(z)
        w = np.concatenate([-w / 2, w / 2])
        b = np.concatenate([-b / 2, b / 2])
    full_w = np.zeros((k, w.shape[1]), np.float32)
    full_b = np.full(k, -1e4, np.float32)  # a class with no training image is never predicted
    full_w[lr.classes_] = w
    full_b[lr.classes_] = b
    lin = nn.Linear(w.shape[1], k)
    lin.weight.data = torch.from_numpy(full_w)
    lin.bias.data = torch.from_numpy(full_b)
    return lin


def _val_path(xt, yt, xv, yv, seed: int) -> tuple[dict[float, float], dict]:
    """Validation accuracy along the C grid, warm-starting each fit from the previous solution
    (a regularisation path, which cuts the solver's iterations several-fold), and each C's fitted
    scaler + model: the chosen one is the final model, no cold refit (that refit was the single
    most expensive fit of a cached re-train, issue 16)."""
    import copy

    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    sc = StandardScaler().fit(xt)
    xt_s, xv_s = sc.transform(xt), sc.transform(xv)
    lr = LogisticRegression(max_iter=2000, random_state=seed, warm_start=True)
    scores, fits = {}, {}
    for c in C_GRID:
        lr.set_params(C=c)
        scores[c] = float(lr.fit(xt_s, yt).score(xv_s, yv))
        fits[c] = Pipeline([("standardscaler", sc), ("logisticregression", copy.deepcopy(lr))])
    return scores, fits


def _cv_choose_c(x, y, seed: int) -> tuple[float, dict]:
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    folds = int(min(5, np.bincount(y).min()))
    if folds < 2:
        return 1.0, {}
    scores = {}
    for c in C_GRID:
        cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
        scores[c] = float(cross_val_score(_fit_logreg_estimator(c, seed), x, y, cv=cv).mean())
    return max(scores, key=lambda c: (scores[c], -c)), scores


def _fit_logreg_estimator(c: float, seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000, random_state=seed))


def fit_linear_probe(xt: np.ndarray, yt: np.ndarray, xv: np.ndarray | None, yv: np.ndarray | None, k: int,
                     seed: int = 0, c: float | None = None) -> tuple[torch.nn.Linear, float, dict]:
    """Logistic regression on features as a torch head: (head, C, {C: score}). C is chosen on the
    validation split, or by k-fold CV on the training features when there is none. Runs on one
    BLAS thread (:func:`transferlab.training.cv.one_thread`)."""
    with one_thread():
        return _fit_linear_probe(xt, yt, xv, yv, k, seed, c)


def _fit_linear_probe(xt, yt, xv, yv, k: int, seed: int, c: float | None):
    scores: dict = {}
    if c is None:
        if xv is not None and len(yv):
            scores, fits = _val_path(xt, yt, xv, yv, seed)
            c = max(scores, key=lambda cc: (scores[cc], -cc))
            return _to_linear(fits[c], k), c, scores
        c, scores = _cv_choose_c(xt, yt, seed)
    return _to_linear(_fit_logreg(xt, yt, c, seed), k), c, scores


def train_linear(job: Job) -> Fitted:
    """Regularisation C chosen on the validation split (or by k-fold CV when there is none).
    ``feature_aug="flip"``: mirrored rows in training, and a run backbone that averages each
    photo's features with its mirror's (``NAME:flip``), so prediction matches the validation."""
    bb, tr, va, seed, progress, c = job.backbone, job.train, job.val, job.seed, job.progress, job.options.c
    aug = getattr(job.options, "feature_aug", "none") == "flip"
    run_bb = with_options(bb, flip=True) if aug else bb
    k = len(tr.classes)
    xt, yt, mt, sk_t = train_rows(bb, tr, progress, aug)
    xv = yv = ok_v = calibration = None
    sk_v: list = []
    if len(va):
        xv, yv, ok_v, sk_v = features_for(run_bb, va, progress, "features (val)")
    if len(np.unique(yt)) < 2:
        raise DataError("the training split has readable images of fewer than 2 classes")
    xfit, yfit = (xt, yt) if mt is None else (np.concatenate([xt, mt]), np.concatenate([yt, yt]))
    scores: dict = {}
    if xv is None:
        c, scores, calibration = _cv_c(xt, yt, mt, c, seed)
    head, c, val_scores = fit_linear_probe(xfit, yfit, xv, yv, k, seed, c)
    with torch.no_grad():
        xe = xt if mt is None else (xt + mt) / 2
        train_acc = float((head(torch.from_numpy(xe)).argmax(1).numpy() == yt).mean())
        val_probs = head(torch.from_numpy(xv)).softmax(-1).numpy() if xv is not None else None
    return Fitted(
        head=head,
        head_spec={"type": "linear", "in": run_bb.feature_dim, "out": k},
        val_probs=val_probs,
        val_ok=ok_v,
        train_accuracy=train_acc,
        skipped=sk_t + sk_v,
        info={"C": c, "C_scores": {str(kk): v for kk, v in (val_scores or scores).items()},
              "selection": "val" if xv is not None and len(va) else "cv",
              **({"feature_aug": "flip"} if aug else {})},
        backbone=run_bb if aug else None,
        calibration=calibration,
    )
