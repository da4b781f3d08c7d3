"""One progress bar helper for every long loop: rich on a terminal, silent otherwise."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

QUIET = False  # set by the CLI's --quiet


def enabled() -> bool:
    return not QUIET and sys.stderr.isatty()


@contextmanager
def bar(description: str, total: int | None):
    """Yields ``advance(n=1, **fields)``; a no-op when progress is off."""
    if not enabled():
        yield lambda n=1, **kw: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    cols = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
    ]
    with Progress(*cols, console=Console(stderr=True), transient=False) as p:
        task = p.add_task(description, total=total, info="")

        def advance(n: int = 1, info: str | None = None) -> None:
            p.update(task, advance=n, **({"info": info} if info is not None else {}))

        yield advance


def track(items: Iterable, description: str, total: int | None = None) -> Iterator:
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with bar(description, total) as advance:
        for x in items:
            yield x
            advance()
