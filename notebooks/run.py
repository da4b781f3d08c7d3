"""Execute the lesson's notebooks in place and keep their outputs (``make notebooks``).

    python notebooks/run.py                      # every notebooks/*.ipynb
    python notebooks/run.py notebooks/01-*.ipynb # some

Each notebook runs in a fresh kernel from its own folder, with progress bars off (outputs are
documentation, not logs) and figures at modest resolution; the time it took is printed. A cell
that fails stops that notebook with the cell's error, and its file is left as it was.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent


def execute(path: Path, timeout: int = 900, env: dict | None = None) -> tuple[float, nbformat.NotebookNode]:
    """Run ``path`` top to bottom: (seconds, the executed notebook). Raises on the first failing cell."""
    nb = nbformat.read(path, as_version=4)
    old = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    try:
        t0 = time.perf_counter()
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
        seconds = time.perf_counter() - t0
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    nb.metadata.setdefault("transferlab", {})["seconds"] = round(seconds, 1)
    return seconds, nb


def main(argv: list[str]) -> int:
    paths = [Path(a) for a in argv] or sorted(HERE.glob("*.ipynb"))
    env = {"TRANSFERLAB_PROGRESS": "0", "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    for p in paths:
        seconds, nb = execute(p, env=env)
        tmp = p.with_suffix(".ipynb.tmp")
        nbformat.write(nb, tmp)
        os.replace(tmp, p)
        print(f"{p.name}: {seconds:.0f} s, {p.stat().st_size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
