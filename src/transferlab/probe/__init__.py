"""The probe: the one logistic regression on pooled features that linear training, the
cross-validation of ``auto``, ``review`` and the demo's raw-pixel baseline all fit
(:mod:`transferlab.probe.logistic`)."""

from .logistic import (
    C_GRID,
    CVResult,
    Splits,
    choose_c,
    clamp_folds,
    cross_val_logits,
    cv_linear,
    decision_logits,
    fit_linear_probe,
    fit_logreg,
    fold_rows,
    fold_splits,
    logreg,
    one_thread,
    to_linear,
    val_path,
)

__all__ = ["C_GRID", "CVResult", "Splits", "choose_c", "clamp_folds", "cross_val_logits", "cv_linear",
           "decision_logits", "fit_linear_probe", "fit_logreg", "fold_rows", "fold_splits", "logreg", "one_thread",
           "to_linear", "val_path"]
