"""Mode ``auto``: search backbones, input sizes, normalisation, flip augmentation, linear vs MLP
head, C and ensembles on cached features, within a time budget, and keep the best.

Every candidate is scored by stratified k-fold cross-validation on the *training* photos only
(:mod:`transferlab.training.cv`; the validation or test split is never looked at), with the same
folds for all. The search runs in stages, cheapest first, so that a short budget still ends with
a sound choice:

1. single backbones (``AutoOptions.members``, each at its own size; lite2 also at 320 and
   384 px), each with raw (``std``) and per-member ``l2`` features: a linear probe, C from a grid;
   then GeM pooling (``gem``) instead of the average for the best few;
2. flip feature augmentation (mirrored rows in training, averaged features at prediction) for
   the best few;
3. ensembles, greedily (add to the best backbone the member that helps most, up to
   ``max_members``, while CV improves), of two kinds: ``avg``, the mean of the members' own
   probes' logits (scored from their out-of-fold logits: no new fit; one block-diagonal linear
   layer as a run), and ``linear``, one probe on the concatenated features;
4. an MLP head (``--mode head``'s) on the best single backbone (right after stage 1, so that a
   budget spent on extraction still leaves it) and on the best feature set.

Candidates rank by CV accuracy, ties (frequent with a few hundred photos) by the out-of-fold
log-loss after temperature scaling, then by speed.

Time is checked before each candidate, and the cost of a feature extraction is estimated before it
starts (images not yet cached / this machine's measured rate); what does not fit is skipped and
listed. Features come through the per-member cache, so a second search (or ``--resume``) extracts
nothing; finished leaderboard rows are kept in the cache too (keyed by the data, folds, seed and
grid), and ``resume`` reuses them. Same data + seed + finished rows = same choice.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .._io import atomic_write, write_json
from ..errors import DataError
from ..features import Features, cache_root, extract, file_keys
from ..models.classifier import Backbone
from ..models.ensemble import NORMS, MemberSpec, ViewSpec, combine_arrays, gem_pooled, mirrored, parse_view
from ..models.registry import DEFAULT_BACKBONE, create_backbone
from ..progress import resolve
from ..runtime.onnx import lean_sessions
from .cv import CVResult, cv_head, cv_linear, fit_mlp, fold_splits
from .job import Fitted, Job
from .linear import fit_linear_probe
from .options import AutoOptions, HeadOptions, OptionError, parse_budget

COLUMNS = ["rank", "candidate", "model", "backbone", "members", "norm", "pool", "feature_aug", "C", "cv_accuracy",
           "cv_sd", "cv_nll", "folds", "fit_s", "cv_s", "predict_img_s", "status"]
# img/s end to end (decode + network) on the project's 2-core CPU at the native size; scaled by
# pixels for other sizes. Only a first guess: every extraction records this machine's own rate.
PRIOR_RATES = {"efficientnet_lite0": (224, 70.0), "mobilenet_v2": (224, 80.0), "efficientnet_lite1": (240, 45.0),
               "efficientnet_lite2": (260, 30.0)}
ADD_TRIES = 4  # greedy ensembles: additions tried per step
FLIP_TRIES = 3  # single backbones tried with flip augmentation
GEM_TRIES = 3  # single backbones tried with GeM pooling
RESERVE, RESERVE_S = 0.05, 15.0  # kept back for the final fit and writing the run: share, at least seconds
LINEAR_UNIT = 2e-6  # first guess of CV seconds per (photo x feature x C): measured after the first candidate
HEAD_UNIT = 2e-5
SEARCH_VERSION = 2  # part of the resume key: bump when a candidate's scoring changes


@dataclass
class Clock:
    budget: float
    start: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def allows(self, seconds: float) -> bool:
        """Whether work of ``seconds`` still fits, keeping back the reserve for the final fit,
        the validation scores and writing the run."""
        return self.elapsed() + seconds <= self.budget - max(RESERVE_S, RESERVE * self.budget)


# ----------------------------------------------------------------------------------------------
# Features of the members, extracted once through the cache
# ----------------------------------------------------------------------------------------------
def _rates_file() -> Path:
    return cache_root() / "auto" / "rates.json"


def _cached_share(bb: Backbone, paths: list[str]) -> float:
    """Share of ``paths`` already in ``bb``'s feature cache (0 when unsure: estimates err long)."""
    try:
        from ..features import FeatureCache
        from ..runtime.device import default_device, precision_tag
        from ..runtime.engine import engine_default

        dev = default_device()
        d = cache_root() / "features" / f"{bb.key}-{precision_tag(dev, engine_default(dev, bb, measure=False))}"
        if not d.is_dir() or not paths:
            return 0.0
        store = FeatureCache(d)
        return float(np.mean([(k in store.index or k in store.bad) for k in file_keys(paths)]))
    except Exception:  # an estimate only
        return 0.0


