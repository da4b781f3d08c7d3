"""Figures people would rather see than read: confusion matrix, top losses, training curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from ._io import atomic_write


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
    from .pipeline import decode

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


def curves_figure(history: list[dict], path: str | Path) -> Path:
    """Loss and accuracy per epoch, train vs val. ``history`` rows: epoch, train_loss, val_loss,
    train_acc, val_acc (missing keys are skipped)."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    ep = [h["epoch"] for h in history]
    for key, ax in (("loss", a1), ("acc", a2)):
        for split in ("train", "val"):
            ys = [h.get(f"{split}_{key}") for h in history]
            if any(y is not None for y in ys):
                ax.plot(ep, [np.nan if y is None else y for y in ys], marker="o", label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.legend()
        ax.grid(alpha=0.3)
    a1.set_title("loss")
    a2.set_title("accuracy")
    return save_figure(fig, path)
