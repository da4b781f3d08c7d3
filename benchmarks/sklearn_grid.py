"""Issue 22's must-show for the scikit-learn estimator, on PetImages:
``cross_val_score(TransferClassifier(), paths, labels, cv=3)`` and a ``GridSearchCV`` over two
backbones (efficientnet_lite0, mobilenet_v2) x two C (0.1, 1.0), with their scores and wall times.

    python benchmarks/sklearn_grid.py [--n 600] [--seed 0] [--data ../shared/data/petimages]

The subset: ``--n`` photos (default 600: 300 cats, 300 dogs), drawn per class with
``numpy.random.default_rng(seed).choice`` from the sorted file names, without replacement.

Each job runs twice: ``cold`` (an empty TRANSFERLAB_CACHE of its own and an empty in-process
memo: every photo goes through the network) and ``cached`` (same disk cache, memo cleared: what a
new Python session pays). ``extracted`` counts the images that went through each backbone's
network and ``requested`` the path lookups that reached the disk cache: with the memo, each photo
once per backbone, however many folds and values of C. Figures depend on the machine: the CPU
kind and load average are printed with them; only a quiet machine gives comparable times.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import GridSearchCV, cross_val_score

import transferlab.sklearn as tsk
from transferlab.runtime.device import device_name
from transferlab.sklearn import TransferClassifier

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "petimages"
REAL = tsk.extract_view
GRID = {"backbone": ["efficientnet_lite0", "mobilenet_v2"], "C": [0.1, 1.0]}


def cpu_kind() -> str:
    """The CPU feature that decides the engine's precision: amx_bf16, avx512_bf16 or avx2."""
    flags = set(Path("/proc/cpuinfo").read_text().split()) if Path("/proc/cpuinfo").exists() else set()
    return next((f for f in ("amx_bf16", "avx512_bf16", "avx2") if f in flags), "unknown")


def subset(root: Path, n: int, seed: int) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    paths, labels = [], []
    for cls in ("Cat", "Dog"):
        files = sorted(p.name for p in (root / cls).glob("*.jpg"))
        paths += [str(root / cls / f) for f in rng.choice(files, n // 2, replace=False)]
        labels += [cls] * (n // 2)
    return paths, np.array(labels)


class Counting:
    """The real extract_view, counting per backbone the paths asked for and the images run."""

    def __init__(self, real):
        self.real, self.requested, self.extracted = real, Counter(), Counter()

    def __call__(self, backbone, paths, **kw):
        f = self.real(backbone, paths, **kw)
        self.requested[backbone.name] += len(paths)
        self.extracted[backbone.name] += f.extracted
        return f


def timed(job, cache: Path):
    """(result, seconds, counter) of ``job()`` on the disk cache ``cache``, the memo emptied."""
    os.environ["TRANSFERLAB_CACHE"] = str(cache)
    tsk.MEMO.clear()
    tsk.extract_view = counter = Counting(REAL)
    t0 = time.perf_counter()
    out = job()
    return out, time.perf_counter() - t0, counter


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", type=Path, default=SHARED)
    a = ap.parse_args()
    paths, labels = subset(a.data, a.n, a.seed)
    print(f"{len(paths)} PetImages photos (seed {a.seed}); {device_name(torch.device('cpu'))}, {cpu_kind()}; "
          f"load average {os.getloadavg()[0]:.1f}")
    jobs = {"cross_val_score(cv=3)": lambda: cross_val_score(TransferClassifier(), paths, labels, cv=3),
            "GridSearchCV 2 backbones x 2 C": lambda: GridSearchCV(TransferClassifier(), GRID, cv=3).fit(paths, labels)}
    with tempfile.TemporaryDirectory() as root:
        for name, job in jobs.items():
            cache = Path(tempfile.mkdtemp(dir=root))  # empty: the cold run extracts everything
            for phase in ("cold", "cached"):
                out, s, c = timed(job, cache)
                print(f"{name:<32} {phase:<6} {s:7.1f} s  extracted {dict(c.extracted)}  requested {dict(c.requested)}")
            report(name, out)


def report(name: str, out) -> None:
    if isinstance(out, np.ndarray):
        print(f"  scores {np.round(out, 4).tolist()} mean {out.mean():.4f}")
        return
    r = out.cv_results_
    for p, m, sd in zip(r["params"], r["mean_test_score"], r["std_test_score"], strict=True):
        print(f"  {p['backbone']:<20} C={p['C']:<4} {m:.4f} ± {sd:.4f}")
    print(f"  best {out.best_params_} {out.best_score_:.4f}")


if __name__ == "__main__":
    main()
