"""An evaluation as an object to ask questions of (fastai's ``ClassificationInterpretation``):
accuracy, a per-class table, the most confused pairs, the top losses, and the figures.

:class:`Evaluation` is also a read-only mapping over the metrics dict that ``metrics.json`` and
the CLI's ``--json`` hold, so code that read ``evaluate(...)["accuracy"]`` keeps working.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..display import Table, card, one_line, percent


@dataclass(eq=False, repr=False)
class Evaluation(Mapping):
    """What :func:`~transferlab.evaluation.evaluate.evaluate` measured: ``metrics`` (the JSON
    dict), and the per-image probabilities, labels and paths it came from."""

    metrics: dict
    probs: np.ndarray  # [n, k] of the readable images
    labels: np.ndarray  # [n] indices into ``classes``
    paths: list[str]
    classes: list[str]
    data_config: object = None  # the model's preprocessing (top-loss thumbnails)
    figures: dict = field(default_factory=dict)  # name -> saved path, when written

    # ------------------------------------------------------------------ the mapping
    def __getitem__(self, key: str):
        return self.metrics[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.metrics)

    def __len__(self) -> int:
        return len(self.metrics)

    # ------------------------------------------------------------------ questions
    @property
    def accuracy(self) -> float | None:
        return self.metrics.get("accuracy")

    @property
    def n(self) -> int:
        return int(self.metrics.get("n", 0))

    @property
    def predictions(self) -> np.ndarray:
        return self.probs.argmax(1) if len(self.probs) else np.zeros(0, int)

    @property
    def per_class(self) -> Table:
        """Precision, recall, F1 and support of every class, worst F1 first."""
        rows = [{"class": c, **v} for c, v in (self.metrics.get("per_class") or {}).items()]
        return Table(sorted(rows, key=lambda r: (r["f1"], r["class"])), name="per class")

    def most_confused(self, k: int = 5, min_count: int = 1) -> Table:
        """The ``k`` (true, predicted) pairs of different classes seen most often."""
        cm = np.asarray(self.metrics.get("confusion") or np.zeros((0, 0)))
        pairs = [(int(cm[i, j]), i, j) for i in range(len(cm)) for j in range(len(cm)) if i != j and cm[i, j]]
        pairs.sort(key=lambda t: (-t[0], t[1], t[2]))
        return Table([{"true": self.classes[i], "predicted": self.classes[j], "count": n}
                      for n, i, j in pairs[:k] if n >= min_count], name="most confused")

    def top_losses(self, k: int = 9) -> Table:
        """The ``k`` images the model was most confidently wrong about (highest cross-entropy)."""
        if not len(self.labels):
            return Table(name="top losses")
        p_true = self.probs[np.arange(len(self.labels)), self.labels]
        loss = -np.log(np.clip(p_true, 1e-12, 1))
        pred = self.predictions
        order = [i for i in np.argsort(-loss, kind="stable") if pred[i] != self.labels[i]][:k]
        return Table([{"path": self.paths[i], "true": self.classes[self.labels[i]], "pred": self.classes[pred[i]],
                       "prob": float(self.probs[i, pred[i]]), "loss": float(loss[i])} for i in order],
                     name="top losses")

    # ------------------------------------------------------------------ figures
    def plot_confusion(self, out: str | Path | None = None):
        from ..report.figures import plot_confusion, saved

        fig = plot_confusion(self.metrics["confusion"], self.classes, title=f"{self.split} confusion")
        return saved(fig, out)

    def plot_top_losses(self, k: int = 9, out: str | Path | None = None):
        from ..report.figures import plot_top_losses, saved

        return saved(plot_top_losses(list(self.top_losses(k)), self.data_config, max_items=k), out)

    def plot_reliability(self, out: str | Path | None = None):
        from ..report.figures import plot_reliability, saved

        t = self.metrics.get("temperature")
        curve = {"run" if t is None else f"run (T = {t:.2f})": self.metrics["reliability"]}
        return saved(plot_reliability(curve, title=f"Reliability on {self.split}"), out)

    # ------------------------------------------------------------------ display
    @property
    def split(self) -> str:
        return self.metrics.get("split") or "all"

    def __repr__(self) -> str:
        m = self.metrics
        return one_line("Evaluation", {"model": m.get("run"), "split": self.split, "n": self.n,
                                       "accuracy": self.accuracy, "macro_f1": m.get("macro_f1"), "ece": m.get("ece"),
                                       "skipped": m.get("skipped") or None})

    def _repr_html_(self) -> str:
        m = self.metrics
        worst = ", ".join(f"{r['true']} → {r['predicted']} ({r['count']})" for r in self.most_confused(3))
        fields = {"model": m.get("run"), "data": m.get("data"), "split": self.split, "images": self.n,
                  "accuracy": percent(self.accuracy), "top-5": percent(m.get("top5_accuracy")),
                  "macro F1": percent(m.get("macro_f1")), "ECE": percent(m.get("ece")),
                  "most confused": worst or None, "skipped": m.get("skipped") or None}
        losses = list(self.top_losses(4))
        return card("Evaluation", fields, [r["path"] for r in losses],
                    [f"{r['true']} → {r['pred']} ({r['prob']:.2f})" for r in losses], size=120)

