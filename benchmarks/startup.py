"""Start-up: how long a user waits for ``transferlab --help``, for a re-train whose features are all
cached (the second ``train`` on the same photos: no extraction, no network built), and for the
demo. Each is a fresh process, timed from outside (imports included); repeated commands report
the best and the median of their runs.
"""

from __future__ import annotations

import re
import statistics

from .core import BenchError, Preset, Result, Row, benchmark
from .machine import version
from .tools import TL, per_class, run_cmd, tl, write_csv


def _row(tool: str, recipe: str, times: list[float], **settings) -> Row:
    row = Row(tool, f"transferlab {version('transferlab')}", recipe)
    row.add("best", min(times), "s").add("median", statistics.median(times), "s").add("runs", len(times), "", 0)
    row.settings = settings
    return row


@benchmark("startup", area="startup", title="Start-up: --help, a cached re-train, the demo", minutes=3)
def startup(p: Preset) -> Result:
    """Wall time of `transferlab --help`, of a fully cached re-train, and of `transferlab demo`."""
    import transferlab as tl_api

    root = p.data / "petimages"
    if not root.is_dir():
        raise BenchError(f"PetImages not found at {root}")
    ds = tl_api.load_dataset(root)
    rows_ = per_class([(x, ds.classes[int(y)]) for x, y in zip(ds.paths, ds.labels)], p.pick(10, 1000, 3000))
    data = write_csv(p.work / "pets.csv", rows_)
    cache, reps = p.work / "cache", p.pick(1, 3)
    helps = [run_cmd([*TL, "--help"], json_out=False, cache=cache).seconds for _ in range(reps)]
    rows = [_row("transferlab --help", "transferlab --help", helps)]
    first = tl("train", data, "--out", p.work / "run-0", cache=cache, timeout=1800)
    rows.append(_row("transferlab train, first run", "transferlab train PETS (efficientnet_lite0 linear, "
                     "extracts every photo)", [first.seconds], images=len(rows_)))
    again = [tl("train", data, "--out", p.work / f"run-{i + 1}", cache=cache, timeout=600).seconds
             for i in range(p.pick(1, 3))]
    rows.append(_row("transferlab train, cached re-train", "the same command again (every feature cached)", again))
    rows.append(_demo(p))
    return Result(rows, settings={"data": f"PetImages, {len(rows_)} photos"},
                  notes=["every command is a fresh process: the times include Python's and the imports' start"])


def _demo(p: Preset) -> Row:
    recipe = "transferlab demo --out DIR (bundled data, offline, empty feature cache)"
    if p.quick:
        row = Row("transferlab demo", f"transferlab {version('transferlab')}", recipe)
        row.status, row.reason = "skipped", "the demo takes a minute or more: full preset only"
        return row
    done = run_cmd([*TL, "demo", "--out", str(p.work / "demo"), "-q"], json_out=False, cache=p.work / "cache-demo",
                   timeout=900)
    m = re.search(r"total: ([\d.]+) s", done.stdout)
    row = _row("transferlab demo", recipe, [done.seconds])
    if m:
        row.add("demo's own total", float(m.group(1)), "s", 1)
    return row
