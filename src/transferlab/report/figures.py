"""Figures people would rather see than read: confusion matrix, top losses, training curves."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import matplotlib

if "ipykernel" not in sys.modules:  # a notebook keeps its inline backend; elsewhere never a GUI window
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from .._io import atomic_write


def save_figure(fig, path: str | Path, dpi: int = 110, tight: bool = True) -> Path:
    """Write ``fig`` atomically and close it. ``tight=False`` keeps the canvas size as drawn
    (a figure whose PNG size is part of its contract)."""
    path = Path(path)
    bbox = "tight" if tight else None
    atomic_write(path, lambda p: fig.savefig(p, dpi=dpi, bbox_inches=bbox, format=path.suffix[1:] or "png"))
    plt.close(fig)
    return path


def saved(fig: Figure, out: str | Path | None) -> Figure:
    """``fig``, also written to ``out`` when given: the ``plot_*(out=...)`` convention."""
    if out is not None:
        save_figure(fig, out)
    return fig


def _done(fig: Figure) -> Figure:
    """Detach a finished figure from pyplot: it is returned (a notebook shows the returned
    figure once, not again at the end of the cell) and saved only when asked."""
    plt.close(fig)
    return fig


def plot_confusion(confusion, classes: list[str], title: str = "Confusion matrix") -> Figure:
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
    return _done(fig)


def confusion_figure(confusion, classes: list[str], path: str | Path, title: str = "Confusion matrix") -> Path:
    """:func:`plot_confusion`, saved to ``path``."""
    return save_figure(plot_confusion(confusion=confusion, classes=classes, title=title), path)


def plot_top_losses(items: list[dict], data_config, max_items: int = 16) -> Figure:
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
    return _done(fig)


def top_losses_figure(items: list[dict], path: str | Path, data_config, max_items: int = 16) -> Path:
    """:func:`plot_top_losses`, saved to ``path``."""
    return save_figure(plot_top_losses(items=items, data_config=data_config, max_items=max_items), path)


def plot_curves(history: list[dict], best_epoch: int | None = None) -> Figure:
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
    return _done(fig)


def curves_figure(history: list[dict], path: str | Path, best_epoch: int | None = None) -> Path:
    """:func:`plot_curves`, saved to ``path``."""
    return save_figure(plot_curves(history=history, best_epoch=best_epoch), path)


def plot_robustness(r: dict) -> Figure:
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
    return _done(fig)


def robustness_figure(r: dict, path: str | Path) -> Path:
    """:func:`plot_robustness`, saved to ``path``."""
    return save_figure(plot_robustness(r=r), path)


def plot_reliability(curves: dict[str, dict], title: str = "Reliability") -> Figure:
    """Reliability diagram: accuracy vs mean confidence per confidence bin, one panel per curve
    (e.g. ``{"before": ..., "after T=1.6": ...}``, each from
    :func:`transferlab.evaluation.calibration.reliability`); the gap to the diagonal is shaded and
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
        ax.bar(centers[has], (conf - acc)[has], bottom=acc[has], width=width[has] * 0.95, fill=False,
               hatch="///", edgecolor="#c0392b", linewidth=0.8, label="gap to mean confidence")
        ax.plot(centers[has], conf[has], "_", color="black", markersize=9, label="mean confidence")
        for x, n in zip(centers[has], np.asarray(r["count"])[has], strict=True):
            ax.text(x, 0.01, str(n), ha="center", va="bottom", fontsize=6, rotation=90, color="white")
        ax.plot([0, 1], [0, 1], "--", color="#555", linewidth=1)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top-1 probability)", ylabel="accuracy")
        ax.set_title(f"{name}: ECE {r['ece']:.2%} (n={r['n']})", fontsize=9)
        ax.legend(loc="upper left", fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return _done(fig)


def reliability_figure(curves: dict[str, dict], path: str | Path, title: str = "Reliability") -> Path:
    """:func:`plot_reliability`, saved to ``path``."""
    return save_figure(plot_reliability(curves=curves, title=title), path)


def plot_contact_sheet(items: list[dict], data_config, cols: int = 6,
                         title: str = "Suspected label errors") -> Figure:
    """Grid of photos with their given and suggested labels: ``items`` have path, rank, given,
    suggested, score (lower = more suspect) and optionally p_given / p_suggested and confident
    (flagged by confident learning, marked on the sheet)."""
    from ..data.loader import decode

    rows = max(1, (len(items) + cols - 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.6, rows * 3.0))
    for ax in np.atleast_1d(axes).ravel():
        ax.axis("off")
    for ax, it in zip(np.atleast_1d(axes).ravel(), items):
        ax.imshow(decode(it["path"], data_config).permute(1, 2, 0).numpy())
        probs = (f" ({it['p_given']:.2f})", f" ({it['p_suggested']:.2f})") if "p_given" in it else ("", "")
        flag = "  [confident]" if it.get("confident") else ""
        ax.set_title(f"#{it['rank']} given: {it['given']}{probs[0]}\nsuggested: {it['suggested']}{probs[1]}\n"
                     f"score {it['score']:.3f}{flag}", fontsize=7)
    if not items:
        fig.text(0.5, 0.5, "no suspected label errors", ha="center")
    fig.suptitle(title)
    fig.tight_layout()
    return _done(fig)


def contact_sheet_figure(items: list[dict], path: str | Path, data_config, cols: int = 6,
                         title: str = "Suspected label errors") -> Path:
    """:func:`plot_contact_sheet`, saved to ``path``."""
    return save_figure(plot_contact_sheet(items=items, data_config=data_config, cols=cols, title=title), path)


# --------------------------------------------------------------------------------------------
# Explain and attack: arrays and result dicts in (the caller ran the model), PNG path out
# --------------------------------------------------------------------------------------------
def _top_bars(ax, probs: np.ndarray, classes: list[str], highlight: str, k: int = 3) -> None:
    """Horizontal bars of the ``k`` most probable classes, the top one in ``highlight``."""
    idx = np.argsort(-np.asarray(probs))[:k][::-1]
    ax.barh([classes[i][:28] for i in idx], [float(probs[i]) for i in idx],
            color=["#888"] * (len(idx) - 1) + [highlight])
    ax.set_xlim(0, 1)
    ax.tick_params(labelsize=8)


def plot_attack(images: dict[str, np.ndarray], probs: dict[str, np.ndarray], classes: list[str],
                  result: dict) -> Figure:
    """original | perturbation (amplified, scale printed) | adversarial, each with top-3 bars.

    ``images`` and ``probs``: keys ``original``, ``perturbation`` (already amplified), and
    ``adversarial``; [S, S, 3] floats in [0, 1] and [K] probabilities. ``result``: the dict of
    :func:`transferlab.attack.single.attack_image` plus ``amplification`` (the factor)."""
    from .text import _db

    r, o, a = result, result["original"], result["adversarial"]
    titles = {
        "original": f"original\n{o['class']} ({o['prob']:.2f})",
        "perturbation": f"perturbation ×{r['amplification']:.0f}\nL∞ = {r['linf_255']:.1f}/255, "
                        f"L2 = {r['l2']:.2f}, PSNR {_db(r['psnr_db'])}",
        "adversarial": f"adversarial ({r['method']}, ε = {r['eps_label']})\n{a['class']} ({a['prob']:.2f})"
                       f" — {'success' if r['success'] else 'FAILED'}",
    }
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.2), gridspec_kw={"height_ratios": [3, 1.1]})
    for j, key in enumerate(titles):
        axes[0, j].imshow(np.clip(images[key], 0, 1))
        axes[0, j].set_title(titles[key], fontsize=9)
        axes[0, j].axis("off")
        _top_bars(axes[1, j], probs[key], classes, "#c33" if key == "adversarial" else "#36c")
    axes[1, 1].set_title("model on the amplified perturbation alone", fontsize=8)
    goal = f"targeted → {r['target']}" if r["targeted"] else "untargeted"
    fig.suptitle(f"{r['model']}: {goal}", fontsize=10)
    fig.tight_layout()
    return _done(fig)


