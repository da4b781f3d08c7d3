"""``evaluate RUN DATA``: metrics.json, confusion.png and top_losses.png for a run on a dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._io import check_writable, ensure_outside, write_json
from ..data.datasets import ImageDataset, load_dataset
from ..errors import DataError
from .calibration import reliability
from .metrics import classification_metrics


def resolve_eval_data(run, data, split: str | None, format: str = "auto", label: str | None = None) -> ImageDataset:
    """The dataset to evaluate on. Oxford-IIIT Pet defaults to its official ``test`` split;
    ``--split train|val`` re-creates the run's own seeded split of DATA."""
    label = label or _run_label(run)
    if split in ("train", "val"):
        ds = load_dataset(data, format=format, label=label, split="trainval" if _is_oxford(data) else None)
        cfg = run.config
        tr, va = ds.train_val_split(cfg.val_fraction if cfg else 0.2, cfg.seed if cfg else 0)
        return tr if split == "train" else va
    if split is None and _is_oxford(data):
        split = "test"
    return load_dataset(data, format=format, label=label, split=split)


def _is_oxford(data) -> bool:
    return Path(data).is_dir() and (Path(data) / "annotations" / "list.txt").is_file()


def _run_label(run) -> str:
    return "species" if [c.lower() for c in run.classes] == ["cat", "dog"] else "breed"


def map_labels(run, ds: ImageDataset) -> np.ndarray:
    """Dataset labels as indices into the run's classes (matched by name, case-insensitive;
    for a bare backbone, by ImageNet class name)."""
    lower = {c.lower(): i for i, c in enumerate(run.classes)}
    mapping = []
    for c in ds.classes:
        if c.lower() in lower:
            mapping.append(lower[c.lower()])
        elif run.path is None:
            mapping.append(run.class_index(c))
        else:
            raise DataError(f"class '{c}' of the data is not one of the run's classes ({', '.join(run.classes[:10])})")
    return np.asarray(mapping)[ds.labels]


def evaluate(run, data, split: str | None = None, out: str | Path | None = None, *, format: str = "auto",
             label: str | None = None, progress=True, **predict_options) -> dict:
    """Metrics of ``run`` on ``data``; with ``out``, also writes metrics.json and the figures.
    An ``out`` inside DATA or not writable is refused before any image is read."""
    from ..report.figures import confusion_figure, reliability_figure, top_losses_figure

    if out is not None:
        ensure_outside(out, (data.root or None) if isinstance(data, ImageDataset) else data)
        check_writable(out)
    ds = data if isinstance(data, ImageDataset) else resolve_eval_data(run, data, split, format, label)
    y = map_labels(run, ds)
    probs, skipped = run.predict_proba_paths(ds.paths, progress=progress, cache=True, **predict_options)
    bad = {p for p, _ in skipped}
    ok = np.array([p not in bad for p in ds.paths])
    y_ok = y[ok]
    m = classification_metrics(y_ok, probs, run.classes)
    if len(y_ok):  # of the probabilities the run gives: calibrated when it stores a temperature
        rel = reliability(probs, y_ok)
        m.update({"ece": rel["ece"], "reliability": rel,
                  "temperature": run.config.temperature if run.config else None})
    m.update({"run": run.name, "data": ds.root, "split": ds.split, "skipped": len(skipped),
              "skipped_files": [{"path": p, "reason": r} for p, r in skipped]})
    if out is None:
        return m
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths_ok = [p for p in ds.paths if p not in bad]
    pred = probs.argmax(1)
    wrong = np.flatnonzero(pred != y_ok)
    loss = -np.log(np.clip(probs[np.arange(len(y_ok)), y_ok], 1e-12, 1))
    order = wrong[np.argsort(-loss[wrong])]
    top = [{"path": paths_ok[i], "true": run.classes[y_ok[i]], "pred": run.classes[pred[i]],
            "prob": float(probs[i, pred[i]]), "loss": float(loss[i])} for i in order[:16]]
    m["top_losses"] = top
    figs = [
        confusion_figure(m["confusion"], run.classes, out / "confusion.png", title=f"{ds.split or 'all'} confusion"),
        top_losses_figure(top, out / "top_losses.png", run.data_config),
    ]
    if "reliability" in m:
        t = m["temperature"]
        figs.append(reliability_figure({"run" if t is None else f"run (T = {t:.2f})": m["reliability"]},
                                       out / "reliability.png", title=f"Reliability on {ds.split or 'all'}"))
    m["figures"] = [str(f) for f in figs]
    write_json(out / "metrics.json", m)
    return m
