"""``transferlab demo``: the whole tool on bundled data, offline, in a few minutes on 2 cores,
ending in ``report.html``. Each pipeline stage contributes one section, a module here:
``f(out_dir, quiet) -> {"title", "figures", "text"}`` (the library modules stay free of demo code).
"""

from __future__ import annotations

import time
from pathlib import Path

from .attack import attack_section
from .classify import classify_section
from .digits import digits_section
from .dream import dream_section
from .featuremaps import featuremaps_section
from .report import write_report

SECTIONS = (classify_section, digits_section, featuremaps_section, dream_section, attack_section)

__all__ = ["SECTIONS", "run_demo", "write_report"]


def run_demo(out: str | Path = "demo-out", quiet: bool = False, log=print) -> Path:
    """Run every section, write ``report.html``; returns its path. Logs each section's seconds and
    the total (the target is 2 minutes on 2 quiet cores)."""
    start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sections = []
    for step in SECTIONS:
        t0 = time.perf_counter()
        sec = step(out, quiet=quiet)
        sec["seconds"] = round(time.perf_counter() - t0, 1)
        sections.append(sec)
        log(f"== {sec['title']} ({sec['seconds']} s)")
        for line in sec.get("text", []):
            log(f"   {line}")
    total = round(time.perf_counter() - start, 1)
    report = write_report(out, sections, total)
    figures = [str(f) for s in sections for f in s.get("figures", [])]
    log("figures:")
    for f in figures:
        log(f"  {f}")
    log(f"report: {report}")
    log(f"total: {total} s ({' + '.join(str(s['seconds']) for s in sections)} s in sections)")
    return report
