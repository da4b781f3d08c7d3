"""Serving: ``POST /api/predict`` latency (p50, p95) and requests/s at 1 and 8 concurrent clients,
for the ONNX export and for the PyTorch run directory, each served by ``transferlab serve`` in its
own process on 127.0.0.1 (a fresh catalog in a temp folder). Real Oxford photos, cycled; the heat
map on (the endpoint's default, what the web page asks for). Traffic goes to 127.0.0.1 only, and
every request and the whole load are bounded by timeouts.
"""

from __future__ import annotations

import socket
import statistics
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from .core import BenchError, Preset, Result, Row, benchmark
from .machine import version
from .tools import TL, env_with, per_class, tl, write_csv

HOST = "127.0.0.1"
REQUEST_TIMEOUT = 120.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@contextmanager
def served(model: Path, work: Path, tag: str):
    """``transferlab serve MODEL`` on a free loopback port; yields (base URL, seconds to ready)."""
    import httpx

    port, log = _free_port(), (work / f"serve-{tag}.log").open("w")
    cmd = [*TL, "serve", str(model), "--db", str(work / f"catalog-{tag}.sqlite"), "--host", HOST, "--port", str(port)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env_with(work / f"cache-serve-{tag}"))
    url = f"http://{HOST}:{port}"
    try:
        while True:
            if proc.poll() is not None:
                tail = (work / f"serve-{tag}.log").read_text()[-400:]
                raise BenchError(f"transferlab serve exited {proc.returncode}: {tail}")
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.perf_counter() - t0 > 180:
                raise BenchError("transferlab serve did not answer /healthz within 180 s")
            time.sleep(0.2)
        yield url, time.perf_counter() - t0
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def load(url: str, photos: list[bytes], n: int, clients: int) -> dict:
    """``n`` predictions, ``clients`` in flight; after 2 warm-up requests (first-call costs are not load)."""
    import httpx

    local = threading.local()

    def one(i: int) -> tuple[float, int]:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT)
        t0 = time.perf_counter()
        try:
            r = local.client.post("/api/predict", files={"file": (f"{i}.jpg", photos[i % len(photos)], "image/jpeg")})
            status = r.status_code
        except httpx.HTTPError:
            status = -1
        return time.perf_counter() - t0, status

    for i in range(2):
        one(i)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, range(n)))
    wall = time.perf_counter() - t0
    lat = sorted(t for t, _ in results)
    return {"wall": wall, "req_s": n / wall, "p50": 1e3 * statistics.median(lat),
            "p95": 1e3 * lat[min(n - 1, int(0.95 * n))], "errors": sum(s != 200 for _, s in results)}


def _model(p: Preset) -> tuple[Path, Path, list[Path], str]:
    """A breeds classifier (efficientnet_lite0 linear probe) as a run directory and as its ONNX export."""
    import transferlab as tl_api

    root = p.data / "oxford-pets-subset"
    if not root.is_dir():
        raise BenchError(f"Oxford subset not found at {root}")
    ds, test = tl_api.load_dataset(root, split="trainval"), tl_api.load_dataset(root, split="test")
    rows = [(pth, ds.classes[int(y)]) for pth, y in zip(ds.paths, ds.labels)]
    if p.quick:
        rows = per_class(rows, 6, 3)
    data = write_csv(p.work / "train.csv", rows)
    run, export, cache = p.work / "run", p.work / "export", p.work / "cache"
    tl("train", data, "--out", run, cache=cache, timeout=1200)
    photos = [Path(x) for x in test.paths[:: max(1, len(test.paths) // 32)]][:32]
    verify = [a for f in photos[:4] for a in ("--verify", f)]
    tl("export", run, "--format", "onnx", "--out", export, *verify, cache=cache, timeout=600)
    breeds = len({r[1] for r in rows})
    return run, export, photos, f"efficientnet_lite0 linear probe on {len(rows)} photos, {breeds} breeds"


@benchmark("serving", area="serving", title="Web app: POST /api/predict under load", minutes=2)
def serving(p: Preset) -> Result:
    """p50/p95 latency and req/s of /api/predict at 1 and 8 clients, ONNX export vs PyTorch run."""
    run, export, photos, about = _model(p)
    blobs = [f.read_bytes() for f in photos]
    counts = {1: p.pick(4, 40), 8: p.pick(8, 160)}
    rows = []
    for path_name, model in (("ONNX export", export), ("PyTorch run", run)):
        with served(model, p.work, path_name.split()[0].lower()) as (url, ready):
            for clients, n in counts.items():
                r = load(url, blobs, n, clients)
                row = Row(f"transferlab serve, {path_name}", f"transferlab {version('transferlab')}",
                          f"{n} POST /api/predict (heat map on), {clients} client(s) at a time, 127.0.0.1")
                row.add("p50", r["p50"], "ms", 1).add("p95", r["p95"], "ms", 1).add("throughput", r["req_s"], "req/s")
                row.add("errors", r["errors"], "", 0).add("ready after", ready, "s", 1)
                row.settings = {"requests": n, "clients": clients, "model": path_name,
                                "wall_seconds": round(r["wall"], 2)}
                rows.append(row)
    return Result(rows, settings={"model": about, "photos": len(blobs), "server": "transferlab serve (uvicorn)"},
                  notes=["predictions run one at a time in the server, so at 8 clients p50 is mostly queueing"],
                  engine="onnxruntime (export) / run's engine (PyTorch path)")
