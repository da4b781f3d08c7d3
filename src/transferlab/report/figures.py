"""Figures people would rather see than read: confusion matrix, top losses, training curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from .._io import atomic_write


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    path = Path(path)
    atomic_write(path, lambda p: fig.savefig(p, dpi=dpi, bbox_inches="tight", format=path.suffix[1:] or "png"))
    plt.close(fig)
    return path


def confusion_figure(confusion, classes: list[str], path: str | Path, title: str = "Confusion matrix") -> Path:
    from sklearn.metrics import ConfusionMatrixDisplay

    cm = np.asarray(confusion)
    n = len(classes)
    size = min(4 + 0.32 * n, 18)
    fig, ax = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay(cm, display_labels=classes).plot(
        ax=ax, colorbar=False, xticks_rotation="vertical", include_values=n <= 40, values_format="d"
    )
    acc = np.trace(cm) / max(cm.sum(), 1)
    ax.set_title(f"{title} — accuracy {acc:.1%} (n={cm.sum()})")
    if n > 15:
        for t in ax.texts:
            t.set_fontsize(6)
    return save_figure(fig, path)


def top_losses_figure(items: list[dict], path: str | Path, data_config, max_items: int = 16) -> Path:
    """Grid of the most confidently wrong images: ``items`` have path, true, pred, prob, loss."""
    from ..data.loader import decode

    items = items[:max_items]
    cols = 4
    rows = max(1, (len(items) + cols - 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 3, rows * 3.3))
    for ax in np.atleast_1d(axes).ravel():
        ax.axis("off")
    for ax, it in zip(np.atleast_1d(axes).ravel(), items):
        img = decode(it["path"], data_config)
        ax.imshow(img.permute(1, 2, 0).numpy())
        ax.set_title(f"true: {it['true']}\npred: {it['pred']} ({it['prob']:.2f})", fontsize=8)
    if not items:
        fig.text(0.5, 0.5, "no misclassified images", ha="center")
    fig.suptitle("Top losses (most confidently wrong)")
    return save_figure(fig, path)


def curves_figure(history: list[dict], path: str | Path, best_epoch: int | None = None) -> Path:
    """Loss and accuracy per epoch, train vs val. ``history`` rows: epoch, train_loss, val_loss,
    train_acc, val_acc (missing keys are skipped). ``best_epoch``: the epoch the run kept,
    marked with a dashed line (the weights are that epoch's, not the last one's)."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    ep = [h["epoch"] for h in history]
    for key, ax in (("loss", a1), ("acc", a2)):
        for split in ("train", "val"):
            ys = [h.get(f"{split}_{key}") for h in history]
            if any(y is not None for y in ys):
                ax.plot(ep, [np.nan if y is None else y for y in ys], marker="o", label=split)
        if best_epoch is not None and best_epoch in ep:
            ax.axvline(best_epoch, color="#c33", linestyle="--", linewidth=1, label=f"kept (epoch {best_epoch})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.legend()
        ax.grid(alpha=0.3)
    a1.set_title("loss")
    a2.set_title("accuracy")
    return save_figure(fig, path)


def robustness_figure(r: dict, path: str | Path) -> Path:
    """Accuracy vs epsilon (in 8-bit levels for L-inf)."""
    linf = r["norm"] == "linf"
    xs = [e * 255 for e in r["eps"]] if linf else r["eps"]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.plot(xs, [a * 100 for a in r["accuracy"]], "o-", color="#c33")
    for x, a in zip(xs, r["accuracy"], strict=True):
        ax.annotate(f"{a:.0%}", (x, a * 100), textcoords="offset points", xytext=(0, 6), ha="center",
                    fontsize=8)
    ax.set_xlabel("ε (L∞, in 8-bit levels /255)" if linf else "ε (L2, [0,1] pixels)")
    ax.set_ylabel("accuracy under attack (%)")
    ax.set_ylim(-3, 105)
    ax.grid(alpha=0.3)
    name = Path(r["run"]).name
    ax.set_title(f"{name}: {r['method']} ({r['steps']} steps), n = {r['images']}", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def reliability_figure(curves: dict[str, dict], path: str | Path, title: str = "Reliability") -> Path:
    """Reliability diagram: accuracy vs mean confidence per confidence bin, one panel per curve
    (e.g. ``{"before": ..., "after T=1.6": ...}``, each from
    :func:`transferlab.evaluate.calibration.reliability`); the gap to the diagonal is shaded and
    the ECE is in the panel's title. Bar width follows the bins; counts are written under bars."""
    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 4.3), squeeze=False)
    for ax, (name, r) in zip(axes[0], curves.items(), strict=True):
        edges = np.asarray(r["edges"])
        centers, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
        acc = np.array([np.nan if a is None else a for a in r["accuracy"]])
        conf = np.array([np.nan if c is None else c for c in r["confidence"]])
        has = np.isfinite(acc)
        ax.bar(centers[has], acc[has], width=width[has] * 0.95, color="#4a7ab7", edgecolor="#23466e",
               label="accuracy")
        ax.bar(centers[has], (conf - acc)[has], bottom=acc[has], width=width[has] * 0.95, color="#e07b7b",
               alpha=0.55, label="gap to confidence")
        for x, n in zip(centers[has], np.asarray(r["count"])[has], strict=True):
            ax.text(x, 0.01, str(n), ha="center", va="bottom", fontsize=6, rotation=90, color="white")
        ax.plot([0, 1], [0, 1], "--", color="#555", linewidth=1)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top-1 probability)", ylabel="accuracy")
        ax.set_title(f"{name}: ECE {r['ece']:.2%} (n={r['n']})", fontsize=9)
        ax.legend(loc="upper left", fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def contact_sheet_figure(items: list[dict], path: str | Path, data_config, cols: int = 6,
                         title: str = "Suspected label errors") -> Path:
    """Grid of photos with their given and suggested labels: ``items`` have path, rank, given,
    suggested, score (lower = more suspect) and optionally p_given / p_suggested."""
    from ..data.loader import decode

    rows = max(1, (len(items) + cols - 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.6, rows * 3.0))
    for ax in np.atleast_1d(axes).ravel():
        ax.axis("off")
    for ax, it in zip(np.atleast_1d(axes).ravel(), items):
        ax.imshow(decode(it["path"], data_config).permute(1, 2, 0).numpy())
        probs = (f" ({it['p_given']:.2f})", f" ({it['p_suggested']:.2f})") if "p_given" in it else ("", "")
        ax.set_title(f"#{it['rank']} given: {it['given']}{probs[0]}\nsuggested: {it['suggested']}{probs[1]}\n"
                     f"score {it['score']:.3f}", fontsize=7)
    if not items:
        fig.text(0.5, 0.5, "no suspected label errors", ha="center")
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)
