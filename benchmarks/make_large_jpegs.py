"""Make a set of large JPEGs (default 2000x1500) by upscaling shared photos into a temp dir.

Used to show what draft decoding buys on camera-sized files. Writes only under OUT (never into
../shared). Usage: python benchmarks/make_large_jpegs.py OUT [--n 256] [--size 2000x1500]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "petimages"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--size", default="2000x1500")
    ap.add_argument("--src", type=Path, default=SHARED)
    a = ap.parse_args()
    w, h = (int(v) for v in a.size.split("x"))
    srcs = sorted(a.src.rglob("*.jpg"))[:: max(1, len(list(a.src.rglob("*.jpg"))) // a.n)][: a.n]
    a.out.mkdir(parents=True, exist_ok=True)
    for i, p in enumerate(srcs):
        with Image.open(p) as im:
            big = im.convert("RGB").resize((w, h), Image.Resampling.BICUBIC)
            big.save(a.out / f"{i:05d}.jpg", quality=90)
    print(f"wrote {len(srcs)} {w}x{h} JPEGs to {a.out}")


if __name__ == "__main__":
    main()
