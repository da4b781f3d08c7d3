"""Single-thread cost of turning one file into model input (``pipeline.decode_array``: decode with
JPEG draft, resize, centre crop), in ms per image, in a fresh process with no model running.

    python benchmarks/decode_cost.py "../shared/data/petimages/*/*.jpg" --n 300
"""

from __future__ import annotations

import argparse
import glob
import time

import torch

from transferlab.data.loader import decode_array
from transferlab.models.registry import create_backbone


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("pattern")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--backbone", default="efficientnet_lite0")
    a = ap.parse_args()
    torch.set_num_threads(1)
    paths = sorted(glob.glob(a.pattern))[: a.n]
    dc = create_backbone(a.backbone).data_config
    for rep in ("cold", "warm"):
        t0 = time.perf_counter()
        for p in paths:
            decode_array(p, dc)
        print(f"{rep}: {(time.perf_counter() - t0) / len(paths) * 1e3:.3f} ms/image over {len(paths)} files")


if __name__ == "__main__":
    main()
