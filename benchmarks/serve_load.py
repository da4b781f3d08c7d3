"""Load on the catalog's predict endpoint: N POST /api/predict (real photos, heat map included),
C at a time, over loopback HTTP against a real uvicorn server; prints errors, p50/p95 latency and
requests per second.

    python benchmarks/serve_load.py                                  # starts its own server
    python benchmarks/serve_load.py --model runs/breeds-export --requests 200 --concurrency 8
    python benchmarks/serve_load.py --url http://127.0.0.1:8000      # an already running server

Without --url the server runs in a subprocess (so the load generator does not share its GIL) on
a fresh catalog in a temp dir, bound to 127.0.0.1.
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
from contextlib import contextmanager
from pathlib import Path

import httpx

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "oxford-pets-subset" / "images" / "*.jpg"
SERVER = ("import sys; from transferlab.apps.serve import Settings, run_server; "
          "run_server(Settings(model=sys.argv[1], db=sys.argv[2], port=int(sys.argv[3]), log_level='warning'))")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def started_server(model: str):
    """A `serve` process on a temp catalog; yields its base URL once /healthz answers."""
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        port = _free_port()
        proc = subprocess.Popen([sys.executable, "-c", SERVER, model, str(Path(tmp) / "catalog.sqlite"), str(port)])
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(url, proc)
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with code {proc.returncode}")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise SystemExit("the server did not answer /healthz in time")


def run_load(url: str, photos: list[bytes], n: int, concurrency: int, heatmap: bool) -> dict:
    """Fire ``n`` predictions, ``concurrency`` in flight; latency per request in seconds."""
    local = threading.local()

    def one(i: int) -> tuple[float, int]:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=url, timeout=120)
        t0 = time.perf_counter()
        try:
            r = local.client.post("/api/predict", params={"heatmap": str(heatmap).lower()},
                                  files={"file": (f"{i}.jpg", photos[i % len(photos)], "image/jpeg")})
            status = r.status_code
        except httpx.HTTPError:
            status = -1
        return time.perf_counter() - t0, status

    for i in range(min(3, n)):  # warm-up: first-call costs are not load
        one(i)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, range(n)))
    wall = time.perf_counter() - t0
    lat = sorted(t for t, _ in results)
    errors = sum(s != 200 for _, s in results)
    return {"requests": n, "concurrency": concurrency, "errors": errors, "wall_s": round(wall, 2),
            "req_per_s": round(n / wall, 2), "p50_ms": round(1e3 * statistics.median(lat), 1),
            "p95_ms": round(1e3 * lat[min(len(lat) - 1, int(0.95 * len(lat)))], 1),
            "max_ms": round(1e3 * lat[-1], 1), "heatmap": heatmap}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="efficientnet_lite0", help="export dir, run dir or backbone name")
    ap.add_argument("--url", help="benchmark this running server instead of starting one")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--images", default=str(DATA), help="glob of photos to send (cycled)")
    ap.add_argument("--no-heatmap", action="store_true", help="skip the Grad-CAM heat map")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    files = sorted(glob.glob(a.images))[:64]
    if not files:
        raise SystemExit(f"no photos match {a.images}")
    photos = [Path(f).read_bytes() for f in files]
    if a.url:
        res = run_load(a.url.rstrip("/"), photos, a.requests, a.concurrency, not a.no_heatmap)
    else:
        with started_server(a.model) as url:
            res = run_load(url, photos, a.requests, a.concurrency, not a.no_heatmap)
    res["model"] = a.model if not a.url else a.url
    if a.json:
        print(json.dumps(res))
        return
    print(f"{res['requests']} POST /api/predict, {res['concurrency']} concurrent, heat map "
          f"{'on' if res['heatmap'] else 'off'}, model {res['model']}")
    print(f"errors: {res['errors']}   p50 {res['p50_ms']} ms   p95 {res['p95_ms']} ms   max {res['max_ms']} ms   "
          f"{res['req_per_s']} req/s ({res['wall_s']} s)")


if __name__ == "__main__":
    main()