Need = tuple[str, bool, str]  # (member NAME@SIZE, mirrored, pooling)


class Bank:
    """Raw member features of the training and validation photos, keyed by (member, mirrored,
    pooling)."""

    def __init__(self, job: Job):
        self.job = job
        self.models: dict[str, Backbone] = {}
        self.data: dict[tuple[str, bool], tuple[Features, Features | None]] = {}
        try:
            self.rates: dict[str, float] = json.loads(_rates_file().read_text())
        except (OSError, ValueError):
            self.rates = {}

    def backbone(self, member: str, mirror: bool = False, pool: str = "avg") -> Backbone:
        if member not in self.models:
            self.models[member] = create_backbone(member)
        key = member if pool == "avg" else f"{member}|{pool}"
        if key not in self.models:  # kept: the GeM network is built once, sharing the member's weights
            self.models[key] = gem_pooled(self.models[member])
        bb = self.models[key]
        return mirrored(bb) if mirror else bb

    def rate(self, member: str) -> float:
        if member in self.rates:
            return self.rates[member]
        name, size = _member(member)
        native, r = PRIOR_RATES.get(name, (size, 20.0))
        return r * (native / size) ** 2

    def cost(self, needs: list[Need]) -> float:
        """Estimated seconds to extract what ``needs`` lacks (uncached photos / measured rate)."""
        paths = self.job.train.paths + self.job.val.paths
        todo = [n for n in needs if n not in self.data]
        return sum(len(paths) * (1 - _cached_share(self.backbone(*n), paths)) / self.rate(n[0]) for n in todo)

    def ensure(self, need: Need) -> None:
        if need in self.data:
            return
        member = need[0]
        bb, t0 = self.backbone(*need), time.perf_counter()
        kw = {"progress": self.job.progress}
        tr = extract(bb, self.job.train.paths, description=f"features (train) {bb.name}", **kw)
        va = None
        if len(self.job.val):
            va = extract(bb, self.job.val.paths, description=f"features (val) {bb.name}", **kw)
        self.data[need] = (tr, va)
        done = tr.extracted + (va.extracted if va else 0)
        if done >= 64:  # enough to time
            self.rates[member] = round(done / (time.perf_counter() - t0), 2)
            _rates_file().parent.mkdir(parents=True, exist_ok=True)
            write_json(_rates_file(), self.rates, durable=False)

    def matrix(self, spec: ViewSpec, split: int = 0) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """(features, mirrored features or None, ok mask over the split's photos) of a view
        (``split`` 0 = train, 1 = val), rows restricted to photos every part could read."""
        parts = {v: [self.data[(n, v, spec.pool)][split] for n in _member_keys(spec)] for v in _sides(spec)}
        ok = np.logical_and.reduce([p.ok for ps in parts.values() for p in ps])
        x = {v: combine_arrays([p.features[ok[p.ok]] for p in ps], spec.norm) for v, ps in parts.items()}
        return x[False], x.get(True), ok


def _member(member: str) -> tuple[str, int]:
    name, _, size = member.partition("@")
    return name, int(size)


def _member_keys(spec: ViewSpec) -> list[str]:
    return [f"{m.name}@{m.size}" for m in spec.members]


def _sides(spec: ViewSpec) -> tuple[bool, ...]:
    """Which photos a view reads: the plain ones, and their mirrors when it says ``flip``."""
    return (False, True) if spec.flip else (False,)


