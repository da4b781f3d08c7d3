"""Which machine a figure belongs to, and whether something else was using it meanwhile.

The CPU kind (``avx2``, ``avx512_bf16``, ``amx_bf16``: the highest of those flags present) names
the results folder, because the engines rank differently on each (BENCHMARKS.md, methods). Load
is judged two ways: the load average before a benchmark (a full run refuses to start on a busy
machine), and the CPU time other processes took while it ran (``/proc/stat`` busy time minus our
own and our children's), which the load average cannot tell apart from our own work.
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KINDS = ("amx_bf16", "avx512_bf16", "avx2")  # highest first
# flags the kernels of torch (oneDNN) and onnxruntime (MLAS) dispatch on: what a reader compares
FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni", "avx512_bf16",
         "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve", "bf16", "i8mm")
PACKAGES = ("transferlab", "torch", "torchvision", "timm", "onnxruntime", "numpy", "scikit-learn", "pillow",
            "fastai")
# a full run refuses to start above this 1-minute load per core; a benchmark is marked contended
# when other processes took more than this share of all cores while it ran
BUSY_LOAD_PER_CORE = 0.5
CONTENDED_SHARE = 0.25


def _cpuinfo() -> tuple[str, set[str]]:
    model, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "Model") and not model:
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        model = platform.processor() or platform.machine()
    return model or "unknown", flags


def cpu_kind() -> str:
    """``amx_bf16``, ``avx512_bf16`` or ``avx2`` (the highest present), else the machine name."""
    _, flags = _cpuinfo()
    return next((k for k in KINDS if k in flags), platform.machine().lower() or "unknown")


def version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict:
    model, flags = _cpuinfo()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    mem = None
    with contextlib.suppress(ValueError, OSError, AttributeError):
        mem = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    return {"cpu_kind": cpu_kind(), "cpu_model": model, "flags": sorted(flags & set(FLAGS)), "cores": cores,
            "memory_gib": mem, "python": platform.python_version(), "platform": platform.platform(),
            "versions": {p: version(p) for p in PACKAGES}}


def git_commit() -> dict:
    """The commit the figures belong to, and whether the tracked files differed from it."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"commit": git("rev-parse", "HEAD") or None,
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def busy_load() -> bool:
    """Whether the machine is already busy: a full run should not start now."""
    la = load_average()
    return bool(la) and la[0] > BUSY_LOAD_PER_CORE * (os.cpu_count() or 1)


def _busy_seconds() -> float | None:
    """Busy CPU seconds of the whole machine so far (all cores; idle and iowait excluded)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@dataclass
class CpuMeter:
    """CPU share other processes took between ``start()`` and ``stop()``: the machine's busy time
    minus this process's and its waited-for children's, over wall time x cores."""

    t0: float = 0.0
    busy0: float | None = None
    own0: float = 0.0

    def start(self) -> CpuMeter:
        self.t0, self.busy0, self.own0 = time.monotonic(), _busy_seconds(), _own_seconds()
        return self

    def stop(self) -> float | None:
        busy = _busy_seconds()
        wall = time.monotonic() - self.t0
        if busy is None or self.busy0 is None or wall <= 0:
            return None
        others = (busy - self.busy0) - (_own_seconds() - self.own0)
        return round(max(0.0, others) / (wall * (os.cpu_count() or 1)), 3)
