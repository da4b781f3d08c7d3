"""The feature bank: every member's raw features of the training and validation photos, extracted
once (through the per-member feature cache) and shared by all the candidates that use them.

A candidate is a *view* of members (a normalisation, a pooling, flip averaging); the bank keeps
the members' features apart and assembles a view's matrix on demand, so that twenty candidates
over four backbones cost four extractions. It also estimates what an extraction would cost before
it starts (photos not yet cached / this machine's measured rate), which is what lets the search
skip what does not fit its budget.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ..._io import write_json
from ...features import Features, cache_root, extract, file_keys
from ...models.classifier import Backbone
from ...models.registry import create_backbone
from ...models.views import MemberSpec, ViewSpec, combine_arrays, gem_pooled, mirrored
from ..job import Job

# img/s end to end (decode + network) on the project's 2-core CPU at the native size; scaled by
# pixels for other sizes. Only a first guess: every extraction records this machine's own rate.
PRIOR_RATES = {"efficientnet_lite0": (224, 70.0), "mobilenet_v2": (224, 80.0), "efficientnet_lite1": (240, 45.0),
               "efficientnet_lite2": (260, 30.0)}
TIMED_MIN = 64  # photos an extraction must do before its rate is trusted and recorded

Need = tuple[MemberSpec, bool, str]  # (member, mirrored, pooling): one extraction


def member_key(m: MemberSpec) -> str:
    """``NAME@SIZE``: how a member is named to the registry, in rates.json and on the
    leaderboard."""
    return f"{m.name}@{m.size}" if m.size else m.name


def sides(spec: ViewSpec) -> tuple[bool, ...]:
    """Which photos a view reads: the plain ones, and their mirrors when it says ``flip``."""
    return (False, True) if spec.flip else (False,)


def needs(spec: ViewSpec) -> list[Need]:
    """The member features a view is made of."""
    return [(m, v, spec.pool) for m in spec.members for v in sides(spec)]


def _rates_file() -> Path:
    return cache_root() / "auto" / "rates.json"


def _cached_share(bb: Backbone, paths: list[str]) -> float:
    """Share of ``paths`` already in ``bb``'s feature cache (0 when unsure: estimates err long)."""
    try:
        from ...features import FeatureCache
        from ...runtime.device import default_device, precision_tag
        from ...runtime.engine import engine_default

        dev = default_device()
        d = cache_root() / "features" / f"{bb.key}-{precision_tag(dev, engine_default(dev, bb, measure=False))}"
        if not d.is_dir() or not paths:
            return 0.0
        store = FeatureCache(d)
        return float(np.mean([(k in store.index or k in store.bad) for k in file_keys(paths)]))
    except Exception:  # an estimate only
        return 0.0


class Bank:
    """Raw member features of the training and validation photos, keyed by (member, mirrored,
    pooling)."""

    def __init__(self, job: Job):
        self.job = job
        self.models: dict[tuple[MemberSpec, str], Backbone] = {}
        self.data: dict[Need, tuple[Features, Features | None]] = {}
        try:
            self.rates: dict[str, float] = json.loads(_rates_file().read_text())
        except (OSError, ValueError):
            self.rates = {}

    def backbone(self, member: MemberSpec, mirror: bool = False, pool: str = "avg") -> Backbone:
        """The member's network (built once), GeM-pooled and mirrored as asked."""
        if (member, "avg") not in self.models:
            self.models[member, "avg"] = create_backbone(member_key(member))
        if (member, pool) not in self.models:  # kept: the GeM network is built once, sharing the member's weights
            self.models[member, pool] = gem_pooled(self.models[member, "avg"])
        bb = self.models[member, pool]
        return mirrored(bb) if mirror else bb

    def rate(self, member: MemberSpec) -> float:
        """img/s of the member here: measured if it ever was, else the prior scaled by pixels."""
        if member_key(member) in self.rates:
            return self.rates[member_key(member)]
        native, r = PRIOR_RATES.get(member.name, (member.size, 20.0))
        return r * (native / member.size) ** 2

    def cost(self, wanted: list[Need]) -> float:
        """Estimated seconds to extract what ``wanted`` lacks (uncached photos / measured rate)."""
        paths = self.job.train.paths + self.job.val.paths
        todo = [n for n in wanted if n not in self.data]
        return sum(len(paths) * (1 - _cached_share(self.backbone(*n), paths)) / self.rate(n[0]) for n in todo)

    def ensure(self, need: Need) -> None:
        """Extract one need's features (train and val) unless the bank has them; records the rate."""
        if need in self.data:
            return
        bb, t0 = self.backbone(*need), time.perf_counter()
        kw = {"progress": self.job.progress}
        tr = extract(bb, self.job.train.paths, description=f"features (train) {bb.name}", **kw)
        va = None
        if len(self.job.val):
            va = extract(bb, self.job.val.paths, description=f"features (val) {bb.name}", **kw)
        self.data[need] = (tr, va)
        done = tr.extracted + (va.extracted if va else 0)
        if done >= TIMED_MIN:  # enough to time
            self.rates[member_key(need[0])] = round(done / (time.perf_counter() - t0), 2)
            _rates_file().parent.mkdir(parents=True, exist_ok=True)
            write_json(_rates_file(), self.rates, durable=False)

    def ensure_view(self, spec: ViewSpec) -> None:
        """Every member feature the view reads."""
        for need in needs(spec):
            self.ensure(need)

    def matrix(self, spec: ViewSpec, split: int = 0) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """(features, mirrored features or None, ok mask over the split's photos) of a view
        (``split`` 0 = train, 1 = val), rows restricted to photos every part could read."""
        parts = {v: [self.data[(m, v, spec.pool)][split] for m in spec.members] for v in sides(spec)}
        ok = np.logical_and.reduce([p.ok for ps in parts.values() for p in ps])
        x = {v: combine_arrays([p.features[ok[p.ok]] for p in ps], spec.norm) for v, ps in parts.items()}
        return x[False], x.get(True), ok

    def skipped(self, spec: ViewSpec) -> list[tuple[str, str]]:
        """(path, why) of the photos some member of the view could not read, each once."""
        found = {p: why for key in self.data if key[0] in spec.members
                 for f in self.data[key] if f is not None for p, why in f.skipped}
        return list(found.items())
