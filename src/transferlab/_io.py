"""Writes that neither corrupt nor surprise: atomic and durable files, whole-directory
replacement, and the checks that run before any work (an output inside DATA, an unwritable
path).

- **Atomic**: a file is written to a temporary sibling and renamed over its name, so a crash or
  kill never leaves a half-written cache shard, checkpoint or run file.
- **Durable** (``durable=True``, the default): the file is fsync'd before the rename and its
  directory after it, so a power cut right after "saved" does not bring back the old bytes or
  an empty file (ext4 and xfs may reorder the data and the rename otherwise).
- **Normal permissions**: ``mkstemp`` creates 0600 files; the result gets ``0o666 & ~umask``
  like any file ``open()`` creates, so a run directory can be shared as the user expects.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import OutputError, SettingError


# --------------------------------------------------------------------------------------------
# where transferlab keeps its caches, and numeric settings from the environment
# --------------------------------------------------------------------------------------------
def cache_root() -> Path:
    """The transferlab cache directory (``$TRANSFERLAB_CACHE``, else ``$XDG_CACHE_HOME/transferlab``,
    else ``~/.cache/transferlab``): features, engine verdicts and auto-mode progress live here."""
    env = os.environ.get("TRANSFERLAB_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "transferlab"


def env_number(name: str, default, kind: type, valid: Callable[[float], bool], hint: str):
    """A numeric ``TRANSFERLAB_*`` setting: ``default`` when unset, else ``kind(value)``; anything
    unparsable or failing ``valid`` is a :class:`SettingError` naming the variable and ``hint``."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or not valid(value):
        raise SettingError(f"{name}={raw!r}: {hint}")
    return value


# --------------------------------------------------------------------------------------------
# permissions and fsync
# --------------------------------------------------------------------------------------------
def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (``/proc/self/status``);
    elsewhere set-and-restore (not thread-safe, but only for a moment)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode ``open()`` would give a new file: ``0o666 & ~umask``."""
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    """The mode ``mkdir`` would give a new directory: ``0o777 & ~umask``."""
    return 0o777 & ~current_umask()


def fsync_file(path: str | Path) -> None:
    """Flush a file's data to the disk (no-op where the OS cannot)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | Path) -> None:
    """Flush a directory entry (a rename or a new file) to the disk; not possible on Windows."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# --------------------------------------------------------------------------------------------
# atomic files
# --------------------------------------------------------------------------------------------
def atomic_write(path: str | Path, write: Callable[[Path], None], *, durable: bool = True) -> Path:
    """Call ``write(tmp_path)`` then rename onto ``path`` (same directory, so the rename is
    atomic). The file gets normal permissions; ``durable`` fsyncs it and its directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, file_mode())  # after writing: some writers (safetensors) replace the file
        if durable:
            fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)
    return path


def write_json(path: str | Path, obj, *, durable: bool = True) -> Path:
    text = json.dumps(obj, indent=2, default=_jsonable) + "\n"
    return atomic_write(path, lambda p: p.write_text(text), durable=durable)


def save_safetensors(path: str | Path, tensors: dict, metadata: dict[str, str] | None = None, *,
                     durable: bool = True) -> Path:
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    return atomic_write(path, lambda p: save_file(tensors, str(p), metadata=metadata), durable=durable)


