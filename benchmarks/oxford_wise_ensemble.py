"""Issue 15: would a WiSE fine-tune folded into auto's feature ensemble reach 93 % on Oxford test?

    transferlab train ../shared/data/oxford-pets-subset --mode finetune --backbone efficientnet_lite2 \\
        --input-size 384 --epochs 6 --unfreeze last:3 --aug randaug --wise 0.5 --val-fraction 0 --out FT
    python benchmarks/oxford_wise_ensemble.py AUTO_RUN FT

AUTO_RUN: the run ``benchmarks/oxford_auto.py`` writes (OUT/auto). Prints the test accuracy of each
and of their probability / log-probability averages at a few weights (the test split is read only
here, never by training).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from transferlab.data.datasets import load_dataset
from transferlab.run import load_run

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "oxford-pets-subset"


def main() -> None:
    te = load_dataset(SHARED, split="test")
    auto, ft = load_run(sys.argv[1]), load_run(sys.argv[2])
    assert auto.classes == ft.classes == te.classes
    pa, _ = auto.predict_proba_paths(te.paths, cache=True)
    pf, _ = ft.predict_proba_paths(te.paths)
    pft, _ = ft.predict_proba_paths(te.paths, tta="flip")

    def acc(p: np.ndarray) -> float:
        return float((p.argmax(1) == te.labels).mean())

    print(f"auto ensemble {acc(pa):.4f}  finetune {acc(pf):.4f}  finetune+flip {acc(pft):.4f}")
    for w in (0.3, 0.5, 0.7):
        for name, f in (("plain", pf), ("flip", pft)):
            probs = w * f + (1 - w) * pa
            logs = w * np.log(f + 1e-9) + (1 - w) * np.log(pa + 1e-9)
            print(f"w_ft={w} {name}: prob avg {acc(probs):.4f}  log avg {acc(logs):.4f}")


if __name__ == "__main__":
    main()
