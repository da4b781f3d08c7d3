"""Top-k predictions for images with any classifier (trained run, bare backbone, ONNX export).

One row format for the CLI, the JSON output, the CSV and the web app::

    {"path": "a.jpg", "status": "ok" | "unsure" | "error", "label": "Bengal" | "unsure" | None,
     "score": 0.93, "top": [{"label": "Bengal", "score": 0.93}, ...]}

``unsure``: the top-1 probability is below the model's threshold (chosen on its validation data
when it was trained, see :func:`transferlab.evaluation.metrics.precision_threshold`), so the
answer is "not sure" rather than a confident wrong breed. This module imports no torch: an
exported model predicts with it on a machine without PyTorch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..display import Table, card, one_line

DEFAULT_TOP_K = 5  # classify and predict alike
UNSURE = "unsure"


def prediction_row(path: str | None, probs: np.ndarray, classes: list[str], top_k: int = DEFAULT_TOP_K,
                   threshold: float | None = None) -> dict:
    """One image's row: top-k as ``{"label", "score"}`` objects, and the answer with its status."""
    idx = np.argsort(-probs)[: min(top_k, len(classes))]
    top = [{"label": classes[i], "score": float(probs[i])} for i in idx]
    unsure = threshold is not None and top[0]["score"] < threshold
    return {"path": path, "status": UNSURE if unsure else "ok", "label": UNSURE if unsure else top[0]["label"],
            "score": top[0]["score"], "top": top}


def error_row(path: str | None, why: str) -> dict:
    return {"path": path, "status": "error", "label": None, "score": None, "top": [], "error": why}


def rows_for_paths(paths: list[str], probs: np.ndarray, skipped: dict[str, str], classes: list[str],
                   top_k: int, threshold: float | None) -> list[dict]:
    """Rows in input order from the probabilities of the readable files and the skip reasons."""
    rows, it = [], iter(probs)
    for p in paths:
        rows.append(error_row(p, skipped[p]) if p in skipped else prediction_row(p, next(it), classes, top_k,
                                                                                    threshold))
    return rows


CSV_HEADER = ("path", "label", "score", "status", "top")


def csv_rows(rows: list[dict]) -> list[list[str]]:
    """Rows for ``predict --csv``: one line per image; ``top`` is ``label:score`` pairs joined by
    ``|`` so the file stays one-row-per-image and opens cleanly in a spreadsheet."""
    out = [list(CSV_HEADER)]
    for r in rows:
        top = "|".join(f"{t['label']}:{t['score']:.4f}" for t in r["top"])
        score = "" if r["score"] is None else f"{r['score']:.4f}"
        out.append([r["path"] or "", r["label"] or "", score, r["status"] if "error" not in r else
                    f"error: {r['error']}", top])
    return out



def write_csv(rows: list[dict], path: str | Path) -> Path:
    """``predict --csv``: written atomically with normal permissions (a spreadsheet may read it)."""
    import csv
    import io

    from .._io import atomic_write

    buf = io.StringIO()
    csv.writer(buf).writerows(csv_rows(rows))
    return atomic_write(path, lambda p: p.write_text(buf.getvalue(), encoding="utf-8"))


class Predictions(Table):
    """The rows of one ``predict`` call: still a list of row dicts (the CLI, CSV and web app read
    them as such), with a one-line repr, a card of thumbnails in a notebook and a figure."""

    def __init__(self, rows=(), model: str | None = None):
        super().__init__(rows, name="Predictions")
        self.model = model

    def _like(self, rows) -> Predictions:
        return Predictions(rows, self.model)

    @property
    def labels(self) -> list[str | None]:
        return [r["label"] for r in self]

    def unsure(self) -> Predictions:
        """The rows whose answer is "unsure" (top-1 below the model's threshold)."""
        return Predictions([r for r in self if r["status"] == UNSURE], self.model)

    def errors(self) -> Predictions:
        return Predictions([r for r in self if r["status"] == "error"], self.model)

    def to_csv(self, path: str | Path) -> Path:
        """The CLI's ``--csv`` file (path, label, score, status, top-k), written atomically."""
        return write_csv(list(self), path)

    def _counts(self) -> dict:
        return {s: sum(r["status"] == s for r in self) for s in ("ok", UNSURE, "error")}

    def __repr__(self) -> str:
        c = self._counts()
        return one_line("Predictions", {"model": self.model, "n": len(self), "ok": c["ok"],
                                        "unsure": c[UNSURE] or None, "errors": c["error"] or None})

    def _titles(self) -> list[str]:
        return [f"{r['label']} ({r['score']:.2f})" if r["score"] is not None else f"error: {r.get('error', '')}"[:40]
                for r in self]

    def _repr_html_(self) -> str:
        shown = [r for r in self if r["path"] and r["status"] != "error"][:12]
        return card(repr(self), {}, [r["path"] for r in shown], self._titles()[:len(shown)], size=120)

    def plot(self, k: int = 12, out: str | Path | None = None):
        """The first ``k`` photos (given as files) titled with their answer and score."""
        from ..report.figures import show

        rows = [(r, t) for r, t in zip(self, self._titles(), strict=True) if r["path"] and r["status"] != "error"][:k]
        return show([r["path"] for r, _ in rows], [t for _, t in rows], out=out)
