"""The budgeted search: which candidates are tried, in which order, and how each is scored.

Stages run cheapest first (single backbones, GeM, flips, greedy ensembles, MLP heads; see
:mod:`transferlab.training.auto`), so that a short budget still ends with a sound choice. Each
candidate is scored by cross-validation on the training photos, with the same folds for every
candidate over the same photos, so that their scores compare.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ...features import cache_root
from ...models.views import NORMS, MemberSpec, ViewSpec
from ...probe import CVResult, cv_linear, fold_splits
from ...progress import resolve
from ..cv import cv_head
from ..job import Job
from ..options import AutoOptions, HeadOptions, parse_budget
from .bank import Bank, needs, sides
from .clock import Clock
from .leaderboard import Board, Candidate, calibrated_nll, candidate_id, rank_key, read_rows, search_key

ADD_TRIES = 4  # greedy ensembles: additions tried per step
FLIP_TRIES = 3  # single backbones tried with flip augmentation
GEM_TRIES = 3  # single backbones tried with GeM pooling
LINEAR_UNIT = 2e-6  # first guess of CV seconds per (photo x feature x C): measured after the first candidate
HEAD_UNIT = 2e-5


class Search:
    """One budgeted search over a job's training photos; :meth:`run` returns the best row."""

    def __init__(self, job: Job, o: AutoOptions):
        self.job, self.o = job, o
        self.clock = Clock(parse_budget(o.budget))
        self.bank = Bank(job)
        self.members = [self._member(m) for m in o.members]
        self.key = search_key(job, o)
        progress_file = cache_root() / "auto" / f"{self.key}.csv"
        self.board = Board(progress_file, read_rows(progress_file) if o.resume else {})
        self.units = {"linear": LINEAR_UNIT, "head": HEAD_UNIT}
        self._splits: dict[bytes, list] = {}

    def _member(self, text: str) -> MemberSpec:
        """``NAME@SIZE`` of the options, or ``NAME`` at the backbone's own input size."""
        name, _, size = text.partition("@")
        return MemberSpec(name, int(size) if size else self.bank.backbone(MemberSpec(name)).data_config.input_size)

    def run(self) -> Candidate | None:
        for m in self.members:  # 1. every backbone alone, raw and l2-normalised features
            for norm in NORMS:
                self.evaluate(ViewSpec((m,), norm), "linear")
        best = self.top_singles(1)
        if self.o.heads and best:  # an MLP on the best single backbone, before the budget goes
            self.evaluate(best[0].view, "head")
        # GeM pooling, then flips, for the best few of the rows before that stage (so that a resumed
        # search, which knows the later rows already, picks the same few)
        for c in self.top_singles(GEM_TRIES, lambda c: not c.flip and c.pool == "avg"):
            self.evaluate(c.view.with_options(pool="gem"), "linear")
        if self.o.flips:  # 2. flip augmentation for the best few
            for c in self.top_singles(FLIP_TRIES, lambda c: not c.flip):
                self.evaluate(c.view.with_options(flip=True), "linear")
        if self.o.max_members > 1:  # 3. ensembles, greedily: logit averages (free), concatenations
            for opts in dict.fromkeys((c.norm, c.flip, c.pool) for c in self.top_singles(3)):
                self.greedy("avg", *opts)
            best = self.top_singles(1)
            if best:
                self.greedy("linear", best[0].norm, best[0].flip, best[0].pool)
        if self.o.heads:  # 4. an MLP on the best feature set, if that is not a single backbone's
            best = self.board.best(model="linear")
            if best:
                self.evaluate(best.view, "head")
        return self.board.best()

    def top_singles(self, n: int | None = None, where: Callable[[Candidate], bool] | None = None) -> list[Candidate]:
        """Single-backbone linear rows (those ``where`` accepts), best first (the ``n`` best)."""
        rows = [c for c in self.board.scored(model="linear", single=True) if where is None or where(c)]
        return sorted(rows, key=rank_key, reverse=True)[:n]

    def ranked_members(self) -> list[MemberSpec]:
        """Backbones, best single result first."""
        return list(dict.fromkeys(c.members[0] for c in self.top_singles()))

    def greedy(self, model: str, norm: str, flip: bool, pool: str) -> None:
        """Forward selection: add to the best single backbone the member that helps most, while
        the CV accuracy improves. Concatenations take other architectures only (a second lite2
        size adds many features for little); logit averages may mix sizes of one network."""
        ranked = self.ranked_members()
        if len(ranked) < 2:
            return
        current, best = [ranked[0]], self.evaluate(ViewSpec((ranked[0],), norm, flip, pool), "linear")
        for _ in range(2, self.o.max_members + 1):
            archs = {c.name for c in current}
            tries = [m for m in ranked if m not in current and (model == "avg" or m.name not in archs)]
            rows = [(self.evaluate(ViewSpec((*current, m), norm, flip, pool), model), m) for m in tries[:ADD_TRIES]]
            rows = [t for t in rows if t[0].finished]
            if not rows:
                return
            row, m = max(rows, key=lambda t: rank_key(t[0]))
            if best.finished and rank_key(row) <= rank_key(best):
                return
            current, best = [*current, m], row

    def evaluate(self, spec: ViewSpec, model: str) -> Candidate:
        """Score one candidate (or reuse / skip it); always returns its row."""
        cid = candidate_id(spec, model)
        row = self.board.get(cid)
        if row is not None:
            return row
        if cid in self.board.reuse:
            return self.board.add(self.board.reuse[cid])
        if model == "avg":
            return self._average(spec)
        n, dim = len(self.job.train), sum(self.bank.backbone(m).feature_dim for m in spec.members)
        est = self.units[model] * n * dim * len(sides(spec)) * (len(self.o.c_grid) if model == "linear" else 1)
        if not self.clock.allows(self.bank.cost(needs(spec)) + est):
            return self.board.add(self._candidate(spec, model, None, "skipped: budget"))
        self.bank.ensure_view(spec)
        return self._score(spec, model)

    def _score(self, spec: ViewSpec, model: str) -> Candidate:
        x, mirror, ok = self.bank.matrix(spec)
        y = self.job.train.labels[ok]
        splits = self.splits(ok, y)
        with resolve(self.job.progress)(f"cv {spec.name()} {model}", 1) as advance:
            if model == "linear":
                r = cv_linear(x, y, self.o.c_grid, splits, self.job.seed, mirror)
            else:
                r = cv_head(x, y, splits, HeadOptions(), self.job.seed, mirror)
            advance(1, info=f"{r.mean:.2%}")
        unit = r.seconds / max(1, len(y) * x.shape[1] * len(sides(spec))
                               * (len(self.o.c_grid) if model == "linear" else 1))
        self.units[model] = unit
        return self.board.add(self._candidate(spec, model, r, "ok", y), r.oof_logits)

    def _average(self, spec: ViewSpec) -> Candidate:
        """Logit average of the members' own linear probes, scored from their out-of-fold logits
        on the same folds: no new fit. As a run it is one linear layer (block-diagonal weights)."""
        singles = self.member_rows(spec)
        if not all(c.finished for c in singles):
            return self.board.add(self._candidate(spec, "avg", None, "skipped: budget"))
        z, ok = self.average_oof(spec, singles)
        y = self.job.train.labels[ok]
        accs = [float((z[va].argmax(1) == y[va]).mean()) for _, va in self.splits(ok, y)]
        r = CVResult(float(np.mean(accs)), float(np.std(accs)), None, {"avg": accs}, z,
                     sum(c.fit_s for c in singles), 0.0)
        return self.board.add(self._candidate(spec, "avg", r, "ok", y), z)

    def average_oof(self, spec: ViewSpec, singles: list[Candidate]) -> tuple[np.ndarray, np.ndarray]:
        """Mean out-of-fold logits of the members' probes over the photos all members read."""
        parts = [self.oof(c) for c in singles]  # loads the members' features too
        _, _, ok = self.bank.matrix(spec)
        return np.mean([z[ok[ok_m]] for z, ok_m in parts], axis=0), ok

    def member_rows(self, spec: ViewSpec) -> list[Candidate]:
        """Each member's own linear row, with the view's options (scored now if need be)."""
        return [self.evaluate(ViewSpec((m,), spec.norm, spec.flip, spec.pool), "linear") for m in spec.members]

    def oof(self, c: Candidate) -> tuple[np.ndarray, np.ndarray]:
        """(out-of-fold logits, ok mask) of a single linear row (recomputed at its C if reused)."""
        self.bank.ensure_view(c.view)
        x, mirror, ok = self.bank.matrix(c.view)
        if c.cid not in self.board.oof:
            y = self.job.train.labels[ok]
            self.board.oof[c.cid] = cv_linear(x, y, (c.c,), self.splits(ok, y), self.job.seed, mirror).oof_logits
        return self.board.oof[c.cid], ok

    def splits(self, ok: np.ndarray, y: np.ndarray) -> list:
        """The folds over the photos ``ok`` selects: drawn once, shared by every candidate on them."""
        key = ok.tobytes()
        if key not in self._splits:
            self._splits[key] = fold_splits(y, self.o.folds, self.job.seed)
        return self._splits[key]

    def predict_rate(self, spec: ViewSpec) -> float:
        """img/s of the candidate's features: the members in sequence (twice with flip)."""
        return 1.0 / sum(len(sides(spec)) / self.bank.rate(m) for m in spec.members)

    def _candidate(self, spec: ViewSpec, model: str, r: CVResult | None, status: str,
                   y: np.ndarray | None = None) -> Candidate:
        nll = calibrated_nll(r.oof_logits, y) if r is not None and y is not None else float("nan")
        return Candidate.scored(spec, model, r, status, nll, self.predict_rate(spec))