def _needs(spec: ViewSpec) -> list[Need]:
    """The member features a view is made of."""
    return [(m, v, spec.pool) for m in _member_keys(spec) for v in _sides(spec)]


# ----------------------------------------------------------------------------------------------
# The leaderboard
# ----------------------------------------------------------------------------------------------
class Board:
    """Rows in the order they were scored; finished rows are saved to ``progress`` after each
    candidate (a killed search loses at most the candidate it was on)."""

    def __init__(self, progress: Path, reuse: dict[str, dict]):
        self.progress, self.reuse = progress, reuse
        self.rows: list[dict] = []
        self.oof: dict[str, np.ndarray] = {}

    def get(self, cid: str) -> dict | None:
        return next((r for r in self.rows if r["candidate"] == cid), None)

    def add(self, row: dict, oof: np.ndarray | None = None) -> dict:
        self.rows.append(row)
        if oof is not None:
            self.oof[row["candidate"]] = oof
        done = {**self.reuse, **{r["candidate"]: r for r in self.rows if r["status"] in ("ok", "reused")}}
        self.progress.parent.mkdir(parents=True, exist_ok=True)
        text = to_csv(list(done.values()))  # rows of a resumed search that this one did not reach stay
        atomic_write(self.progress, lambda p: p.write_text(text), durable=False)
        return row

    def scored(self, model: str | None = None, single: bool | None = None) -> list[dict]:
        """Finished rows: this session's, and a resumed search's that this one has not reached."""
        seen = {r["candidate"] for r in self.rows}
        rows = [*self.rows, *(r for c, r in self.reuse.items() if c not in seen)]
        rows = [r for r in rows if r["status"] in ("ok", "reused") and model in (None, r["model"])]
        if single is not None:
            rows = [r for r in rows if ("+" not in r["members"]) == single]
        return rows

    def best(self, **kw) -> dict | None:
        rows = self.scored(**kw)
        return max(rows, key=rank_key) if rows else None

    def ranked(self) -> list[dict]:
        """Scored rows best first (rank 1..n), then the skipped ones."""
        ok = sorted(self.scored(), key=rank_key, reverse=True)
        rest = [r for r in self.rows if r["status"] not in ("ok", "reused")]
        return [{**r, "rank": i + 1} for i, r in enumerate(ok)] + [{**r, "rank": ""} for r in rest]


def rank_key(row: dict) -> tuple:
    """Better first: CV accuracy; on a tie (a few hundred photos tie often) the lower out-of-fold
    log-loss after temperature scaling (a smoother measure of the same predictions), then the
    faster candidate."""
    nll = row.get("cv_nll")
    nll = float(nll) if nll not in ("", None) and math.isfinite(float(nll)) else math.inf
    return row["cv_accuracy"], -nll, row["predict_img_s"]


def calibrated_nll(logits: np.ndarray, y: np.ndarray) -> float:
    """Log-loss of out-of-fold logits at their best temperature: comparable across candidates
    whatever their regularisation does to the logits' scale."""
    from ..evaluate.calibration import fit_temperature, nll

    return nll(logits, y, fit_temperature(logits, y))


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def read_rows(path: Path) -> dict[str, dict]:
    """Finished rows of an earlier search (numbers parsed back), by candidate."""
    try:
        text = path.read_text()
    except OSError:
        return {}
    out = {}
    for r in csv.DictReader(io.StringIO(text)):
        try:
            for k in ("cv_accuracy", "cv_sd", "fit_s", "cv_s", "predict_img_s"):
                r[k] = float(r[k])
            r["cv_nll"] = float(r.get("cv_nll") or "nan")
            r["C"] = float(r["C"]) if r["C"] else ""
            r["folds"] = int(r["folds"])
        except (KeyError, ValueError):
            continue
        out[r["candidate"]] = {**r, "status": "reused"}
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


