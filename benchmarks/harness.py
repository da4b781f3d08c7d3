"""Run benchmarks and write one JSON file per benchmark: ``<out>/<cpu-kind>/<name>.json``.

Each benchmark runs in a temp folder of its own (removed afterwards), with the machine, the date,
the commit and the load recorded around it. A benchmark that raises is written as a ``failed``
result carrying the error (so a broken benchmark shows up in the report instead of vanishing),
and the run's exit status says so.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from . import machine
from .core import Benchmark, Preset, Result
from .schema import SCHEMA, problems

RESULTS = Path(__file__).resolve().parent / "results"


def data_root() -> Path:
    """The shared photos: ``$TRANSFERLAB_BENCH_DATA``, else ``../shared/data`` beside the checkout
    (as CI has it), else ``shared/data`` inside it (the lent GPU machine's copy)."""
    env = os.environ.get("TRANSFERLAB_BENCH_DATA")
    if env:
        return Path(env)
    beside = machine.REPO.parent / "shared" / "data"
    return beside if beside.is_dir() else machine.REPO / "shared" / "data"


def result_path(out: Path, name: str) -> Path:
    return out / machine.cpu_kind() / f"{name}.json"


def _write(path: Path, obj: dict) -> None:
    """Whole file or nothing (temp file + rename): a killed run never leaves half a result."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def run_one(b: Benchmark, preset_name: str, out: Path, busy_at_start: bool = False) -> dict:
    """Run one benchmark and write its result; returns the result object. Contended: the run
    started on a busy machine (``busy_at_start``), or other processes took more than
    :data:`machine.CONTENDED_SHARE` of the CPU meanwhile. Not the load average before each
    benchmark: that 1-minute average still holds the previous benchmark of the same run."""
    before, started = machine.load_average(), datetime.now(timezone.utc)
    meter = machine.CpuMeter().start()
    t0 = time.perf_counter()
    error, res = None, Result(rows=[])
    with tempfile.TemporaryDirectory(prefix=f"tl-bench-{b.name}-") as tmp:
        try:
            res = b.fn(Preset(preset_name, Path(tmp), data_root()))
        except Exception as e:  # any failure becomes a failed result the report shows
            error = f"{type(e).__name__}: {e}"
            if os.environ.get("TRANSFERLAB_DEBUG"):
                traceback.print_exc()
    seconds = time.perf_counter() - t0
    others = meter.stop()
    info = machine.machine_info() | {"engine": res.engine, "precision": res.precision}
    contended = busy_at_start or (others is not None and others > machine.CONTENDED_SHARE)
    obj = {"schema": SCHEMA, "benchmark": b.name, "area": b.area, "title": b.title, "preset": preset_name,
           "status": "failed" if error else "ok", **({"error": error} if error else {}),
           "date": started.strftime("%Y-%m-%dT%H:%M:%SZ"), "seconds": round(seconds, 1), "git": machine.git_commit(),
           "machine": info,
           "load": {"before": before, "after": machine.load_average(), "others_cpu_share": others,
                    "contended": bool(contended)},
           **res.to_dict()}
    bad = problems(obj)
    if bad:  # the benchmark's own bug: keep the figures, but say the file does not validate
        obj["status"], obj["error"] = "failed", "result does not validate: " + "; ".join(bad[:5])
    _write(result_path(out, b.name), obj)
    return obj


def run_many(benches: list[Benchmark], preset_name: str, out: Path, *, force: bool = False,
             log: Callable[[str], None] = print) -> int:
    """Run ``benches`` in order; 0 when all succeeded, 1 when any failed, 3 when a full run
    refused to start because the machine is busy (``force`` runs anyway, marked contended)."""
    busy = machine.busy_load()
    if preset_name != "quick" and busy:
        la = machine.load_average()
        if not force:
            log(f"refusing a {preset_name} run: load average {la} on {os.cpu_count()} cores (figures would measure the "
                "other work); wait for a quiet machine, or pass --force to run anyway, marked contended")
            return 3
        log(f"load average {la}: running anyway (--force); every result is marked contended")
    failed = 0
    for b in benches:
        log(f"== {b.name} ({preset_name}, about {b.minutes:g} min full on 2-core AVX2)")
        obj = run_one(b, preset_name, out, busy_at_start=busy)
        status = obj["status"] + (" (contended)" if obj["load"]["contended"] else "")
        log(f"   {status} in {obj['seconds']} s -> {result_path(out, b.name)}")
        if obj["status"] == "failed":
            failed += 1
            log(f"   error: {obj['error']}")
    return 1 if failed else 0
