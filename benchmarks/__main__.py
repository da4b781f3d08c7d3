"""``python -m benchmarks list | run [NAME...] [--quick|--long] [--out DIR] | report`` (from the repository root).

``run`` with no names runs every benchmark; results go to ``benchmarks/results/<cpu-kind>/``
(or ``DIR/<cpu-kind>/``). The default preset (full) is sized to take about half an hour for
everything on a 2-core AVX2 CPU; ``--long`` runs the whole data sets. A full or long run refuses
to start on a busy machine unless ``--force`` (its results are then marked contended);
``--quick`` (tiny inputs, seconds) never refuses.
``report`` writes BENCHMARKS.md from the committed results.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .core import load_all
from .harness import RESULTS, run_many
from .machine import cpu_kind


def _list(_: argparse.Namespace) -> int:
    benches = load_all()
    total = sum(b.minutes for b in benches.values())
    print(f"{'name':<12} {'area':<10} {'full, min':>9}  what it measures")
    for b in benches.values():
        print(f"{b.name:<12} {b.area:<10} {b.minutes:>9g}  {b.about}")
    print(f"all: about {total:g} min for the full preset on a quiet 2-core AVX2 machine; this CPU kind: {cpu_kind()}")
    return 0


def _run(a: argparse.Namespace) -> int:
    benches = load_all()
    unknown = [n for n in a.names if n not in benches]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)} (choose from {', '.join(benches)})", file=sys.stderr)
        return 2
    chosen = [benches[n] for n in a.names] if a.names else list(benches.values())
    preset = "quick" if a.quick else "long" if a.long else "full"
    return run_many(chosen, preset, Path(a.out) if a.out else RESULTS, force=a.force)


def _report(a: argparse.Namespace) -> int:
    from .report import write_report

    path = write_report(Path(a.results) if a.results else RESULTS, Path(a.output) if a.output else None)
    print(f"written: {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the benchmarks, what each measures, how long a full run takes").set_defaults(fn=_list)
    r = sub.add_parser("run", help="run benchmarks (all when no NAME is given)")
    r.add_argument("names", nargs="*", metavar="NAME")
    size = r.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="tiny inputs, seconds each: checks that it works")
    size.add_argument("--long", action="store_true", help="the whole data sets (hours on a 2-core CPU)")
    r.add_argument("--out", metavar="DIR", help="write results under DIR instead of benchmarks/results")
    r.add_argument("--force", action="store_true", help="run a full preset on a busy machine (marked contended)")
    r.set_defaults(fn=_run)
    rep = sub.add_parser("report", help="write BENCHMARKS.md from the results")
    rep.add_argument("--results", metavar="DIR", help="results folder (default: benchmarks/results)")
    rep.add_argument("--output", metavar="FILE", help="where to write (default: BENCHMARKS.md at the root)")
    rep.set_defaults(fn=_report)
    a = ap.parse_args(argv)
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
