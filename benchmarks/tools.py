"""What the benchmarks share: running the ``transferlab`` CLI (and peer scripts) as timed
subprocesses with a feature cache of their own, and the data splits every tool gets.

Benchmarks drive transferlab through its CLI (``python -m transferlab ... --json``) and its public
names only, so that they keep working while the library's insides change, and so that every
figure is what a user typing the command gets, imports and all.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .core import BenchError
from .machine import REPO

TL = [sys.executable, "-m", "transferlab"]
TAIL = 600  # characters of stderr quoted in an error


@dataclass
class Done:
    """A finished command: its parsed ``--json`` stdout (None when it printed none), wall seconds."""

    out: object
    seconds: float
    stdout: str
    stderr: str


def env_with(cache: Path | None = None, **extra: str) -> dict:
    env = dict(os.environ)
    env.pop("TRANSFERLAB_DEBUG", None)
    if cache is not None:
        env["TRANSFERLAB_CACHE"] = str(cache)
    env.update(extra)
    return env


def run_cmd(cmd: list[str], *, cache: Path | None = None, timeout: float = 1800, json_out: bool = True,
            env: dict | None = None, cwd: Path | None = None) -> Done:
    """Run ``cmd`` to completion (bounded by ``timeout``), timed; a non-zero exit is a BenchError
    quoting the end of its stderr."""
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd or REPO,
                           env=env or env_with(cache), stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{' '.join(cmd[:6])} ... ran past {timeout:.0f} s") from None
    seconds = time.perf_counter() - t0
    if p.returncode != 0:
        raise BenchError(f"{' '.join(map(str, cmd[2:8]))} ... exited {p.returncode}: {p.stderr.strip()[-TAIL:]}")
    out = None
    if json_out and p.stdout.strip():
        try:
            out = json.loads(p.stdout)
        except ValueError:
            raise BenchError(f"{' '.join(cmd[2:6])}: stdout is not JSON: {p.stdout[:200]!r}") from None
    return Done(out, seconds, p.stdout, p.stderr)


def tl(*args, cache: Path | None = None, timeout: float = 1800, env: dict | None = None) -> Done:
    """``transferlab ARGS --json -q`` (quiet, machine-readable) as a user would run it."""
    return run_cmd([*TL, *map(str, args), "--json", "-q"], cache=cache, timeout=timeout, env=env)


def need(path: Path, what: str) -> Path:
    if not path.exists():
        raise BenchError(f"{what} not found at {path} (set TRANSFERLAB_BENCH_DATA to the shared data folder)")
    return path


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    """A ``path,label`` CSV (a DATA format every transferlab command reads) outside the data folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label"])
        w.writerows(rows)
    return path


def read_csv(path: Path) -> list[tuple[str, str]]:
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    return [(r[0], r[1]) for r in rows[1:] if len(r) >= 2]


def per_class(rows: list[tuple[str, str]], n: int, classes: int | None = None) -> list[tuple[str, str]]:
    """The first ``n`` rows of each of the first ``classes`` classes (sorted): tiny, balanced sets."""
    names = sorted({label for _, label in rows})[:classes]
    out = []
    for c in names:
        out += [r for r in rows if r[1] == c][:n]
    return out


def shorten(text: str, n: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 3] + "..."