def _jsonable(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# --------------------------------------------------------------------------------------------
# checks before any work
# --------------------------------------------------------------------------------------------
def _real(p: str | Path) -> Path:
    """Absolute path with links resolved as far as the path exists (``--out`` may not yet)."""
    return Path(os.path.realpath(os.path.abspath(p)))


def ensure_outside(out: str | Path, *data: str | Path | None, param: str = "out") -> None:
    """Refuse an output path inside (or equal to) a DATA folder: files under DATA are only ever
    read, and a run written there would turn into a class of the next ``train DATA``. A CSV
    DATA protects itself only (its folder may well be the project the runs go to)."""
    o = _real(out)
    for d in data:
        if d is None or str(d) == "":  # no DATA (e.g. an in-memory dataset without a root)
            continue
        root = _real(d)
        if o == root or (root.is_dir() and root in o.parents):
            raise OutputError(param, f"{out} is inside the data folder {d}; files under DATA are only read, "
                              "so choose an output outside it")


def _nearest_existing(p: Path) -> Path:
    while not os.path.lexists(p) and p != p.parent:
        p = p.parent
    return p


def check_writable(out: str | Path, param: str = "out") -> None:
    """Fail before any work if ``out`` (a file or directory to be created) cannot be written:
    probe by creating a temporary directory in the nearest existing ancestor, then remove it.
    Nothing is left behind, and a long training never ends in 'permission denied'."""
    out = Path(out)
    target = out.parent if out.exists() and not out.is_dir() else out  # a file to be replaced
    base = _nearest_existing(Path(os.path.abspath(target)))
    if not base.is_dir():
        raise OutputError(param, f"{out} cannot be written: {base} is not a directory")
    try:
        probe = tempfile.mkdtemp(prefix=".transferlab-probe-", dir=base)
    except OSError as e:
        raise OutputError(param, f"{out} cannot be written: nothing can be created in {base} "
                          f"({e.strerror or e})") from None
    os.rmdir(probe)


# --------------------------------------------------------------------------------------------
# whole-directory replacement
# --------------------------------------------------------------------------------------------
_NEW, _OLD = "new", "old"


def _sibling(final: Path, kind: str, create: bool = True) -> Path:
    """A hidden temporary sibling of ``final`` (created, or only named); the pid in the name
    lets a later cleanup tell a live writer from a crashed one."""
    prefix = f".{final.name}.{kind}-{os.getpid()}-"
    if create:
        return Path(tempfile.mkdtemp(prefix=prefix, dir=final.parent))
    return final.parent / f"{prefix}{uuid.uuid4().hex[:8]}"


def _siblings(final: Path, kind: str) -> list[Path]:
    pattern = f".{glob.escape(final.name)}.{kind}-*-*"
    return sorted(final.parent.glob(pattern)) if final.parent.is_dir() else []


_ACTIVE: set[str] = set()  # staging dirs this process is writing right now


def _alive(p: Path) -> bool:
    """Whether the temp sibling ``p`` is still being written: by this process (an active
    staging dir), or by another process that is still running."""
    try:
        pid = int(p.name.rsplit("-", 2)[-2])
    except (ValueError, IndexError):
        return False
    if pid == os.getpid():
        return str(p) in _ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def stale_stages(final: str | Path) -> list[Path]:
    """Staging dirs next to ``final`` left by a writer that died (newest first): what a
    killed fine-tune leaves, checkpoints included, for ``--resume``."""
    final = Path(final)
    dead = [p for p in _siblings(final, _NEW) if not _alive(p)]
    return sorted(dead, key=lambda p: p.stat().st_mtime, reverse=True)


def clean_stale(final: str | Path) -> None:
    """Tidy what a crashed replacement left next to ``final``: a run moved aside but never
    replaced is put back (the old run was complete), every other temp sibling of a dead
    process is deleted."""
    final = Path(final)
    old = [p for p in _siblings(final, _OLD) if not _alive(p)]
    if old and not os.path.lexists(final):
        os.rename(old.pop(), final)
    for p in old + [p for p in _siblings(final, _NEW) if not _alive(p)]:
        shutil.rmtree(p, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``); False where the
    OS or file system cannot."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, exchange = -100, 2
    return fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), exchange) == 0


def commit_dir(tmp: Path, final: Path) -> None:
    """Put the finished directory ``tmp`` at ``final`` as a whole. An existing ``final`` is
    swapped out atomically where the OS can (else moved aside to a hidden sibling just before
    the rename; :func:`clean_stale` restores it after a crash in between), then deleted."""
    _fsync_tree(tmp)
    if not os.path.lexists(final):
        os.rename(tmp, final)
    elif _exchange(tmp, final):
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old run
    else:
        aside = _sibling(final, _OLD, create=False)
        os.rename(final, aside)
        os.rename(tmp, final)
        shutil.rmtree(aside, ignore_errors=True)
    fsync_dir(final.parent)


def _fsync_tree(root: Path) -> None:
    """The directory entries of a staged tree reach the disk before the rename that publishes
    it (the files themselves were fsync'd when written)."""
    for d, _, _ in os.walk(root):
        fsync_dir(d)


@contextlib.contextmanager
def replace_dir(final: str | Path, *, adopt: Path | None = None,
                keep: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Stage a directory in a hidden temporary sibling and publish it at ``final`` in one rename
    when the block succeeds. A reader sees the old directory or the new one, never a mix.

    On an error the sibling is removed and ``final`` is untouched, unless ``keep(sibling)``
    says it holds work worth resuming (a fine-tune's checkpoints); ``adopt`` continues in such a
    leftover sibling (from :func:`stale_stages`) instead of a new one. Other leftovers of dead
    writers are cleaned up first."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if adopt is not None:
        _ACTIVE.add(str(adopt))
    clean_stale(final)
    tmp = adopt if adopt is not None else _sibling(final, _NEW)
    if adopt is None:
        os.chmod(tmp, dir_mode())  # mkdtemp makes 0700
    _ACTIVE.add(str(tmp))
    try:
        yield tmp
        commit_dir(tmp, final)
    except BaseException:
        if keep is None or not keep(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        _ACTIVE.discard(str(tmp))