def attack_figure(images: dict[str, np.ndarray], probs: dict[str, np.ndarray], classes: list[str],
                  result: dict, path: str | Path) -> Path:
    """:func:`plot_attack`, saved to ``path``."""
    return save_figure(plot_attack(images=images, probs=probs, classes=classes, result=result), path)


def plot_dream_comparison(images: list[np.ndarray], results: list[dict],
                            titles: list[str] | None = None) -> Figure:
    """Dreams side by side, each titled with its own-model (and check-model) probability.
    ``results``: :meth:`transferlab.explain.dream.DreamResult.to_dict` of each image."""
    fig, axes = plt.subplots(1, len(images), figsize=(3.6 * len(images), 4.1))
    titles = titles or [r["method"] for r in results]
    for ax, img, r, t in zip(np.atleast_1d(axes), images, results, titles, strict=True):
        ax.imshow(img)
        ax.axis("off")
        sub = f"p={r['prob']:.2f} on {Path(r['model']).name}"
        if r.get("check"):
            c = r["check"]
            sub += f"\n{Path(c['backbone']).name}: {c['top'][0][0]} {c['top'][0][1]:.2f}"
        ax.set_title(f"{t}\n{sub}", fontsize=9)
    fig.suptitle(f"ideal '{results[0]['target']}'")
    return _done(fig)


