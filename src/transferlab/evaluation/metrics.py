"""Classification metrics from probabilities (scikit-learn does the counting)."""

from __future__ import annotations

import numpy as np


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict:
    """Accuracy, top-5 (when there are more than 5 classes), per-class P/R/F1, confusion matrix."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, top_k_accuracy_score

    y_true = np.asarray(y_true)
    k = len(classes)
    if len(y_true) == 0:
        return {"n": 0, "accuracy": None}
    pred = probs.argmax(1)
    labels = np.arange(k)
    p, r, f, s = precision_recall_fscore_support(y_true, pred, labels=labels, zero_division=0)
    out = {
        "n": len(y_true),
        "accuracy": float((pred == y_true).mean()),
        "per_class": {
            c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, c in enumerate(classes)
        },
        "macro_f1": float(f.mean()),
        "confusion": confusion_matrix(y_true, pred, labels=labels).tolist(),
    }
    if k > 5:
        out["top5_accuracy"] = float(top_k_accuracy_score(y_true, probs, k=5, labels=labels))
    return out


TARGET_PRECISION = 0.95


def precision_threshold(y_true: np.ndarray, probs: np.ndarray, target: float = TARGET_PRECISION) -> dict | None:
    """The lowest top-1 probability above which validation answers are right at least ``target``
    of the time: below it ``predict`` and the web app say "unsure" instead of a breed.

    Returns ``{"threshold", "target_precision", "precision", "coverage"}`` (coverage: the share
    of validation images answered), or None without validation data. When no threshold reaches
    the target, the most precise one is kept, so the answer is still as careful as the data allow.
    """
    y_true = np.asarray(y_true)
    if len(y_true) == 0:
        return None
    conf = probs.max(1)
    order = np.argsort(-conf, kind="stable")
    correct = (probs.argmax(1) == y_true)[order]
    precision = np.cumsum(correct) / np.arange(1, len(correct) + 1)  # answering the i+1 most confident
    ok = np.flatnonzero(precision >= target)
    i = int(ok[-1]) if len(ok) else int(np.argmax(precision))
    return {"threshold": float(conf[order][i]), "target_precision": target, "precision": float(precision[i]),
            "coverage": float((i + 1) / len(correct))}
