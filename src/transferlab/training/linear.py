"""Mode ``linear``: multinomial logistic regression on cached pooled features, C chosen on the
validation split (or by k-fold CV without one), folded into one ``nn.Linear`` over raw features."""

from __future__ import annotations

import numpy as np
import torch

from ..data.datasets import ImageDataset
from ..errors import DataError
from ..features import extract_view
from ..models.classifier import Backbone
from ..models.views import with_options
from ..probe import C_GRID, clamp_folds, cv_linear, fit_linear_probe, fold_splits
from .job import Fitted, Job


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
    if clamp_folds(y, 5) < 2:
        return (c or 1.0), {}, None
    r = cv_linear(x, y, (c,) if c else C_GRID, fold_splits(y, 5, seed), seed, mirror)
    return r.c, {cc: float(np.mean(v)) for cc, v in r.scores.items()}, (r.oof_logits, y, "cv")


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