def plot_dreams(results: Sequence, titles: Sequence[str] | None = None, out: str | Path | None = None) -> Figure:
    """Several :class:`~transferlab.explain.dream.DreamResult` side by side (e.g. plain, plain +
    TV, lucid), each titled with its own model's and its check model's verdict; ``out`` saves it."""
    return saved(plot_dream_comparison([r.image for r in results], [r.to_dict() for r in results],
                                       titles=list(titles) if titles else None), out)


def dream_comparison_figure(images: list[np.ndarray], results: list[dict], path: str | Path,
                            titles: list[str] | None = None) -> Path:
    """:func:`plot_dream_comparison`, saved to ``path``."""
    return save_figure(plot_dream_comparison(images=images, results=results, titles=titles), path)


FEATUREMAPS_DPI = 100
FEATUREMAPS_INCHES = (16.0, 8.0)  # fixed canvas (no tight bbox) so the PNG is always 1600 x 800


def _unit_upsampled(m: np.ndarray, size: int) -> np.ndarray:
    """A map scaled to [0, 1] and resized (bilinear) to ``size`` x ``size``."""
    from PIL import Image

    lo, hi = float(m.min()), float(m.max())
    unit = (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)
    up = Image.fromarray(np.asarray(unit, np.float32), "F").resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(up)


def plot_featuremaps(image: np.ndarray, activations: np.ndarray, channels: list[int],
                       layer: str, title: str = "") -> Figure:
    """Left: ``image`` ([S, S, 3] in [0, 1], what the model saw) with the channel mean of
    |``activations``| ([C, h, w] of ``layer``) as a heat map. Right: a 4x4 grid of the first 16
    ``channels`` (most active first), each a heat map over a grey thumbnail of the photo."""
    s, grey = image.shape[0], image.mean(2)
    fig = plt.figure(figsize=FEATUREMAPS_INCHES, dpi=FEATUREMAPS_DPI)
    gs = fig.add_gridspec(4, 8, left=0.01, right=0.99, bottom=0.02, top=0.9, wspace=0.05, hspace=0.18)
    ax = fig.add_subplot(gs[:, :4])
    ax.imshow(image)
    # where the layer responds at all: EfficientNet blocks end in a linear projection, so signs
    # are arbitrary and |a| keeps both
    ax.imshow(_unit_upsampled(np.abs(activations).mean(0), s), cmap="inferno", alpha=0.55)
    ax.set_title(f"{layer}: channel mean |activation| over the photo", fontsize=11)
    ax.axis("off")
    for k, c in enumerate(channels[:16]):
        a = fig.add_subplot(gs[k // 4, 4 + k % 4])
        a.imshow(grey, cmap="gray", vmin=0, vmax=1)
        a.imshow(_unit_upsampled(activations[c], s), cmap="viridis", alpha=0.7)
        a.set_title(f"ch {c}  mean {activations[c].mean():.2f}", fontsize=8)
        a.axis("off")
    c, h, w = activations.shape
    fig.suptitle(title or f"feature maps of {layer} ({c} channels, {h}x{w}); most active channels right",
                 fontsize=13)
    return _done(fig)


def featuremaps_figure(image: np.ndarray, activations: np.ndarray, channels: list[int], path: str | Path,
                       layer: str, title: str = "") -> Path:
    """:func:`plot_featuremaps`, saved to ``path``."""
    fig = plot_featuremaps(image=image, activations=activations, channels=channels, layer=layer, title=title)
    return save_figure(fig, path, dpi=FEATUREMAPS_DPI, tight=False)


def show(images, titles=None, cols: int = 4, size: float = 3.0, out: str | Path | None = None) -> Figure:
    """A grid of images with titles, returned as a figure (shown inline in a notebook; saved to
    ``out`` when given). ``images``: paths, PIL images or HxWx3 arrays (uint8, or floats in [0, 1])."""
    from PIL import Image

    images = list(images)
    titles = list(titles) if titles is not None else [Path(i).name if isinstance(i, (str, Path)) else ""
                                                        for i in images]
    cols = max(1, min(cols, len(images)))
    rows = max(1, -(-len(images) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * size, rows * (size + 0.35)), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, im, t in zip(axes.ravel(), images, titles):
        if isinstance(im, (str, Path)):
            with Image.open(im) as f:
                f.draft("RGB", (512, 512))
                im = np.asarray(f.convert("RGB"))
        ax.imshow(np.asarray(im))
        ax.set_title(str(t), fontsize=9)
    fig.tight_layout()
    if out is not None:
        save_figure(fig, out)
    return _done(fig)
