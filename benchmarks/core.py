"""What a benchmark is: a function of a :class:`Preset` that returns a :class:`Result`.

A result is a small table: :class:`Row` objects (one tool, recipe or measurement each), each with
named :class:`Figure` values and units, plus the settings that produced them. Every row names its
tool, the tool's version and the recipe, so a peer's row says exactly what was run. A peer that
cannot run here is a row with ``status="skipped"`` and the reason, never a missing row.

Benchmarks register themselves with :func:`benchmark`; the harness (:mod:`benchmarks.harness`)
adds the machine, the date, the commit and the load, and writes the JSON.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

PRESETS = ("quick", "full", "long")
STATUSES = ("ok", "skipped", "failed")
# every module that defines benchmarks; importing it registers them (listed here, not discovered,
# so `list` is fast and the order of the report is stable)
MODULES = ("extraction", "accuracy", "serving", "startup", "attack", "dream")


class BenchError(RuntimeError):
    """A benchmark could not produce its figures (a command failed, data is missing)."""


@dataclass(frozen=True)
class Preset:
    """The size preset a benchmark runs at, and where it may write (``work``: a temp folder of
    its own, removed afterwards) and read (``data``: the shared photos)."""

    name: str  # "quick": tiny inputs, seconds (CI checks the result's shape); "full": the real figures, sized so
    # that all benchmarks take about half an hour on a 2-core AVX2 CPU; "long": the whole data sets (hours there)
    work: Path
    data: Path

    @property
    def quick(self) -> bool:
        return self.name == "quick"

    def pick(self, quick, full, long=None):
        """The value for this preset (``long`` defaults to ``full``): where a size depends on it."""
        return {"quick": quick, "full": full}.get(self.name, full if long is None else long)


@dataclass
class Figure:
    value: float | None
    unit: str  # "%", "s", "img/s", "ms", "req/s", "MB", "x", "" (a count)

    def to_dict(self) -> dict:
        return {"value": self.value, "unit": self.unit}


@dataclass
class Row:
    """One line of a benchmark's table: who ran (``tool`` and ``version``), how (``recipe``), and
    what came out (``figures``). ``settings``: everything else needed to redo it."""

    tool: str
    version: str
    recipe: str
    figures: dict[str, Figure] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    status: str = "ok"
    reason: str = ""  # why a row is skipped or failed
    note: str = ""  # e.g. where a peer beats transferlab (shown in the table)

    def add(self, name: str, value: float | None, unit: str, digits: int = 2) -> Row:
        self.figures[name] = Figure(None if value is None else round(float(value), digits), unit)
        return self

    def to_dict(self) -> dict:
        d = asdict(self)
        d["figures"] = {k: f.to_dict() for k, f in self.figures.items()}
        return d


@dataclass
class Result:
    """What a benchmark returns. ``engine``/``precision``: what transferlab ran with, where the
    benchmark learnt it (a run's config, bench's settings); the harness puts them in the machine."""

    rows: list[Row]
    settings: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    engine: str | None = None
    precision: str | None = None

    def to_dict(self) -> dict:
        return {"settings": self.settings, "notes": self.notes, "rows": [r.to_dict() for r in self.rows]}


@dataclass(frozen=True)
class Benchmark:
    name: str
    area: str
    title: str
    fn: Callable[[Preset], Result]
    minutes: float  # estimated wall time of the full preset on a quiet 2-core AVX2 machine
    about: str  # one line: what it measures


REGISTRY: dict[str, Benchmark] = {}


def benchmark(name: str, *, area: str, title: str, minutes: float):
    """Register ``fn(preset) -> Result`` under ``name``; its docstring's first line is its summary."""

    def deco(fn: Callable[[Preset], Result]):
        about = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else title
        REGISTRY[name] = Benchmark(name, area, title, fn, minutes, about)
        return fn

    return deco


def load_all() -> dict[str, Benchmark]:
    for m in MODULES:
        importlib.import_module(f"benchmarks.{m}")
    return REGISTRY
