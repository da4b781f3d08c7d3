"""``evaluate RUN DATA``: metrics.json, confusion.png and top_losses.png for a run on a dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._io import check_writable, ensure_outside, write_json
from ..data.datasets import ImageDataset, load_dataset
from ..errors import DataError
from .calibration import reliability
from .metrics import classification_metrics
from .results import Evaluation


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


def evaluate(model, data, split: str | None = None, out: str | Path | None = None, *, format: str = "auto",
             label: str | None = None, progress=True, **predict_options) -> Evaluation:
    """Metrics of ``model`` (a :class:`~transferlab.inference.Predictor`: a run, a bare backbone)
    on ``data``, as an :class:`~transferlab.evaluation.results.Evaluation`; with ``out``, also
    writes metrics.json and the figures. An ``out`` inside DATA or not writable is refused before
    any image is read."""
    if out is not None:
        ensure_outside(out, (data.root or None) if isinstance(data, ImageDataset) else data)
        check_writable(out)
    ds = data if isinstance(data, ImageDataset) else resolve_eval_data(model, data, split, format, label)
    y = map_labels(model, ds)
    probs, skipped = model.predict_proba_paths(ds.paths, progress=progress, cache=True, **predict_options)
    bad = {p for p, _ in skipped}
    y_ok = y[np.array([p not in bad for p in ds.paths], bool)]
    m = classification_metrics(y_ok, probs, model.classes)
    if len(y_ok):  # of the probabilities the model gives: calibrated when it stores a temperature
        rel = reliability(probs, y_ok)
        m.update({"ece": rel["ece"], "reliability": rel,
                  "temperature": model.config.temperature if model.config else None})
    m.update({"run": model.name, "data": ds.root, "split": ds.split, "skipped": len(skipped),
              "skipped_files": [{"path": p, "reason": r} for p, r in skipped]})
    ev = Evaluation(m, probs, y_ok, [p for p in ds.paths if p not in bad], list(model.classes),
                    getattr(model, "data_config", None))
    if out is not None:
        _write(ev, Path(out))
    return ev


def _write(ev: Evaluation, out: Path) -> None:
    """metrics.json (with the 16 top losses) and the confusion, top-loss and reliability figures."""
    out.mkdir(parents=True, exist_ok=True)
    m = ev.metrics
    m["top_losses"] = list(ev.top_losses(16))
    ev.plot_confusion(out / "confusion.png")
    ev.plot_top_losses(16, out / "top_losses.png")
    names = ["confusion", "top_losses"]
    if "reliability" in m:
        ev.plot_reliability(out / "reliability.png")
        names.append("reliability")
    ev.figures = {n: str(out / f"{n}.png") for n in names}
    m["figures"] = list(ev.figures.values())
    write_json(out / "metrics.json", m)
