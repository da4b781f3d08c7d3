"""Where a run goes, decided before any work and written as a whole.

- **Checked first**: ``--out`` outside DATA (files under DATA are only read, and a run written
  there would become a class of the next ``train DATA``), writable, and an existing run is
  replaced only when asked (``overwrite``, or ``--resume`` of that very run); a bad
  ``TRANSFERLAB_*`` setting fails now, not after the features are extracted.
- **Staged**: the run is written into a hidden sibling of ``out`` and renamed into place once
  complete (:func:`transferlab._io.replace_dir`): a reader sees the old run or the new one, and
  the old run's evaluations never end up next to the new model.
- **Resumable**: a fine-tune killed before it finished leaves its staging dir, checkpoints
  included; ``--resume RUN`` continues there (:func:`resume_source`), and any other train cleans
  it up.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from .._io import check_writable, ensure_outside, replace_dir, stale_stages
from ..data.datasets import ImageDataset
from ..errors import OutputError, RunError
from ..inference.config import CONFIG
from .checkpoints import CHECKPOINT_DIR, STATE, Checkpoints


def is_main_rank() -> bool:
    """torchrun: only rank 0 writes the run directory."""
    return os.environ.get("RANK", "0") == "0"


def check_settings() -> None:
    """Read every ``TRANSFERLAB_*`` switch a training run uses, so a bad value is reported
    before any work rather than minutes into it."""
    from ..data.loader import default_nice
    from ..features import flush_seconds
    from ..runtime.device import bf16_forced

    default_nice()
    flush_seconds()
    bf16_forced()


def same_path(a: str | Path, b: str | Path) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def check_output(out: Path, data, *, overwrite: bool = False, resume: str | Path | None = None) -> None:
    """Refuse, before any work, an ``out`` inside DATA, one that cannot be written, a file, a
    folder that is not a run, and an existing run unless ``overwrite`` (or ``resume`` is it)."""
    root = (data.root or None) if isinstance(data, ImageDataset) else data
    ensure_outside(out, root)
    check_writable(out.parent if out.is_dir() else out)  # the run is staged next to out, then renamed
    if not out.exists():
        return
    if not out.is_dir():
        raise OutputError("out", f"{out} is a file; give a directory for the run")
    continuing = resume is not None and same_path(resume, out)
    if (out / CONFIG).is_file():
        if not (overwrite or continuing):
            raise OutputError("out", f"{out} already holds a run; pass {{overwrite}} to replace it (or choose another)")
    elif any(out.iterdir()) and not continuing:
        raise OutputError("out", f"{out} exists and is not a run directory; choose another")


def _state_time(d: Path) -> float | None:
    """mtime of an unfinished checkpoint's state.json in ``d`` (None: nothing to resume)."""
    try:
        st = Checkpoints(d / CHECKPOINT_DIR).state()
    except RunError:
        return None
    return (d / CHECKPOINT_DIR / STATE).stat().st_mtime if st and not st.get("finished") else None


def resume_source(resume: str | Path) -> Path:
    """The directory whose ``checkpoint/`` a ``--resume RUN`` continues: RUN itself (a run
    stopped with Ctrl-C keeps its checkpoints), or the staging dir a killed fine-tune left
    next to it, whichever checkpoint is newer."""
    resume = Path(resume)
    best, best_time = resume, _state_time(resume) or 0.0
    for stage in stale_stages(resume):
        t = _state_time(stage)
        if t is not None and t > best_time:
            best, best_time = stage, t
    return best


def _has_checkpoint(stage: Path) -> bool:
    return (stage / CHECKPOINT_DIR / STATE).is_file()


@contextlib.contextmanager
def staged_run(out: Path, adopt: Path | None = None) -> Iterator[Path]:
    """The directory to write the run into; published at ``out`` when the block succeeds. A
    failed fine-tune keeps its staging dir when it has checkpoints (for ``--resume``). Ranks
    other than 0 write nothing, so they get ``adopt`` or ``out`` as it is."""
    if not is_main_rank():
        yield adopt or out
        return
    with replace_dir(out, adopt=adopt, keep=_has_checkpoint) as stage:
        yield stage
