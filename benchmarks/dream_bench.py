"""Issue 4 benchmark: ideal-class images on efficientnet_lite0, scored on the saved 8-bit PNGs.

1. ``plain`` (the lesson's 10·CE + 0.005·TV on raw pixels), "Siamese cat", seed 0, and its
   ``--tv 0`` noisy variant: own-model probability, and whether mobilenet_v2 agrees.
2. ``lucid`` (defaults) for 10 ImageNet classes, seed 0: own-model probability (goal >= 0.9)
   and mobilenet_v2's top-1 (goal: = target), plus wall time per image on this machine.

    .venv/bin/python benchmarks/dream_bench.py --out /tmp/issue4 [--threads 2]

Writes one PNG per image, a grid, and results.json under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

CLASSES = ["Siamese cat", "zebra", "goldfish", "espresso", "pizza", "golden retriever", "school bus",
           "volcano", "daisy", "lemon"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("/tmp/issue4"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=None, help="lucid steps (default: the library's)")
    ap.add_argument("--classes", default=",".join(CLASSES))
    ap.add_argument("--skip-plain", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from transferlab.explain.dream import dream

    a.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []

    def record(r, name: str) -> None:
        r.save(a.out / f"{name}.png")
        d = r.to_dict() | {"name": name, "load_avg_1m": os.getloadavg()[0]}
        rows.append(d)
        c = r.check
        print(f"{name:28s} p_own={r.prob:.3f}  mobilenet_v2 top1={c['top'][0][0]} ({c['top'][0][1]:.2f})"
              f" p_target={c['prob']:.3f}  {r.seconds:.1f} s  load={d['load_avg_1m']:.1f}", flush=True)

    if not a.skip_plain:
        for tv in (0.005, 0.0):
            r = dream("Siamese cat", method="plain", tv=tv, seed=a.seed, check_with="mobilenet_v2",
                      progress=False)
            record(r, f"plain_tv{tv:g}_siamese_cat")
    images = []
    for cls in a.classes.split(","):
        r = dream(cls, method="lucid", steps=a.steps, seed=a.seed, check_with="mobilenet_v2", progress=False)
        record(r, "lucid_" + cls.replace(" ", "_"))
        images.append(r.image)
    lucid = [d for d in rows if d["method"] == "lucid"]
    summary = {
        "lucid_images": len(lucid),
        "lucid_own_prob_ge_0.9": sum(d["prob"] >= 0.9 for d in lucid),
        "lucid_check_top1_is_target": sum(d["check"]["top1_is_target"] for d in lucid),
        "lucid_seconds_mean": round(float(np.mean([d["seconds"] for d in lucid])), 1) if lucid else None,
        "lucid_seconds_max": round(float(np.max([d["seconds"] for d in lucid])), 1) if lucid else None,
        "threads": a.threads, "cpu_count": os.cpu_count(),
    }
    print(json.dumps(summary, indent=2))
    (a.out / "results.json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=2))
    if images:
        half = (len(images) + 1) // 2
        pad = [np.zeros_like(images[0])] * (2 * half - len(images))
        grid = np.concatenate([np.concatenate(images[:half], 1), np.concatenate(images[half:] + pad, 1)], 0)
        Image.fromarray(grid).save(a.out / "lucid_grid.png")


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - t0:.0f} s")
