"""The catalog with accounts on, under load and over time: a real `serve` process (its own
interpreter, 127.0.0.1) on a fresh catalog with one volunteer account, driven with its API token.

1. load: N POST /api/predict (real Oxford photos, heat map on), C at a time: errors, p50/p95;
2. soak: M more predictions, the server's RSS (/proc/PID/status) sampled every 100: is it flat
   after warm-up (within 10 %)?

    python benchmarks/serve_soak.py --model efficientnet_lite0 --requests 200 --concurrency 8 --soak 2000
    python benchmarks/serve_soak.py --model /tmp/export-dir --json          # the ONNX path

Timings are only meaningful on a quiet machine; RSS is meaningful anywhere.
"""

from __future__ import annotations

import argparse
import glob
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "oxford-pets-subset" / "images" / "*.jpg"
SERVER = ("import sys; from transferlab.apps.serve import Settings, run_server; "
          "run_server(Settings(model=sys.argv[1], db=sys.argv[2], port=int(sys.argv[3]), log_level='warning'))")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def fire(url: str, token: str, photos: list[bytes], n: int, concurrency: int, heatmap: bool,
         every=None) -> list[tuple[float, int]]:
    """``n`` predictions, ``concurrency`` in flight; (latency s, status) each. ``every(i)`` is
    called after each 100th completion (RSS sampling)."""
    local, done, lock = threading.local(), [0], threading.Lock()

    def one(i: int) -> tuple[float, int]:
        if not hasattr(local, "c"):
            local.c = httpx.Client(base_url=url, timeout=300, headers={"authorization": f"Bearer {token}"})
        t0 = time.perf_counter()
        try:
            status = local.c.post("/api/predict", params={"heatmap": str(heatmap).lower()},
                                  files={"file": (f"{i}.jpg", photos[i % len(photos)], "image/jpeg")}).status_code
        except httpx.HTTPError:
            status = -1
        with lock:
            done[0] += 1
            if every and done[0] % 100 == 0:
                every(done[0])
        return time.perf_counter() - t0, status

    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(one, range(n)))


def summary(results: list[tuple[float, int]], wall: float) -> dict:
    lat = sorted(t for t, _ in results)
    return {"requests": len(results), "errors": sum(s != 200 for _, s in results), "wall_s": round(wall, 1),
            "req_per_s": round(len(results) / wall, 2), "p50_ms": round(1e3 * statistics.median(lat), 1),
            "p95_ms": round(1e3 * lat[min(len(lat) - 1, int(0.95 * len(lat)))], 1), "max_ms": round(1e3 * lat[-1], 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="efficientnet_lite0", help="export dir, run dir or backbone name")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--soak", type=int, default=2000, help="predictions for the RSS check (0: skip)")
    ap.add_argument("--soak-concurrency", type=int, default=4)
    ap.add_argument("--no-heatmap", action="store_true")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    photos = [Path(f).read_bytes() for f in sorted(glob.glob(str(DATA)))[:64]]
    if not photos:
        raise SystemExit(f"no photos match {DATA}")
    from transferlab.apps.serve.accounts import open_accounts

    with tempfile.TemporaryDirectory(prefix="serve-soak-") as tmp:
        db = str(Path(tmp) / "catalog.sqlite")
        acc = open_accounts(db)
        acc.add("bench", "volunteer", "bench-password", actor="benchmark")
        token = acc.token("bench", actor="benchmark")
        acc.close()
        port = _free_port()
        proc = subprocess.Popen([sys.executable, "-c", SERVER, a.model, db, str(port)])
        url = f"http://127.0.0.1:{port}"
        try:
            _wait(url, proc)
            res = run(url, token, photos, proc.pid, a)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    res["model"] = a.model
    print(json.dumps(res) if a.json else json.dumps(res, indent=2))


def run(url: str, token: str, photos: list[bytes], pid: int, a) -> dict:
    heat = not a.no_heatmap
    assert httpx.get(url + "/api/pets").status_code == 401, "accounts are not on"
    fire(url, token, photos, 3, 1, heat)  # first-call costs are not load
    t0 = time.perf_counter()
    load = summary(fire(url, token, photos, a.requests, a.concurrency, heat), time.perf_counter() - t0)
    out = {"load": load, "rss_mb_start": round(rss_mb(pid), 1), "heatmap": heat}
    if a.soak:
        samples: list[tuple[int, float]] = []
        t0 = time.perf_counter()
        soak = fire(url, token, photos, a.soak, a.soak_concurrency, heat,
                    every=lambda i: samples.append((i, round(rss_mb(pid), 1))))
        out["soak"] = summary(soak, time.perf_counter() - t0)
        warm = [r for i, r in samples if i >= a.soak // 10]  # after the first tenth: warmed up
        out["rss_mb"] = samples
        out["rss_after_warmup_mb"] = {"first": warm[0], "last": warm[-1], "min": min(warm), "max": max(warm),
                                      "growth_pct": round(100 * (warm[-1] - warm[0]) / warm[0], 1),
                                      "spread_pct": round(100 * (max(warm) - min(warm)) / min(warm), 1)}
    return out


def _wait(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with code {proc.returncode}")
        try:
            httpx.get(url + "/login", timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.25)
    raise SystemExit("the server did not answer in time")


if __name__ == "__main__":
    main()
