"""``review RUN DATA``: photos whose label looks wrong, found by confident learning.

Confident learning (Northcutt, Jiang & Chuang, JAIR 2021; the ``cleanlab`` library), written out
here in a few lines instead of adding cleanlab + pandas as dependencies:

1. out-of-sample probabilities: k-fold cross-validated logistic regression on the run backbone's
   cached features (every photo is scored by a model that never saw it), temperature-scaled on
   those same out-of-fold logits (a strongly regularised probe is under-confident);
2. per-class thresholds t_j = the mean probability of class j over the photos labelled j (the
   class's "self-confidence");
3. a photo's *confident label* is the class with the highest probability among those whose
   probability reaches their threshold; the *confident joint* counts (given, confident) pairs;
4. its off-diagonal entries are the label issues (cleanlab's ``filter_by="confident_learning"``,
   ``confident`` in the list). The thresholds are the classes' mean self-confidence, about 0.98
   on an easy, well-separated set, so few photos pass them there (1 of PetImages' 5,999 with a
   lite2 ensemble): the ranked list also holds every other photo the model puts in another class
   (40 there), by the normalised margin p(given) - max p(other), most negative first, and the
   contact sheet shows the most doubtful photos whichever rule flagged them.

The result is a ranked list (JSON and CSV) and a contact sheet of the top suspects, for a person to
check: nothing is relabelled or moved (data is never modified).
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import ClassVar

import numpy as np

from .._io import atomic_write, check_writable, ensure_outside, write_json
from ..data.datasets import ImageDataset, load_dataset
from ..display import Table, card, one_line, percent
from ..errors import DataError
from ..options import FOLDS, NON_NEGATIVE, Interval, Options, Rule
from ..probe import clamp_folds, cross_val_logits
from .calibration import fit_temperature, softmax


@dataclass
class ReviewOptions(Options):
    """How suspects are found: ``folds`` for the out-of-sample probabilities, ``c`` the logistic
    regression's inverse regularisation (None: the run's own C, else 1), ``top`` photos on the
    contact sheet. ``split``/``format``/``label`` read DATA (default: every listed image)."""

    folds: int = 5
    c: float | None = None
    seed: int = 0
    top: int = 24
    split: str | None = None
    format: str = "auto"
    label: str | None = None

    constraints: ClassVar[dict[str, Rule]] = {
        "folds": FOLDS, "c": Interval(float, 0, closed="neither", optional=True), "top": NON_NEGATIVE,
        "seed": NON_NEGATIVE}


def confident_joint(probs: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(joint [k, k] counts of (given, confident label), confident label per photo (-1: none
    above threshold), per-class thresholds)."""
    k = probs.shape[1]
    thresholds = np.array([probs[y == j, j].mean() if (y == j).any() else 1.0 for j in range(k)])
    above = probs >= thresholds[None, :] - 1e-12
    confident = np.where(above, probs, -1.0).argmax(1)
    confident[~above.any(1)] = -1
    has = confident >= 0
    joint = np.zeros((k, k), np.int64)
    np.add.at(joint, (y[has], confident[has]), 1)
    return joint, confident, thresholds


def label_issues(probs: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Confident learning's own list (cleanlab's issues): the flagged rows of :func:`rank_suspects`,
    in its order, with their confident labels and margins."""
    order, suggested, margin, flagged = rank_suspects(probs, y)
    return order[flagged], suggested[flagged], margin[flagged]


def rank_suspects(probs: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every photo that confident learning flags or whose label is not the model's top class,
    most suspect first (margin p(given) - max p(other), then self-confidence): (indices,
    suggested labels, margins, flagged by confident learning)."""
    _, confident, _ = confident_joint(probs, y)
    rows = np.arange(len(y))
    other = probs.copy()
    other[rows, y] = -np.inf
    margin = probs[rows, y] - other.max(1)
    flagged = (confident >= 0) & (confident != y)
    idx = np.flatnonzero(flagged | (probs.argmax(1) != y))
    order = idx[np.lexsort((probs[idx, y[idx]], margin[idx]))]
    suggested = np.where(flagged[order], confident[order], other[order].argmax(1))
    return order, suggested, margin[order], flagged[order]


class ReviewResult(dict):
    """:func:`review`'s JSON dict (summary + ranked ``suspects``), which shows itself: a one-line
    repr, a card with the first suspects, :meth:`plot` for the contact sheet."""

    data_config: object = None

    @property
    def suspects(self) -> Table:
        return Table(self["suspects"], name="suspected label errors")

    def __repr__(self) -> str:
        return one_line("Review", {"model": self["run"], "images": self["images"], "issues": self["issues_found"],
                                   "suspects": self["suspects_found"], "cv_accuracy": self["cv_accuracy"]})

    def _repr_html_(self) -> str:
        top = self["suspects"][:6]
        fields = {"model": self["run"], "images": self["images"], "cv accuracy": percent(self["cv_accuracy"]),
                  "confident issues": self["issues_found"], "suspects": self["suspects_found"]}
        return card("Review", fields, [r["path"] for r in top],
                    [f"#{r['rank']} {r['given']} → {r['suggested']}" for r in top], size=120)

    def plot(self, k: int = 24, out: str | Path | None = None):
        """The contact sheet of the ``k`` most suspect photos."""
        from ..report.figures import plot_contact_sheet, save_figure

        fig = plot_contact_sheet(self["suspects"][:k], _sheet_config(self.data_config),
                                 title=f"Top {min(k, len(self['suspects']))} suspected label errors "
                                       f"of {self['suspects_found']} (score = p(given) - max p(other))")
        if out is not None:
            save_figure(fig, out)
        return fig


