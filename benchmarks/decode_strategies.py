"""Which way of overlapping JPEG decode with the model is fastest on this CPU?

Same images, same FeatureRunner (channels_last + bf16 where supported, no compile):
  decode-only   threads=1/2, no model (the decode cost alone)
  sequential    decode a batch (2 threads), then run it: no overlap, no oversubscription
  threads=K     transferlab's iter_batches (K decode threads, 2 batches ahead), decode threads
                at nice 0 / 10 / 19 (per-thread priority on Linux)
  processes=K   ProcessPoolExecutor, one task per batch slice, uint8 arrays pickled back
Usage: python benchmarks/decode_strategies.py [DATA] [--n 640] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from transferlab.apps.bench import list_images, tile
from transferlab.data.loader import decode_array, iter_batches
from transferlab.models.registry import create_backbone
from transferlab.runtime.runner import FeatureRunner

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "petimages"


def _decode_many(paths, dc) -> np.ndarray:
    return np.stack([decode_array(p, dc) for p in paths])


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", nargs="?", type=Path, default=SHARED)
    ap.add_argument("--n", type=int, default=640)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    bb = create_backbone()
    dc = bb.data_config
    files = list_images(a.data)
    paths = tile(files[:: max(1, len(files) // a.n)], a.n)
    bs = a.batch_size
    run = FeatureRunner(bb.model, "cpu", batch_size=bs)
    starts = range(0, len(paths), bs)
    res: dict = {"images": len(paths), "data": str(a.data), "settings": run.settings}

    def as_batch(arr: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(arr).permute(0, 3, 1, 2)

    run(as_batch(_decode_many(paths[:bs], dc)))  # warm-up
    for k in (1, 2):
        with ThreadPoolExecutor(k) as pool:
            res[f"decode_only_threads{k}"] = len(paths) / timed(
                lambda pool=pool: list(pool.map(lambda p: decode_array(p, dc), paths)))
    pre = [as_batch(_decode_many(paths[s:s + bs], dc)) for s in starts[:4]]
    res["forward_only"] = len(paths) / timed(lambda: [run(pre[i % len(pre)]) for i in range(len(starts))])

    def sequential():
        with ThreadPoolExecutor(2) as pool:
            for s in starts:
                chunk = paths[s:s + bs]
                run(as_batch(np.stack(list(pool.map(lambda p: decode_array(p, dc), chunk)))))

    res["sequential_2threads"] = len(paths) / timed(sequential)
    for k in (1, 2):
        for nice in (0, 10, 19):
            res[f"overlap_threads{k}_nice{nice}"] = len(paths) / timed(
                lambda k=k, nice=nice: [run(b.data) for b in iter_batches(paths, dc, bs, k, nice=nice)])
    res["forward_only_again"] = len(paths) / timed(
        lambda: [run(pre[i % len(pre)]) for i in range(len(starts))])

    for k in (1, 2):
        def procs(k=k):
            with ProcessPoolExecutor(k) as pool:
                futs = [pool.submit(_decode_many, paths[s:s + bs], dc) for s in starts]
                for f in futs:
                    run(as_batch(f.result()))
        res[f"overlap_processes{k}"] = len(paths) / timed(procs)
    print(json.dumps({k: (round(v, 1) if isinstance(v, float) else v) for k, v in res.items()}, indent=2))


if __name__ == "__main__":
    main()
