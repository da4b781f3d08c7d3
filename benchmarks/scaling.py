"""Scaling: `transferlab bench` at 1k, 6k and 24k images (tiling the shared set), each in a fresh
process, to show time linear in N and flat peak RSS (features stream to cache shards).
Usage: python benchmarks/scaling.py [--sizes 1000,6000,24000] [--data DIR] [--compile]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

EXE = Path(sys.executable).with_name("transferlab")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,6000,24000")
    ap.add_argument("--data", default=None)
    ap.add_argument("--compile", action="store_true")
    a = ap.parse_args()
    rows = []
    for n in (int(s) for s in a.sizes.split(",")):
        cmd = [str(EXE), "bench", "--limit", str(n), "--naive-limit", "0", "--json",
               "--compile" if a.compile else "--no-compile"]
        if a.data:
            cmd += ["--data", a.data]
        r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        p = r["pipeline"]
        rows.append({"images": n, "seconds": round(p["seconds"], 1), "img_s": round(p["img_s"], 1),
                     "ms_per_img": round(1000 * p["seconds"] / n, 2),
                     "pipeline_peak_rss_mb": round(p["peak_rss_mb"]),
                     "b/c": round(r["ratios"]["b/c"], 3)})
        print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({"settings": r["settings"], "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
