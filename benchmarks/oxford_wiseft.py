"""WiSE-FT check (Wortsman et al. 2022): average the weights of a fine-tuned Oxford run with the
pretrained trunk + the linear probe's head, and score the mix on the official test split.

    python benchmarks/oxford_wiseft.py /tmp/oxford-finetune/TAG [--alpha 0 0.5 1]

Runs from benchmarks/oxford_finetune.py are expected; each is mixed with a linear probe trained on
its own backbone at its own input size.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
import torch

from transferlab.data.datasets import load_dataset
from transferlab.features import extract
from transferlab.models.registry import create_backbone
from transferlab.run import load_run
from transferlab.training.api import TRAINERS
from transferlab.training.job import Job
from transferlab.training.options import LinearOptions, RunOptions

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "oxford-pets-subset"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--alpha", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    ap.add_argument("--data", type=Path, default=SHARED)
    a = ap.parse_args()
    tr, te = load_dataset(a.data, split="trainval"), load_dataset(a.data, split="test")
    for path in a.runs:
        run = load_run(path)
        bb = create_backbone(run.backbone.name, input_size=run.data_config.input_size)
        t, v = tr.train_val_split(0.0, 0)
        probe = TRAINERS["linear"](Job(bb, t, v, RunOptions(seed=0), LinearOptions(), path, progress=False)).head
        start = {**{f"trunk.{k}": v for k, v in bb.model.trunk.state_dict().items()},
                 **{f"head.{k}": v for k, v in probe.state_dict().items()}}
        tuned = run.model.state_dict()
        for alpha in a.alpha:
            mixed = {k: (alpha * v.float() + (1 - alpha) * start[k].float()).to(v.dtype)
                     if k in start and v.is_floating_point() else v for k, v in tuned.items()}
            model = copy.deepcopy(run.model)
            model.load_state_dict(mixed)
            f = extract(bb, te.paths, model=model, cache=False, progress=False)
            acc = float(np.mean(model.head(torch.from_numpy(f.features)).argmax(1).numpy() == te.labels[f.ok]))
            print(f"{path.name}  alpha {alpha:.2f}  test accuracy {acc:.4f}", flush=True)


if __name__ == "__main__":
    main()
