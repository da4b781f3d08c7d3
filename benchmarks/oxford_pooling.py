"""Average vs GeM pooling (``:gem``) on the Oxford-IIIT Pet subset: the linear probe (C by 5-fold
CV on the 710 trainval photos, nothing tuned on test) on each bundled backbone and on one
ensemble, per-member ``l2`` features, scored on the official test split (760).

    python benchmarks/oxford_pooling.py [--out /tmp/oxford-pooling]

Features go through the user's feature cache (an ``auto`` search on the same photos leaves both
poolings cached).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from transferlab.training.api import train

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "oxford-pets-subset"
VIEWS = ["efficientnet_lite0", "mobilenet_v2", "efficientnet_lite1", "efficientnet_lite2@320", "efficientnet_lite2@384",
         "efficientnet_lite2@320+efficientnet_lite1+mobilenet_v2"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("/tmp/oxford-pooling"))
    a = ap.parse_args()
    rows = []
    for view in VIEWS:
        row = {"view": view}
        for pool, opts in (("avg", ":l2"), ("gem", ":l2,gem")):
            out = a.out / f"{view}{opts}".replace("+", "_").replace(":", "_").replace("@", "_").replace(",", "_")
            run = train(SHARED, backbone=view + opts, mode="linear", val_fraction=0, out=out, overwrite=True,
                        progress=False)
            row[pool] = run.evaluate(SHARED, split="test", out=out / "test", progress=False)["accuracy"]
        rows.append(row)
        print(f"{view:<58} avg {row['avg']:.2%}  gem {row['gem']:.2%}  ({100 * (row['gem'] - row['avg']):+.2f})",
              flush=True)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "pooling.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
