"""The one progress convention: every long loop takes ``progress=`` and asks :func:`resolve` for
a *bar factory*.

A bar factory is ``bar(description, total)`` -> a context manager yielding
``advance(n=1, info=None)``. ``progress`` may be

- ``True`` (the default): a rich bar on stderr when stderr is a terminal; in a Jupyter notebook a
  notebook bar (tqdm's, a widget when ipywidgets is installed); nothing otherwise, and nothing
  when ``CI`` is set or ``TRANSFERLAB_PROGRESS=0`` (logs stay readable);
- ``False`` / ``None``: nothing;
- a bar factory of your own (a GUI, a logger, a test recording the calls).

Library code never prints otherwise; there is no module-level switch.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager

Advance = Callable[..., None]
Bar = Callable[[str, int | None], AbstractContextManager[Advance]]


@contextmanager
def null_bar(description: str, total: int | None):
    """Progress off."""
    yield lambda n=1, **kw: None


@contextmanager
def rich_bar(description: str, total: int | None):
    """A rich progress bar on stderr (elapsed, remaining, and an ``info`` text column)."""
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


@contextmanager
def notebook_bar(description: str, total: int | None):
    """A bar in a Jupyter notebook's output (tqdm.auto: a widget with ipywidgets, else text)."""
    from tqdm.auto import tqdm

    with tqdm(total=total, desc=description, leave=True) as bar:

        def advance(n: int = 1, info: str | None = None) -> None:
            bar.update(n)
            if info is not None:
                bar.set_postfix_str(info, refresh=False)

        yield advance


def in_notebook() -> bool:
    """True inside a Jupyter kernel (IPython's ZMQ shell), whose stderr is not a terminal."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    return type(shell).__name__ == "ZMQInteractiveShell"


def resolve(progress) -> Bar:
    """The bar factory ``progress`` means (see the module docstring)."""
    if progress is None or progress is False:
        return null_bar
    if progress is True:
        if os.environ.get("CI") or os.environ.get("TRANSFERLAB_PROGRESS") == "0":
            return null_bar
        if sys.stderr.isatty():
            return rich_bar
        return notebook_bar if in_notebook() else null_bar
    if callable(progress):
        return progress
    raise TypeError(f"progress must be True, False or a bar factory, not {type(progress).__name__}")


def track(items: Iterable, description: str, progress=True, total: int | None = None) -> Iterator:
    """Iterate ``items`` with a bar."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with resolve(progress)(description, total) as advance:
        for x in items:
            yield x
            advance()
