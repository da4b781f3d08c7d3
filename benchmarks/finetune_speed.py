"""Seconds per fine-tuning epoch with the frozen groups in torch vs in onnxruntime (same data,
same seed; the two engines train the same network to rounding, see test_finetune.py).

    python benchmarks/finetune_speed.py --backbone efficientnet_lite2 --input-size 384 --unfreeze last:3

Trains on the Oxford subset's trainval images (710) for ``--epochs`` epochs per engine, with the
head warm-up on cached features first (its features are extracted once, before the timing).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from transferlab.training.api import train

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "oxford-pets-subset"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=SHARED)
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--input-size", type=int, default=None)
    ap.add_argument("--unfreeze", default="last:3")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--engines", nargs="+", default=["torch", "onnxruntime"])
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for engine in a.engines:
            os.environ["TRANSFERLAB_ENGINE"] = engine
            run = train(a.data, backbone=a.backbone, input_size=a.input_size, mode="finetune", val_fraction=0.0,
                        out=Path(tmp) / engine, progress=False, epochs=a.epochs, unfreeze=a.unfreeze, aug="randaug")
            cfg = run.config["train"]
            hist = json.loads((run.path / "metrics.json").read_text())["history"]
            print(json.dumps({"backbone": a.backbone, "input_size": run.data_config.input_size, "unfreeze": a.unfreeze,
                              "frozen_groups_engine": cfg["frozen_groups_engine"],
                              "seconds_per_epoch": cfg["seconds_per_epoch"],
                              "train_loss": [round(h["train_loss"], 4) for h in hist[1:]]}), flush=True)


if __name__ == "__main__":
    main()
