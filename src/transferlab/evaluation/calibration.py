"""Calibration: does a predicted 0.9 come true 90 % of the time?

- Expected calibration error (Naeini et al. 2015; Guo et al. 2017): the top-1 confidence is cut
  into 15 equal-width bins, and ECE = sum over bins of (share of images) x |accuracy - mean
  confidence|. The reliability diagram (:func:`transferlab.report.figures.reliability_figure`)
  draws the same bins.
- Temperature scaling (Guo et al. 2017): one scalar T divides the logits, fitted by minimising the
  negative log-likelihood of held-out logits. Argmax (and so accuracy) never changes; a
  logistic-regression or MLP head trained to 100 % on a few photos per class is over-confident,
  and T > 1 softens it. T is fitted on log T (the 1-D problem is smooth there and T stays > 0).

A run stores ``config["calibration"] = {"temperature": T, "ece_before": ..., "ece_after": ...}``;
:func:`apply_temperature` folds T into the head's last linear layer, so every consumer (predict,
TTA, attacks, export) sees calibrated probabilities with no code of its own.
"""

from __future__ import annotations

import math

import numpy as np

from ..models.heads import apply_temperature  # noqa: F401 - where calibration is applied to a head

BINS = 15
LOG_T_BOUNDS = (math.log(0.05), math.log(20.0))  # far outside anything a sane head needs
# With no error among the held-out images the NLL falls forever as T -> 0 (every answer right, so
# "be certain" looks best): such a T says nothing about new photos, so it is not fitted.
MIN_IMAGES = 20


def reliability(probs: np.ndarray, y: np.ndarray, bins: int = BINS) -> dict:
    """Per-bin mean confidence, accuracy and count of the top-1 prediction, and the ECE.
    Bins are ``(lo, hi]`` (the first includes 0), as in Guo et al."""
    probs, y = np.asarray(probs, np.float64), np.asarray(y)
    conf, correct = probs.max(1), (probs.argmax(1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)
    count = np.bincount(idx, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, conf, bins) / count
        acc = np.bincount(idx, correct, bins) / count
    gap = np.where(count > 0, np.abs(acc - mean_conf), 0.0)
    n = max(len(y), 1)
    return {"edges": edges.tolist(), "confidence": _listed(mean_conf), "accuracy": _listed(acc),
            "count": count.tolist(), "ece": float((count * gap).sum() / n), "n": len(y)}


def _listed(a: np.ndarray) -> list:
    return [None if not np.isfinite(v) else float(v) for v in a]


def ece(probs: np.ndarray, y: np.ndarray, bins: int = BINS) -> float:
    """Expected calibration error of the top-1 confidence (0 = perfectly calibrated)."""
    return reliability(probs, y, bins)["ece"]


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def logits_from_probs(probs: np.ndarray) -> np.ndarray:
    """log p: logits up to a per-row constant, which softmax ignores (what a trainer that
    returns probabilities gives temperature scaling)."""
    return np.log(np.clip(np.asarray(probs, np.float64), 1e-12, 1.0))


def nll(logits: np.ndarray, y: np.ndarray, temperature: float = 1.0) -> float:
    p = softmax(logits, temperature)[np.arange(len(y)), np.asarray(y)]
    return float(-np.log(np.clip(p, 1e-300, 1.0)).mean())


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The T that minimises the NLL of ``softmax(logits / T)`` (bounded 1-D search on log T)."""
    from scipy.optimize import minimize_scalar

    res = minimize_scalar(lambda lt: nll(logits, y, math.exp(lt)), bounds=LOG_T_BOUNDS, method="bounded",
                          options={"xatol": 1e-4})
    return float(math.exp(res.x))


def calibrate(logits: np.ndarray, y: np.ndarray, source: str = "val", bins: int = BINS) -> dict:
    """Fit T on held-out ``logits`` and report what it does there: what ``config["calibration"]``
    holds. ``source`` says where the logits came from (``val``, ``cv``)."""
    y = np.asarray(y)
    errors = int((np.asarray(logits).argmax(1) != y).sum())
    fitted = len(y) >= MIN_IMAGES and errors > 0
    t = fit_temperature(logits, y) if fitted else 1.0
    before, after = softmax(logits), softmax(logits, t)
    return {"temperature": t, "ece_before": ece(before, y, bins), "ece_after": ece(after, y, bins),
            "nll_before": nll(logits, y), "nll_after": nll(logits, y, t), "bins": bins, "n": len(y),
            "errors": errors, "source": source,
            "fitted": fitted, **({} if fitted else {"note": f"T kept at 1: {len(y)} held-out images with {errors} "
                                                              f"errors (needs >= {MIN_IMAGES} and an error)"})}
