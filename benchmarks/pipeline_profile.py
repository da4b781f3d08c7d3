"""Where (b) loses against (c): per 1,024-image chunk, the forward-only rate on pre-decoded
batches, then the extraction loop split into time spent waiting for decoded batches and time
spent inside the model calls.

    python benchmarks/pipeline_profile.py ../shared/data/petimages [--no-compile]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from transferlab.apps.bench import forward_limit, list_images, predecoded_batches
from transferlab.data.loader import iter_batches
from transferlab.models.registry import create_backbone
from transferlab.runtime.runner import FeatureRunner


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--chunks", type=int, default=3)
    a = ap.parse_args()
    paths = list_images(a.data)
    bb = create_backbone("efficientnet_lite0")
    dc = bb.data_config
    run = FeatureRunner(bb.model, "cpu", compile=not a.no_compile, batch_size=32)
    batches = predecoded_batches(paths, dc, 256, run.batch_size, run.device)
    run(batches[0])  # warm-up (and compile)
    for k in range(a.chunks):
        m, dt = forward_limit(run, batches, 512)
        chunk = paths[k * 1024:(k + 1) * 1024]
        wait = model = 0.0
        n = 0
        t0 = tw = time.perf_counter()
        for b in iter_batches(chunk, dc, run.batch_size):
            t1 = time.perf_counter()
            wait += t1 - tw
            run(b.data)
            n += len(b.indices)
            tw = time.perf_counter()
            model += tw - t1
        total = time.perf_counter() - t0
        print(f"limit {m / dt:.0f} img/s | pipeline {n / total:.0f} img/s: waiting {wait:.2f} s, in the model "
              f"{model:.2f} s (the same calls at the limit rate: {n / (m / dt):.2f} s)", flush=True)


if __name__ == "__main__":
    main()
