"""The search's clock: one place decides whether a piece of work still fits the budget, so that
every stage (extraction, cross-validation) asks the same question and the final fit always has
its reserve."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

# Kept back for the final fit, the validation scores and writing the run: a share of the budget,
# and at least this many seconds (a short budget still ends with a written run).
RESERVE, RESERVE_S = 0.05, 15.0


@dataclass
class Clock:
    """Seconds since the search started, against its budget."""

    budget: float
    start: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def allows(self, seconds: float) -> bool:
        """Whether work of ``seconds`` still fits, keeping back the reserve for the final fit,
        the validation scores and writing the run."""
        return self.elapsed() + seconds <= self.budget - max(RESERVE_S, RESERVE * self.budget)
