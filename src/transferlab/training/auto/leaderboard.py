"""The leaderboard: one typed :class:`Candidate` per scored (or skipped) view and head, and the
``leaderboard.csv`` they are written to and read back from.

A candidate's view name is parsed once, when the candidate is made (from the search's
:class:`ViewSpec`, or from a CSV row of an earlier search), so the search, the ranking and the
final fit read typed fields and never re-parse strings. The CSV keeps the columns it has always
had: runs' ``leaderboard.csv`` files, the config's leaderboard and ``--resume``'s progress files
written by earlier versions still read.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..._io import atomic_write
from ...errors import TransferlabError
from ...features import file_keys
from ...models.views import MemberSpec, ViewSpec, parse_view
from ...probe import CVResult
from ..job import Job
from ..options import AutoOptions, HeadOptions
from .bank import member_key

COLUMNS = ["rank", "candidate", "model", "backbone", "members", "norm", "pool", "feature_aug", "C", "cv_accuracy",
           "cv_sd", "cv_nll", "folds", "fit_s", "cv_s", "predict_img_s", "status"]
FINISHED = ("ok", "reused")  # statuses of a scored row; the others say why it was skipped
SEARCH_VERSION = 2  # part of the resume key: bump when a candidate's scoring changes
_NAN = float("nan")


def candidate_id(view: ViewSpec, model: str) -> str:
    """A candidate's name, its key on the board and in the progress file: its view's canonical
    name and its head."""
    return f"{view.name()} {model}"


@dataclass(frozen=True)
class Candidate:
    """One leaderboard row: a view (members, normalisation, pooling, flip), the head fitted on it
    (``model``: ``linear``, ``head`` or ``avg``), its C, and how it scored.

    ``c[column]`` reads the row as it is written (``c["backbone"]``, ``c["C"]``), for the code and
    scripts that know the leaderboard by its columns."""

    view: ViewSpec
    model: str
    status: str
    c: float | None = None
    cv_accuracy: float = _NAN
    cv_sd: float = _NAN
    cv_nll: float = _NAN  # out-of-fold log-loss after temperature scaling
    folds: int = 0
    fit_s: float = _NAN
    cv_s: float = _NAN
    predict_img_s: float = _NAN

    @property
    def members(self) -> tuple[MemberSpec, ...]:
        return self.view.members

    @property
    def norm(self) -> str:
        return self.view.norm

    @property
    def pool(self) -> str:
        return self.view.pool

    @property
    def flip(self) -> bool:
        return self.view.flip

    @property
    def single(self) -> bool:
        return len(self.view.members) == 1

    @property
    def finished(self) -> bool:
        """Scored (now or by the resumed search), as opposed to skipped."""
        return self.status in FINISHED

    @property
    def cid(self) -> str:
        return candidate_id(self.view, self.model)

    @classmethod
    def scored(cls, view: ViewSpec, model: str, r: CVResult | None, status: str, nll: float,
               predict_img_s: float) -> Candidate:
        """A row from a cross-validation result (``None``: skipped), rounded as the CSV shows it."""
        if r is None:
            return cls(view, model, status, predict_img_s=round(predict_img_s, 1))
        return cls(view, model, status, r.c, r.mean, r.sd, round(nll, 5),
                   len(next(iter(r.scores.values()))), round(r.fit_s, 3), round(r.seconds, 2),
                   round(predict_img_s, 1))

    @classmethod
    def from_row(cls, row: Mapping, status: str | None = None) -> Candidate:
        """A row as written (CSV strings, or the numbers of the config's leaderboard); raises
        ``KeyError``/``ValueError``/:class:`TransferlabError` on a row that is not one. Rows of
        an older search have no ``cv_nll`` (nan) and no ``pool`` (the view name carries it)."""
        return cls(parse_view(row["backbone"]), row["model"], status or row["status"], _c(row["C"]),
                   float(row["cv_accuracy"]), float(row["cv_sd"]), _num(row.get("cv_nll")), int(row["folds"]),
                   float(row["fit_s"]), float(row["cv_s"]), float(row["predict_img_s"]))

    def row(self, rank: int | str = "") -> dict:
        """The row as the CSV and the run's config hold it, column by column."""
        v = self.view
        return {"rank": rank, "candidate": self.cid, "model": self.model, "backbone": v.name(),
                "members": "+".join(member_key(m) for m in v.members), "norm": v.norm, "pool": v.pool,
                "feature_aug": "flip" if v.flip else "none", "C": "" if self.c is None else self.c,
                "cv_accuracy": self.cv_accuracy, "cv_sd": self.cv_sd, "cv_nll": self.cv_nll, "folds": self.folds,
                "fit_s": self.fit_s, "cv_s": self.cv_s, "predict_img_s": self.predict_img_s, "status": self.status}

    def __getitem__(self, column: str):
        return self.row()[column]


def _num(v) -> float:
    return _NAN if v in ("", None) else float(v)


def _c(v) -> float | None:
    return None if v in ("", None) else float(v)


def rank_key(c: Candidate) -> tuple:
    """Better first: CV accuracy; on a tie (a few hundred photos tie often) the lower out-of-fold
    log-loss after temperature scaling (a smoother measure of the same predictions), then the
    faster candidate."""
    nll = c.cv_nll if math.isfinite(c.cv_nll) else math.inf
    return c.cv_accuracy, -nll, c.predict_img_s


def calibrated_nll(logits: np.ndarray, y: np.ndarray) -> float:
    """Log-loss of out-of-fold logits at their best temperature: comparable across candidates
    whatever their regularisation does to the logits' scale."""
    from ...evaluation.calibration import fit_temperature, nll

    return nll(logits, y, fit_temperature(logits, y))


class Board:
    """Rows in the order they were scored; finished rows are saved to ``progress`` after each
    candidate (a killed search loses at most the candidate it was on)."""

    def __init__(self, progress: Path, reuse: dict[str, Candidate]):
        self.progress, self.reuse = progress, reuse
        self.rows: list[Candidate] = []
        self.oof: dict[str, np.ndarray] = {}

    def get(self, cid: str) -> Candidate | None:
        return next((c for c in self.rows if c.cid == cid), None)

    def add(self, c: Candidate, oof: np.ndarray | None = None) -> Candidate:
        self.rows.append(c)
        if oof is not None:
            self.oof[c.cid] = oof
        done = {**self.reuse, **{r.cid: r for r in self.rows if r.finished}}
        self.progress.parent.mkdir(parents=True, exist_ok=True)
        text = to_csv([r.row() for r in done.values()])  # rows of a resumed search that this one did not reach stay
        atomic_write(self.progress, lambda p: p.write_text(text), durable=False)
        return c

    def scored(self, model: str | None = None, single: bool | None = None) -> list[Candidate]:
        """Finished rows: this session's, and a resumed search's that this one has not reached."""
        seen = {c.cid for c in self.rows}
        rows = [*self.rows, *(c for cid, c in self.reuse.items() if cid not in seen)]
        rows = [c for c in rows if c.finished and model in (None, c.model)]
        return [c for c in rows if single is None or c.single == single]

    def best(self, **kw) -> Candidate | None:
        rows = self.scored(**kw)
        return max(rows, key=rank_key) if rows else None

    def skipped(self) -> list[Candidate]:
        """This session's rows that did not fit the budget, in the order they were met."""
        return [c for c in self.rows if not c.finished]

    def ranked(self) -> list[dict]:
        """Scored rows best first (rank 1..n), then the skipped ones, as the CSV holds them."""
        ok = sorted(self.scored(), key=rank_key, reverse=True)
        return [c.row(i + 1) for i, c in enumerate(ok)] + [c.row() for c in self.skipped()]


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def read_rows(path: Path) -> dict[str, Candidate]:
    """Finished rows of an earlier search, as reused candidates by name (rows that do not parse
    are left out: they are scored again)."""
    try:
        text = path.read_text()
    except OSError:
        return {}
    out = {}
    for r in csv.DictReader(io.StringIO(text)):
        try:
            c = Candidate.from_row(r, status="reused")
        except (KeyError, ValueError, TypeError, TransferlabError):
            continue
        out[r["candidate"]] = c
    return out


def search_key(job: Job, o: AutoOptions) -> str:
    """What makes two searches' rows interchangeable: the training photos (content identity) and
    labels, folds, seed, C grid and head settings."""
    h = hashlib.sha256()
    for k, y in zip(file_keys(job.train.paths), job.train.labels.tolist(), strict=True):
        h.update(f"{k}:{y}\n".encode())
    h.update(json.dumps([SEARCH_VERSION, o.folds, job.seed, list(o.c_grid), HeadOptions().__dict__],
                        sort_keys=True).encode())
    return h.hexdigest()[:20]
