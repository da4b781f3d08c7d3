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
