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
from pathlib import Path

import numpy as np
import torch

from .attack import AttackSpec, _Net, eps_label, run_attack
from .errors import DataError, TransferlabError, UnknownClass

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


def robustness(
    model,
    data,
    *,
    method: str = "pgd",
    eps: list[float] | tuple[float, ...] = DEFAULT_EPS,
    steps: int = 10,
    step_size: float | None = None,
    limit: int | None = None,
    split: str | None = None,
    seed: int = 0,
    batch_size: int = 32,
    early_stop: float = 1.0,
    out: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """Accuracy of ``model`` (run directory, backbone name or Run) on ``data`` under attack.

    ``data``: anything :func:`transferlab.evaluate.resolve_eval_data` takes (folder, Oxford-IIIT
    Pet root, CSV; ``split='val'`` re-creates the run's own held-out split). With ``out``,
    writes ``robustness.json`` and ``robustness.png`` there."""
    from . import progress as _progress
    from .evaluate import map_labels, resolve_eval_data
    from .pipeline import iter_batches
    from .run import Run, load

    if method not in ROBUSTNESS_METHODS:
        raise TransferlabError(f"robustness needs an attack with a budget: {', '.join(ROBUSTNESS_METHODS)}")
    eps = sorted({float(e) for e in eps})
    if any(e < 0 for e in eps):
        raise TransferlabError("epsilons must be >= 0")
    run = model if isinstance(model, Run) else load(model)
    ds = resolve_eval_data(run, data, split)
    try:
        y_all = map_labels(run, ds)
    except UnknownClass as e:
        raise UnknownClass(
            f"the classes of {data} do not map onto {run.name}'s classes ({e}); "
            "train a run on this data (transferlab train DATA) and pass its directory"
        ) from None
    idx = np.arange(len(ds)) if limit is None else stratified_subsample(ds.labels, int(limit), seed)
    if len(idx) == 0:
        raise DataError(f"no images to attack in {data}")
    paths = [ds.paths[i] for i in idx]
    y_sel = torch.as_tensor(y_all[idx], dtype=torch.long)

    net = _Net(run.model)
    correct = dict.fromkeys(eps, 0)
    skipped: list[dict] = []
    n_ok = 0
    t0 = time.perf_counter()
    with _progress.bar(f"robustness ({method})", len(paths) if progress else None) as advance:
        for batch in iter_batches(paths, run.data_config, batch_size):
            skipped += [{"path": paths[j], "reason": why} for j, why in batch.failed]
            if batch.indices:
                x = batch.pixels.contiguous()
                y = y_sel[batch.indices]
                logits = net.score(x)
                alive = (logits.argmax(1).cpu() == y)
                n_ok += len(y)
                for e in eps:
                    if e > 0 and alive.any():
                        spec = AttackSpec.make(method, e, steps, step_size, targeted=False, seed=seed,
                                               early_stop=early_stop if method != "fgsm" else None,
                                               refine=0 if method == "fgsm" else 2)
                        sel = alive.nonzero().flatten()
                        res = run_attack(net, x[sel], y[sel], spec, logits_clean=logits[sel])
                        alive[sel[res.success.cpu()]] = False
                    correct[e] += int(alive.sum())
            advance(len(batch.indices) + len(batch.failed))
    seconds = time.perf_counter() - t0
    if n_ok == 0:
        raise DataError(f"no readable image among the {len(paths)} selected from {data}")

    result = {
        "run": run.name,
        "data": str(data),
        "split": ds.split,
        "method": method,
        "norm": "l2" if method == "pgd-l2" else "linf",
        "steps": 1 if method == "fgsm" else steps,
        "seed": seed,
        "early_stop_margin": early_stop if method != "fgsm" else None,
        "images": n_ok,
        "selected": len(paths),
        "dataset_images": len(ds),
        "limit": limit,
        "subsample": "seeded stratified" if limit is not None and limit < len(ds) else "all",
        "eps": eps,
        "eps_labels": [eps_label(e) for e in eps],
        "accuracy": [correct[e] / n_ok for e in eps],
        "seconds": round(seconds, 1),
        "seconds_per_image": round(seconds / max(n_ok, 1), 3),
        "skipped": skipped,
    }
    if out is not None:
        from ._io import write_json

        out = Path(out)
        result["figure"] = str(curve_figure(result, out / "robustness.png"))
        write_json(out / "robustness.json", result)
    return result


def curve_figure(r: dict, path: str | Path) -> Path:
    """Accuracy vs epsilon (in 8-bit levels for L-inf)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .figures import save_figure

    linf = r["norm"] == "linf"
    xs = [e * 255 for e in r["eps"]] if linf else r["eps"]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.plot(xs, [a * 100 for a in r["accuracy"]], "o-", color="#c33")
    for x, a in zip(xs, r["accuracy"], strict=True):
        ax.annotate(f"{a:.0%}", (x, a * 100), textcoords="offset points", xytext=(0, 6), ha="center",
                    fontsize=8)
    ax.set_xlabel("ε (L∞, in 8-bit levels /255)" if linf else "ε (L2, [0,1] pixels)")
    ax.set_ylabel("accuracy under attack (%)")
    ax.set_ylim(-3, 105)
    ax.grid(alpha=0.3)
    name = Path(r["run"]).name
    ax.set_title(f"{name}: {r['method']} ({r['steps']} steps), n = {r['images']}", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def format_table(r: dict) -> list[tuple[str, str]]:
    return [(lab, f"{a:.1%}") for lab, a in zip(r["eps_labels"], r["accuracy"], strict=True)]
