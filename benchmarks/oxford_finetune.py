"""One Oxford-IIIT Pet fine-tuning setting, scored the way issue 3 asks: train on the official
trainval (all 710 images, no hold-out), evaluate on the official test split (760), also with
flip TTA. Appends one JSON line to --log.

    python benchmarks/oxford_finetune.py TAG '{"epochs": 6, "unfreeze": "last:3", "aug": "randaug"}'

Options are ``train(..., mode="finetune")`` keywords, including the ones the CLI does not
expose (``bn``, ``head_epochs``, ``trunk_lr``, ``lr_mult``), plus ``backbone`` and ``input_size``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from transferlab.training.api import train

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "oxford-pets-subset"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("tag")
    ap.add_argument("options", help="JSON object of finetune options")
    ap.add_argument("--data", type=Path, default=SHARED)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("/tmp/oxford-finetune"))
    ap.add_argument("--log", type=Path, default=Path("/tmp/oxford-finetune/results.jsonl"))
    a = ap.parse_args()
    opts = json.loads(a.options)
    backbone = opts.pop("backbone", "efficientnet_lite0")
    size = opts.pop("input_size", None)
    t0 = time.perf_counter()
    run = train(a.data, backbone=backbone, input_size=size, mode="finetune", val_fraction=0.0, seed=a.seed,
                out=a.out / a.tag, progress=False, **opts)
    seconds = time.perf_counter() - t0
    plain = run.evaluate(a.data, split="test", out=a.out / a.tag / "eval", progress=False)
    flip = run.evaluate(a.data, split="test", tta="flip", progress=False)
    res = {"tag": a.tag, "seed": a.seed, "backbone": backbone, "input_size": size, "options": opts,
           "test_acc": plain["accuracy"], "test_acc_flip_tta": flip["accuracy"], "train_seconds": round(seconds, 1)}
    print(json.dumps(res))
    a.log.parent.mkdir(parents=True, exist_ok=True)
    with a.log.open("a") as f:
        f.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    main()