# ----------------------------------------------------------------------------------------------
# The search
# ----------------------------------------------------------------------------------------------
class Search:
    """One budgeted search over a job's training photos; :meth:`run` returns the best row."""

    def __init__(self, job: Job, o: AutoOptions):
        self.job, self.o = job, o
        self.clock = Clock(parse_budget(o.budget))
        self.bank = Bank(job)
        self.members = [m if "@" in m else f"{m}@{self.bank.backbone(m).data_config.input_size}" for m in o.members]
        self.key = search_key(job, o)
        progress_file = cache_root() / "auto" / f"{self.key}.csv"
        self.board = Board(progress_file, read_rows(progress_file) if o.resume else {})
        self.units = {"linear": LINEAR_UNIT, "head": HEAD_UNIT}
        self._splits: dict[bytes, list] = {}

    def run(self) -> dict | None:
        for m in self.members:  # 1. every backbone alone, raw and l2-normalised features
            for norm in NORMS:
                self.evaluate(_view([m], norm), "linear")
        best = self.top_singles(1)
        if self.o.heads and best:  # an MLP on the best single backbone, before the budget goes
            self.evaluate(parse_view(best[0]["backbone"]), "head")
        # GeM pooling, then flips, for the best few of the rows before that stage (so that a resumed
        # search, which knows the later rows already, picks the same few)
        for r in self.top_singles(GEM_TRIES, lambda r: _options(r)[1:] == (False, "avg")):
            self.evaluate(parse_view(r["backbone"]).with_options(pool="gem"), "linear")
        if self.o.flips:  # 2. flip augmentation for the best few
            for r in self.top_singles(FLIP_TRIES, lambda r: not _options(r)[1]):
                self.evaluate(parse_view(r["backbone"]).with_options(flip=True), "linear")
        if self.o.max_members > 1:  # 3. ensembles, greedily: logit averages (free), concatenations
            for opts in dict.fromkeys(_options(r) for r in self.top_singles(3)):
                self.greedy("avg", *opts)
            best = self.top_singles(1)
            if best:
                self.greedy("linear", *_options(best[0]))
        if self.o.heads:  # 4. an MLP on the best feature set, if that is not a single backbone's
            best = self.board.best(model="linear")
            if best:
                self.evaluate(parse_view(best["backbone"]), "head")
        return self.board.best()

    def top_singles(self, n: int | None = None, where=None) -> list[dict]:
        """Single-backbone linear rows (those ``where`` accepts), best first (the ``n`` best)."""
        rows = [r for r in self.board.scored(model="linear", single=True) if where is None or where(r)]
        return sorted(rows, key=rank_key, reverse=True)[:n]

    def ranked_members(self) -> list[str]:
        """Backbones, best single result first."""
        return list(dict.fromkeys(r["members"] for r in self.top_singles()))

    def greedy(self, model: str, norm: str, flip: bool, pool: str) -> None:
        """Forward selection: add to the best single backbone the member that helps most, while
        the CV accuracy improves. Concatenations take other architectures only (a second lite2
        size adds many features for little); logit averages may mix sizes of one network."""
        ranked = self.ranked_members()
        if len(ranked) < 2:
            return
        current, best = [ranked[0]], self.evaluate(_view([ranked[0]], norm, flip, pool), "linear")
        for _ in range(2, self.o.max_members + 1):
            archs = {_member(c)[0] for c in current}
            tries = [m for m in ranked if m not in current and (model == "avg" or _member(m)[0] not in archs)]
            rows = [(self.evaluate(_view([*current, m], norm, flip, pool), model), m) for m in tries[:ADD_TRIES]]
            rows = [t for t in rows if t[0]["status"] in ("ok", "reused")]
            if not rows:
                return
            row, m = max(rows, key=lambda t: rank_key(t[0]))
            if best["status"] in ("ok", "reused") and rank_key(row) <= rank_key(best):
                return
            current, best = [*current, m], row

    def evaluate(self, spec: ViewSpec, model: str) -> dict:
        """Score one candidate (or reuse / skip it); always returns its row."""
        cid = f"{spec.name()} {model}"
        row = self.board.get(cid)
        if row is not None:
            return row
        if cid in self.board.reuse:
            return self.board.add(self.board.reuse[cid])
        if model == "avg":
            return self._average(spec)
        needs = _needs(spec)
        n, dim = len(self.job.train), sum(self.bank.backbone(m).feature_dim for m in _member_keys(spec))
        est = self.units[model] * n * dim * len(_sides(spec)) * (len(self.o.c_grid) if model == "linear" else 1)
        if not self.clock.allows(self.bank.cost(needs) + est):
            return self.board.add(self._row(spec, model, None, "skipped: budget"))
        for need in needs:
            self.bank.ensure(need)
        return self._score(spec, model)

    def _score(self, spec: ViewSpec, model: str) -> dict:
        x, mirror, ok = self.bank.matrix(spec)
        y = self.job.train.labels[ok]
        splits = self.splits(ok, y)
        with resolve(self.job.progress)(f"cv {spec.name()} {model}", 1) as advance:
            if model == "linear":
                r = cv_linear(x, y, self.o.c_grid, splits, self.job.seed, mirror)
            else:
                r = cv_head(x, y, splits, HeadOptions(), self.job.seed, mirror)
            advance(1, info=f"{r.mean:.2%}")
        unit = r.seconds / max(1, len(y) * x.shape[1] * len(_sides(spec))
                               * (len(self.o.c_grid) if model == "linear" else 1))
        self.units[model] = unit
        return self.board.add(self._row(spec, model, r, "ok", y), r.oof_logits)

    def _average(self, spec: ViewSpec) -> dict:
        """Logit average of the members' own linear probes, scored from their out-of-fold logits
        on the same folds: no new fit. As a run it is one linear layer (block-diagonal weights)."""
        singles = self.member_rows(spec)
        if any(r["status"] not in ("ok", "reused") for r in singles):
            return self.board.add(self._row(spec, "avg", None, "skipped: budget"))
        z, ok = self.average_oof(spec, singles)
        y = self.job.train.labels[ok]
        accs = [float((z[va].argmax(1) == y[va]).mean()) for _, va in self.splits(ok, y)]
        r = CVResult(float(np.mean(accs)), float(np.std(accs)), None, {"avg": accs}, z,
                     sum(float(s["fit_s"]) for s in singles), 0.0)
        return self.board.add(self._row(spec, "avg", r, "ok", y), z)

    def average_oof(self, spec: ViewSpec, singles: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        """Mean out-of-fold logits of the members' probes over the photos all members read."""
        parts = [self.oof(r) for r in singles]  # loads the members' features too
        _, _, ok = self.bank.matrix(spec)
        return np.mean([z[ok[ok_m]] for z, ok_m in parts], axis=0), ok

    def member_rows(self, spec: ViewSpec) -> list[dict]:
        return [self.evaluate(ViewSpec((m,), spec.norm, spec.flip, spec.pool), "linear") for m in spec.members]

    def oof(self, row: dict) -> tuple[np.ndarray, np.ndarray]:
        """(out-of-fold logits, ok mask) of a single linear row (recomputed at its C if reused)."""
        spec = parse_view(row["backbone"])
        for need in _needs(spec):
            self.bank.ensure(need)
        x, mirror, ok = self.bank.matrix(spec)
        if row["candidate"] not in self.board.oof:
            y = self.job.train.labels[ok]
            self.board.oof[row["candidate"]] = cv_linear(x, y, (float(row["C"]),), self.splits(ok, y), self.job.seed,
                                                         mirror).oof_logits
        return self.board.oof[row["candidate"]], ok

    def splits(self, ok: np.ndarray, y: np.ndarray) -> list:
        key = ok.tobytes()
        if key not in self._splits:
            self._splits[key] = fold_splits(y, self.o.folds, self.job.seed)
        return self._splits[key]

    def predict_rate(self, spec: ViewSpec) -> float:
        """img/s of the candidate's features: the members in sequence (twice with flip)."""
        return 1.0 / sum(len(_sides(spec)) / self.bank.rate(m) for m in _member_keys(spec))

    def _row(self, spec: ViewSpec, model: str, r: CVResult | None, status: str, y: np.ndarray | None = None) -> dict:
        nan = float("nan")
        return {"rank": "", "candidate": f"{spec.name()} {model}", "model": model, "backbone": spec.name(),
                "members": "+".join(_member_keys(spec)), "norm": spec.norm, "pool": spec.pool,
                "feature_aug": "flip" if spec.flip else "none",
                "C": r.c if r and r.c is not None else "", "cv_accuracy": r.mean if r else nan,
                "cv_sd": r.sd if r else nan,
                "cv_nll": round(calibrated_nll(r.oof_logits, y), 5) if r is not None and y is not None else nan,
                "folds": len(next(iter(r.scores.values()))) if r else 0,
                "fit_s": round(r.fit_s, 3) if r else nan, "cv_s": round(r.seconds, 2) if r else nan,
                "predict_img_s": round(self.predict_rate(spec), 1), "status": status}


def _view(members: list[str], norm: str, flip: bool = False, pool: str = "avg") -> ViewSpec:
    return ViewSpec(tuple(MemberSpec(*_member(m)) for m in members), norm, flip, pool)


def _options(row: dict) -> tuple[str, bool, str]:
    """(norm, flip, pool) of a leaderboard row (rows of an older search have no pool: avg)."""
    return row["norm"], row["feature_aug"] == "flip", row.get("pool") or "avg"


# ----------------------------------------------------------------------------------------------
# The chosen candidate, fitted on every training photo
# ----------------------------------------------------------------------------------------------
def explain_choice(s: Search, best: dict) -> str:
    """Why the run keeps ``best``, in one line a person can check against the leaderboard."""
    single = max(s.board.scored(single=True), key=rank_key, default=None)
    scored, skipped = s.board.scored(), [r for r in s.board.rows if r["status"].startswith("skipped")]
    text = (f"{best['candidate']}: the highest {best['folds']}-fold cross-validated accuracy on the "
            f"{len(s.job.train)} training photos ({best['cv_accuracy']:.2%} ± {best['cv_sd']:.2%})")
    if single is not None and single["candidate"] != best["candidate"]:
        if single["cv_accuracy"] == best["cv_accuracy"]:
            text += (f", tied with the best single backbone ({single['candidate']}) and kept for its lower "
                     f"out-of-fold log-loss ({best['cv_nll']:.3f} vs {single['cv_nll']:.3f})")
        else:
            text += (f", {100 * (best['cv_accuracy'] - single['cv_accuracy']):+.1f} points over the best single "
                     f"backbone ({single['candidate']}, {single['cv_accuracy']:.2%})")
    return (text + f"; {len(scored)} candidates scored, {len(skipped)} skipped for the budget "
            f"({s.clock.elapsed():.0f} s of {s.clock.budget:.0f} s); it predicts ~{best['predict_img_s']:.0f} "
            f"photos/s here (end to end, every member and mirror)")


def _fit_average(s: Search, spec: ViewSpec, ok: np.ndarray, y: np.ndarray) -> tuple[torch.nn.Linear, dict]:
    """Each member's probe (its own C) on its own block, as one block-diagonal linear layer whose
    logits are the members' mean."""
    k, heads = len(s.job.train.classes), []
    for row in s.member_rows(spec):
        x, mirror, ok_m = s.bank.matrix(parse_view(row["backbone"]))
        x, mirror = x[ok[ok_m]], None if mirror is None else mirror[ok[ok_m]]
        xt, yt = (x, y) if mirror is None else (np.concatenate([x, mirror]), np.concatenate([y, y]))
        heads.append(fit_linear_probe(xt, yt, None, None, k, s.job.seed, c=float(row["C"]))[0])
    lin = torch.nn.Linear(sum(h.in_features for h in heads), k)
    with torch.no_grad():
        lin.weight.copy_(torch.cat([h.weight for h in heads], 1) / len(heads))
        lin.bias.copy_(torch.stack([h.bias for h in heads]).mean(0))
    return lin, {"type": "linear", "in": lin.in_features, "out": k}


def _fit_best(s: Search, best: dict, x: np.ndarray, mirror: np.ndarray | None, y: np.ndarray, ok: np.ndarray):
    k = len(s.job.train.classes)
    if best["model"] == "avg":
        return _fit_average(s, parse_view(best["backbone"]), ok, y)
    if best["model"] == "linear":
        xt, yt = (x, y) if mirror is None else (np.concatenate([x, mirror]), np.concatenate([y, y]))
        head, _, _ = fit_linear_probe(xt, yt, None, None, k, s.job.seed, c=float(best["C"]))
        return head, {"type": "linear", "in": x.shape[1], "out": k}
    return fit_mlp(x, y, k, HeadOptions(), s.job.seed, mirror)


def _probs(head, x: np.ndarray, mirror: np.ndarray | None) -> np.ndarray:
    xe = x if mirror is None else (x + mirror) / 2
    with torch.no_grad():
        return head.eval()(torch.from_numpy(np.ascontiguousarray(xe, np.float32))).softmax(-1).numpy()


def _oof(s: Search, best: dict, spec: ViewSpec, y: np.ndarray) -> np.ndarray:
    """Out-of-fold logits of the chosen candidate (recomputed when its row was reused)."""
    if best["candidate"] in s.board.oof:
        return s.board.oof[best["candidate"]]
    if best["model"] == "avg":
        return s.average_oof(spec, s.member_rows(spec))[0]
    x, mirror, ok = s.bank.matrix(spec)
    splits = s.splits(ok, y)
    if best["model"] == "linear":
        return cv_linear(x, y, (float(best["C"]),), splits, s.job.seed, mirror).oof_logits
    return cv_head(x, y, splits, HeadOptions(), s.job.seed, mirror).oof_logits


def final_fit(s: Search, best: dict) -> Fitted:
    """The chosen candidate on all training photos, scored on the validation split (if any)."""
    spec = parse_view(best["backbone"])
    for need in _needs(spec):
        s.bank.ensure(need)
    x, mirror, ok = s.bank.matrix(spec)
    y = s.job.train.labels[ok]
    head, head_spec = _fit_best(s, best, x, mirror, y, ok)
    val_probs = val_ok = None
    if len(s.job.val):
        xv, mv, val_ok = s.bank.matrix(spec, split=1)
        val_probs = _probs(head, xv, mv)
    skipped = {p: why for key in s.bank.data if key[0] in _member_keys(spec)
               for f in s.bank.data[key] if f is not None for p, why in f.skipped}
    return Fitted(
        head=head, head_spec=head_spec, val_probs=val_probs, val_ok=val_ok,
        train_accuracy=float((_probs(head, x, mirror).argmax(1) == y).mean()), skipped=list(skipped.items()),
        backbone=create_backbone(spec.name()),
        calibration=None if val_probs is not None else (_oof(s, best, spec, y), y, "cv"),
        info={**({"C": float(best["C"])} if best["model"] == "linear" else {}), "selection": "cv",
              "feature_aug": best["feature_aug"], "head_model": best["model"],
              "auto": {"chosen": best["candidate"], "why": explain_choice(s, best), "budget_s": s.clock.budget,
                       "elapsed_s": round(s.clock.elapsed(), 1), "folds": s.o.folds, "seed": s.job.seed,
                       "search_key": s.key, "leaderboard": s.board.ranked()}},
    )


def train_auto(job: Job) -> Fitted:
    """``--mode auto``: the budgeted search, then the best candidate fitted on every training
    photo; writes ``leaderboard.csv`` into the run."""
    if len(np.unique(job.train.labels)) < 2:
        raise DataError("the training split has photos of fewer than 2 classes")
    if job.run.backbone != DEFAULT_BACKBONE or job.run.input_size or job.run.weights:
        raise OptionError("backbone", "and {input_size} do not apply to {mode} auto, which searches its "
                                      "{members} (e.g. efficientnet_lite2@384,mobilenet_v2)")
    s = Search(job, job.options)
    with lean_sessions():  # a dozen networks in one process: no onnxruntime arena kept per network
        best = s.run()
        if best is None:
            raise DataError(f"no candidate fitted in the budget of {s.clock.budget:.0f} s (the cheapest needs "
                            "its features extracted first); give a larger --budget")
        fitted = final_fit(s, best)
    job.out.mkdir(parents=True, exist_ok=True)
    text = to_csv(fitted.info["auto"]["leaderboard"])
    atomic_write(job.out / "leaderboard.csv", lambda p: p.write_text(text))
    return fitted
