"""``train``: dataset -> run directory. Modes are pluggable trainers; ``linear`` (multinomial
logistic regression on cached features) lives here, ``head`` and ``finetune`` in
:mod:`transferlab.finetune`."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import __version__
from ._io import save_safetensors, write_json
from .backbones import DEFAULT_BACKBONE, Backbone, create_backbone
from .data import ImageDataset, load_dataset
from .errors import DataError, TransferlabError
from .features import extract
from .metrics import classification_metrics
from .run import CONFIG, METRICS, WEIGHTS, Run, load_run


@dataclass
class Fitted:
    """What a trainer returns: the head (and, for fine-tuning, the whole network)."""

    head: nn.Module
    head_spec: dict
    val_probs: np.ndarray | None  # [n_val_ok, k]
    val_ok: np.ndarray | None  # bool mask over the val split
    train_accuracy: float | None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    model_state: dict[str, torch.Tensor] | None = None  # whole ImageClassifier (finetune)
    info: dict = field(default_factory=dict)  # mode-specific settings / history
    history: list[dict] = field(default_factory=list)


Trainer = Callable[..., Fitted]
TRAINERS: dict[str, Trainer] = {}


def register_trainer(mode: str):
    def deco(fn: Trainer) -> Trainer:
        TRAINERS[mode] = fn
        return fn

    return deco


def default_run_dir(data: str | Path, backbone: str, mode: str) -> Path:
    stem = Path(str(data).rstrip("/")).name or "data"
    base = Path("runs") / f"{stem}-{backbone.replace(':', '_')}-{mode}"
    p, i = base, 2
    while p.exists():
        p, i = Path(f"{base}-{i}"), i + 1
    return p


_OPTION_MODES = {  # the CLI's mode-specific options and the modes that use them
    "epochs": ("head", "finetune"), "lr": ("head", "finetune"), "batch_size": ("head", "finetune"),
    "unfreeze": ("finetune",), "aug": ("finetune",), "mixup": ("finetune",), "cutmix": ("finetune",),
    "wise": ("finetune",),
    "resume": ("finetune",),
}


def train(
    data: str | Path | ImageDataset,
    *,
    backbone: str = DEFAULT_BACKBONE,
    mode: str = "linear",
    format: str = "auto",
    label: str = "breed",
    split: str | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    out: str | Path | None = None,
    weights: str | Path | None = None,
    input_size: int | None = None,
    progress: bool = True,
    **options,
) -> Run:
    """Train a classifier on ``data`` and write a run directory; returns the loaded :class:`Run`.

    For Oxford-IIIT Pet data the default split is the official ``trainval``; a seeded, stratified
    ``val_fraction`` of it is held out for model selection and the reported validation metrics.
    ``input_size``: train (and later predict) at another input size than the backbone's own; see
    :func:`transferlab.backbones.create_backbone`.
    """
    if mode == "finetune" or mode == "head":
        from . import finetune  # noqa: F401 - registers the trainers
    if mode not in TRAINERS:
        raise TransferlabError(f"unknown mode '{mode}' (choose from {', '.join(sorted(TRAINERS))})")
    misplaced = [k for k, v in options.items() if v is not None and mode not in _OPTION_MODES.get(k, (mode,))]
    if misplaced:  # an option the chosen mode would silently ignore
        k = misplaced[0]
        raise TransferlabError(f"--{k.replace('_', '-')} applies to --mode {' or '.join(_OPTION_MODES[k])}, "
                               f"not {mode}")
    if not 0 <= val_fraction < 1:
        raise DataError("--val-fraction must be in [0, 1)")
    if isinstance(data, ImageDataset):
        ds = data
    else:
        if split is None and Path(data).is_dir() and (Path(data) / "annotations" / "list.txt").is_file():
            split = "trainval"
        ds = load_dataset(data, format=format, label=label, split=split)
    if options.get("resume"):
        from .finetune import resumed_backbone

        backbone, input_size = resumed_backbone(options["resume"], backbone, input_size)
    bb = create_backbone(backbone, weights=weights, input_size=input_size)
    out = Path(out) if out else default_run_dir(ds.root, backbone, mode)
    if (out.exists() and any(out.iterdir()) and not (out / CONFIG).exists() and not options.get("resume")
            and os.environ.get("RANK", "0") == "0"):  # other torchrun ranks may see rank 0's checkpoint
        raise TransferlabError(f"{out} exists and is not a run directory; choose another --out")
    tr, va = ds.train_val_split(val_fraction, seed)

    t0 = time.perf_counter()
    fitted = TRAINERS[mode](bb, tr, va, seed=seed, out=out, progress=progress, **options)
    seconds = time.perf_counter() - t0
    if os.environ.get("RANK", "0") != "0":  # torchrun: only rank 0 writes the run directory
        return None  # type: ignore[return-value]

    return write_run(out, bb, ds, tr, va, fitted, mode=mode, seed=seed, val_fraction=val_fraction,
                     seconds=seconds, weights=weights)


def write_run(out: Path, bb: Backbone, ds: ImageDataset, tr: ImageDataset, va: ImageDataset, fitted: Fitted,
              *, mode: str, seed: int, val_fraction: float, seconds: float, weights) -> Run:
    """Write config.json, model.safetensors, metrics.json and confusion.png; return the Run."""
    from .figures import confusion_figure, curves_figure

    out.mkdir(parents=True, exist_ok=True)
    if fitted.model_state is not None:
        save_safetensors(out / WEIGHTS, fitted.model_state)
    else:
        save_safetensors(out / WEIGHTS, {f"head.{k}": v for k, v in fitted.head.state_dict().items()})
    skipped = [{"path": p, "reason": r} for p, r in fitted.skipped]
    config = {
        "transferlab_version": __version__,
        "mode": mode,
        "classes": ds.classes,
        "backbone": {
            "name": bb.name,
            "weights_digest": bb.weights_digest,
            "source": bb.source,
            **({"weights_path": str(Path(weights).resolve())} if weights else {}),
        },
        "preprocessing": bb.data_config.to_dict(),
        "head": fitted.head_spec,
        "train": {"seed": seed, "val_fraction": val_fraction, **fitted.info},
        "data": {**ds.summary(), "train_images": len(tr), "val_images": len(va),
                 "skipped": len(skipped), "skipped_files": skipped, "ignored_files": ds.ignored},
    }
    metrics: dict = {
        "mode": mode,
        "backbone": bb.name,
        "train_accuracy": fitted.train_accuracy,
        "seconds": round(seconds, 2),
        "skipped": len(skipped),
        "skipped_files": skipped,
    }
    figures = []
    if fitted.val_probs is not None and len(fitted.val_probs):
        yv = va.labels[fitted.val_ok]
        m = classification_metrics(yv, fitted.val_probs, ds.classes)
        metrics["val_accuracy"] = m["accuracy"]
        metrics["val"] = m
        figures.append(confusion_figure(m["confusion"], ds.classes, out / "confusion.png",
                                        title="Validation confusion"))
    if fitted.history:
        metrics["history"] = fitted.history
        figures.append(curves_figure(fitted.history, out / "curves.png"))
    metrics["figures"] = [str(f) for f in figures]
    write_json(out / METRICS, metrics)
    write_json(out / CONFIG, config)  # last: its presence marks a complete run directory
    return load_run(out)


# ----------------------------------------------------------------------------------------------
# mode "linear": multinomial logistic regression on pooled features
# ----------------------------------------------------------------------------------------------
C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


def features_for(bb: Backbone, ds: ImageDataset, progress: bool, description: str):
    f = extract(bb, ds.paths, progress=progress, description=description)
    return f.features, ds.labels[f.ok], f.ok, f.skipped


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


def _val_path(xt, yt, xv, yv, seed: int) -> dict[float, float]:
    """Validation accuracy along the C grid, warm-starting each fit from the previous solution
    (a regularisation path), which cuts the solver's iterations several-fold."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    sc = StandardScaler().fit(xt)
    xt_s, xv_s = sc.transform(xt), sc.transform(xv)
    lr = LogisticRegression(max_iter=2000, random_state=seed, warm_start=True)
    scores = {}
    for c in C_GRID:
        lr.set_params(C=c)
        scores[c] = float(lr.fit(xt_s, yt).score(xv_s, yv))
    return scores


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
    validation split, or by k-fold CV on the training features when there is none."""
    scores: dict = {}
    if c is None:
        if xv is not None and len(yv):
            scores = _val_path(xt, yt, xv, yv, seed)
            c = max(scores, key=lambda cc: (scores[cc], -cc))
        else:
            c, scores = _cv_choose_c(xt, yt, seed)
    return _to_linear(_fit_logreg(xt, yt, c, seed), k), c, scores


@register_trainer("linear")
def train_linear(bb: Backbone, tr: ImageDataset, va: ImageDataset, *, seed: int = 0, progress: bool = True,
                 c: float | None = None, **_) -> Fitted:
    """Regularisation C chosen on the validation split (or by k-fold CV when there is none)."""
    k = len(tr.classes)
    xt, yt, _, sk_t = features_for(bb, tr, progress, "features (train)")
    xv = yv = ok_v = None
    sk_v: list = []
    if len(va):
        xv, yv, ok_v, sk_v = features_for(bb, va, progress, "features (val)")
    if len(np.unique(yt)) < 2:
        raise DataError("the training split has readable images of fewer than 2 classes")
    head, c, scores = fit_linear_probe(xt, yt, xv, yv, k, seed, c)
    with torch.no_grad():
        train_acc = float((head(torch.from_numpy(xt)).argmax(1).numpy() == yt).mean())
        val_probs = head(torch.from_numpy(xv)).softmax(-1).numpy() if xv is not None else None
    return Fitted(
        head=head,
        head_spec={"type": "linear", "in": bb.feature_dim, "out": k},
        val_probs=val_probs,
        val_ok=ok_v,
        train_accuracy=train_acc,
        skipped=sk_t + sk_v,
        info={"C": c, "C_scores": {str(kk): v for kk, v in scores.items()},
              "selection": "val" if xv is not None and len(va) else "cv"},
    )