def review(run, data, out: str | Path | None = None, options: ReviewOptions | None = None, *,
           progress=True, **kw) -> dict:
    """Suspected label errors in ``data`` with ``run``'s backbone (its features; the run's head is
    not used: every photo is scored out of sample). With ``out``: review.json, review.csv and
    contact_sheet.png there. Returns the summary and the ranked ``suspects``. ``options`` or the
    keywords of :class:`ReviewOptions` (``split="trainval"``, ``folds``...)."""
    o = (replace(options, **kw) if options else ReviewOptions(**kw)).validate()
    if out is not None:
        ensure_outside(out, data.root if isinstance(data, ImageDataset) else data)
        check_writable(out)
    ds = data if isinstance(data, ImageDataset) else _dataset(run, data, o)
    x, ok, skipped = _features(run, ds, progress)
    y, paths = ds.labels[ok], [p for p, keep in zip(ds.paths, ok, strict=True) if keep]
    c = float(o.c or (run.config.c if run.config else None) or 1.0)
    if clamp_folds(y, o.folds) < 2:
        raise DataError("every class needs at least 2 readable photos to be reviewed")
    z = cross_val_logits(x, y, o.folds, c, o.seed)
    t = fit_temperature(z, y)
    probs = softmax(z, t)
    order, suggested, margin, flagged = rank_suspects(probs, y)
    suspects = [{"rank": r + 1, "path": paths[i], "given": ds.classes[y[i]], "suggested": ds.classes[s],
                 "score": float(m), "p_given": float(probs[i, y[i]]), "p_suggested": float(probs[i, s]),
                 "confident": bool(f)}
                for r, (i, s, m, f) in enumerate(zip(order, suggested, margin, flagged, strict=True))]
    result = ReviewResult({"run": run.name, "data": ds.root, "split": ds.split, "images": int(ok.sum()),
              "classes": ds.classes, "suspects_found": len(suspects), "issues_found": int(flagged.sum()),
              "cv_accuracy": float((probs.argmax(1) == y).mean()), "C": c, "temperature": t,
              "method": "confident learning (off-diagonal confident joint) on temperature-scaled out-of-fold "
                        "probabilities, plus every photo the model puts in another class; ranked by "
                        "p(given) - max p(other)",
              "options": asdict(o), "skipped": len(skipped),
              "skipped_files": [{"path": p, "reason": r} for p, r in skipped], "suspects": suspects})
    result.data_config = run.data_config
    if out is not None:
        result["files"] = _write(Path(out), result, o.top)
    return result


def _dataset(run, data, o: ReviewOptions) -> ImageDataset:
    label = o.label or ("species" if [c.lower() for c in run.classes] == ["cat", "dog"] else "breed")
    return load_dataset(data, format=o.format, label=label, split=o.split)


def _features(run, ds: ImageDataset, progress) -> tuple[np.ndarray, np.ndarray, list]:
    """Pooled features of every photo: the cached (view-aware) path for a frozen backbone, the
    run's own trunk (uncached) for a fine-tuned run."""
    from ..features import extract, extract_view

    if run.pretrained_trunk:
        f = extract_view(run.backbone, ds.paths, progress=progress, description="features (review)")
    else:
        f = extract(run.backbone, ds.paths, model=run.model, cache=False, progress=progress,
                    description="features (review)")
    return f.features, f.ok, f.skipped


def _write(out: Path, result: ReviewResult, top: int) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    cols = ["rank", "path", "given", "suggested", "score", "p_given", "p_suggested", "confident"]
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    w.writerows(result["suspects"])
    text = buf.getvalue()
    atomic_write(out / "review.csv", lambda p: p.write_text(text, encoding="utf-8"))
    result.plot(top, out=out / "contact_sheet.png")
    files = [str(out / "review.json"), str(out / "review.csv"), str(out / "contact_sheet.png")]
    write_json(out / "review.json", {**result, "files": files})
    return files


def _sheet_config(dc):
    """Thumbnails at 224 px whatever the model's input size (a 24-photo sheet stays small)."""
    from ..data.geometry import DataConfig

    return DataConfig.from_crop_pct(224, dc.input_size / dc.resize_size, interpolation="bilinear")
