"""Accuracy under attack for a list of epsilons: ``robustness RUN DATA``.

Untargeted attacks (default PGD L-inf, Madry et al. 2018) against each image's true label,
batched, in [0, 1] pixel space, scored after 8-bit rounding like every attack here (see
:mod:`transferlab.attack`). Two things keep it fast on a laptop CPU without flattering the model:

* an image already fooled at a smaller epsilon is fooled at every larger one (its adversarial
  image lies inside the larger ball), so larger epsilons only attack the survivors; the curve is
  therefore monotone by construction;
* PGD stops updating an image once it is misclassified with a margin (``early_stop``, logits),
  and images that 8-bit rounding un-fooled get a few refinement steps.

Accuracy at eps = 0 is the clean accuracy; images the model gets wrong clean count as wrong at
every epsilon. ``limit`` takes a seeded, stratified subsample (same class proportions).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from ..display import card, one_line
from ..errors import DataError, UnknownClass
from ..options import AT_LEAST_ONE, Choice, Interval, Options, Rule, check
from .budget import AttackSpec, eps_label
from .core import AttackNet, run_attack

ROBUSTNESS_METHODS = ("fgsm", "pgd", "pgd-l2")
DEFAULT_EPS = (0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255)


def stratified_subsample(labels: np.ndarray, limit: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of ``limit`` items with the class proportions of ``labels`` (seeded)."""
    n = len(labels)
    if limit >= n:
        return np.arange(n)
    from sklearn.model_selection import train_test_split

    counts = np.bincount(labels)
    strat = labels if counts[counts > 0].min() >= 2 and limit >= len(counts[counts > 0]) else None
    idx, _ = train_test_split(np.arange(n), train_size=limit, random_state=seed, stratify=strat)
    return np.sort(idx)


def _budgets(param: str, value) -> list[float]:
    """Epsilons, sorted and distinct, each >= 0."""
    eps = sorted({float(e) for e in value})
    check(all(e >= 0 for e in eps), param, "must all be >= 0 (pixel budgets in [0, 1])")
    return eps


@dataclass
class RobustnessOptions(Options):
    """How :func:`robustness` attacks: method, budgets, steps, which images."""

    method: str = "pgd"
    eps: list[float] | tuple[float, ...] = DEFAULT_EPS
    steps: int = 10
    step_size: float | None = None
    limit: int | None = None
    split: str | None = None
    seed: int = 0
    batch_size: int = 32
    early_stop: float = 1.0

    constraints: ClassVar[dict[str, Rule]] = {
        "method": Choice(ROBUSTNESS_METHODS), "eps": _budgets, "steps": AT_LEAST_ONE, "batch_size": AT_LEAST_ONE,
        "limit": Interval(int, 1, optional=True), "early_stop": Interval(float, 0, closed="neither")}

    def spec(self, eps: float) -> AttackSpec:
        fgsm = self.method == "fgsm"
        return AttackSpec.make(self.method, eps, self.steps, self.step_size, targeted=False, seed=self.seed,
                               early_stop=None if fgsm else self.early_stop, refine=0 if fgsm else 2)


def robustness(model, data, options: RobustnessOptions | None = None, *, out: str | Path | None = None,
               progress=True, **kw) -> dict:
    """Accuracy of ``model`` (run directory, backbone name or Run) on ``data`` under attack.

    ``data``: anything :func:`transferlab.evaluation.evaluate.resolve_eval_data` takes (folder,
    Oxford-IIIT Pet root, CSV; ``split='val'`` re-creates the run's own held-out split).
    ``options`` or keywords of :class:`RobustnessOptions`. With ``out``, writes
    ``robustness.json`` and ``robustness.png`` there."""
    from ..inference.load import load
    from ..inference.torch_model import Run

    o = (replace(options, **kw) if options else RobustnessOptions(**kw)).validate()
    if out is not None:  # refused before the (long) attack, not after it
        from .._io import check_writable, ensure_outside

        ensure_outside(out, getattr(data, "root", None) or data)
        check_writable(out)
    run = model if isinstance(model, Run) else load(model)
    ds, paths, y_sel = _select(run, data, o)
    t0 = time.perf_counter()
    correct, n_ok, skipped = _attack_all(run, paths, y_sel, o, progress)
    seconds = time.perf_counter() - t0
    if n_ok == 0:
        raise DataError(f"no readable image among the {len(paths)} selected from {data}")
    result = _result(run, data, ds, o, {"correct": correct, "n_ok": n_ok, "skipped": skipped,
                                         "selected": len(paths), "seconds": seconds})
    return _write(result, out)


def _select(run, data, o: RobustnessOptions):
    """The dataset, the (subsampled) paths to attack and their labels as the run's indices."""
    from ..evaluation.evaluate import map_labels, resolve_eval_data

    ds = resolve_eval_data(run, data, o.split)
    try:
        y_all = map_labels(run, ds)
    except UnknownClass as e:
        raise UnknownClass(
            f"the classes of {data} do not map onto {run.name}'s classes ({e}); "
            "train a run on this data (transferlab train DATA) and pass its directory"
        ) from None
    idx = np.arange(len(ds)) if o.limit is None else stratified_subsample(ds.labels, int(o.limit), o.seed)
    if len(idx) == 0:
        raise DataError(f"no images to attack in {data}")
    return ds, [ds.paths[i] for i in idx], torch.as_tensor(y_all[idx], dtype=torch.long)


def _attack_all(run, paths: list[str], y_sel: torch.Tensor, o: RobustnessOptions, progress):
    """Per epsilon, how many images stay correct; larger epsilons only attack the survivors."""
    from ..data.loader import iter_batches
    from ..progress import resolve

    net = AttackNet(run.model)
    correct = dict.fromkeys(o.eps, 0)
    skipped: list[dict] = []
    n_ok = 0
    with resolve(progress)(f"robustness ({o.method})", len(paths)) as advance:
        for batch in iter_batches(paths, run.data_config, o.batch_size):
            skipped += [{"path": paths[j], "reason": why} for j, why in batch.failed]
            if batch.indices:
                x, y = batch.pixels.contiguous(), y_sel[batch.indices]
                logits = net.score(x)
                alive = logits.argmax(1).cpu() == y
                n_ok += len(y)
                for e in o.eps:
                    if e > 0 and alive.any():
                        sel = alive.nonzero().flatten()
                        res = run_attack(net, x[sel], y[sel], o.spec(e), logits_clean=logits[sel])
                        alive[sel[res.success.cpu()]] = False
                    correct[e] += int(alive.sum())
            advance(len(batch.indices) + len(batch.failed))
    return correct, n_ok, skipped


class RobustnessResult(dict):
    """:func:`robustness`'s JSON dict, which shows itself: accuracy at each budget in the repr, the
    curve as :meth:`plot`."""

    def __repr__(self) -> str:
        curve = ", ".join(f"{lab}: {a:.0%}" for lab, a in zip(self["eps_labels"], self["accuracy"], strict=True))
        return one_line("Robustness", {"model": self["run"], "method": self["method"], "images": self["images"],
                                       "accuracy": curve})

    def plot(self, out: str | Path | None = None):
        from ..report.figures import plot_robustness, save_figure

        fig = plot_robustness(self)
        if out is not None:
            save_figure(fig, out)
        return fig

    def _repr_html_(self) -> str:
        rows = {f"ε = {lab}": f"{a:.1%}" for lab, a in zip(self["eps_labels"], self["accuracy"], strict=True)}
        return card(f"Robustness of {self['run']} ({self['method']}, {self['images']} images)", rows)


def _result(run, data, ds, o: RobustnessOptions, c: dict) -> dict:
    n_ok, fgsm = c["n_ok"], o.method == "fgsm"
    return RobustnessResult({
        "run": run.name, "data": str(data), "split": ds.split, "method": o.method,
        "norm": "l2" if o.method == "pgd-l2" else "linf", "steps": 1 if fgsm else o.steps, "seed": o.seed,
        "early_stop_margin": None if fgsm else o.early_stop, "images": n_ok, "selected": c["selected"],
        "dataset_images": len(ds), "limit": o.limit,
        "subsample": "seeded stratified" if o.limit is not None and o.limit < len(ds) else "all",
        "eps": o.eps, "eps_labels": [eps_label(e) for e in o.eps],
        "accuracy": [c["correct"][e] / n_ok for e in o.eps],
        "seconds": round(c["seconds"], 1), "seconds_per_image": round(c["seconds"] / max(n_ok, 1), 3),
        "skipped": c["skipped"],
    })


def _write(result: dict, out) -> dict:
    if out is not None:
        from .._io import write_json
        from ..report.figures import robustness_figure

        out = Path(out)
        result["figure"] = str(robustness_figure(result, out / "robustness.png"))
        write_json(out / "robustness.json", result)
    return result
