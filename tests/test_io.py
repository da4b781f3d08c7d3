"""transferlab._io: permissions, fsync, whole-directory replacement and the checks before work."""

from __future__ import annotations

import os
import stat

import pytest

from transferlab import _io
from transferlab.errors import OutputError


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def _mode(p) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_atomic_files_get_the_umask_mode_and_are_fsynced(tmp_path, umask_027, monkeypatch):
    import torch

    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    a = _io.write_json(tmp_path / "a.json", {"x": 1})
    b = _io.save_safetensors(tmp_path / "b.safetensors", {"w": torch.zeros(3)})  # safetensors replaces the file
    assert _mode(a) == _mode(b) == 0o640
    assert len(synced) == 4  # each file, then its directory
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_replace_dir_publishes_whole_or_nothing(tmp_path, umask_027):
    final = tmp_path / "runs" / "pets"
    with _io.replace_dir(final) as d:
        (d / "config.json").write_text("old")
        (d / "eval-x").mkdir()
    assert _mode(final) == 0o750
    with pytest.raises(RuntimeError), _io.replace_dir(final) as d:
        (d / "config.json").write_text("half")
        raise RuntimeError("killed while writing")
    assert (final / "config.json").read_text() == "old"
    with _io.replace_dir(final) as d:
        (d / "config.json").write_text("new")
    assert sorted(p.name for p in final.iterdir()) == ["config.json"]  # nothing of the old run
    assert (final / "config.json").read_text() == "new"
    assert [p.name for p in final.parent.iterdir()] == ["pets"]


def test_replace_dir_without_atomic_exchange(tmp_path, monkeypatch):
    monkeypatch.setattr(_io, "_exchange", lambda a, b: False)  # macOS, or a file system without it
    final = tmp_path / "run"
    for text in ("old", "new"):
        with _io.replace_dir(final) as d:
            (d / "config.json").write_text(text)
    assert (final / "config.json").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_crash_leftovers_are_cleaned_and_a_moved_aside_run_restored(tmp_path):
    final = tmp_path / "run"
    dead = 2**22 + 12345  # above pid_max's default: no such process
    aside = tmp_path / f".run.old-{dead}-abcd1234"  # crashed between "move aside" and "rename in"
    aside.mkdir()
    (aside / "config.json").write_text("old")
    (tmp_path / f".run.new-{dead}-efgh5678").mkdir()  # crashed while writing the new run
    mine = tmp_path / ".run.new-1-live0000"  # a live process's (pid 1 always runs): left alone
    mine.mkdir()
    (tmp_path / f".run.new-{os.getpid()}-done0000").mkdir()  # this process's, no longer written: stale
    _io.clean_stale(final)
    assert (final / "config.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["run", mine.name])


def test_outputs_inside_data_are_refused(tmp_path):
    data = tmp_path / "data"
    (data / "Cat").mkdir(parents=True)
    csv = tmp_path / "list.csv"
    csv.write_text("a.jpg,Cat\n")
    for bad in (data, data / "run", data / "Cat" / "eval", tmp_path / "link" / "run"):
        if bad.parent.name == "link":
            bad.parent.symlink_to(data)
        with pytest.raises(OutputError, match="inside the data folder"):
            _io.ensure_outside(bad, data)
    with pytest.raises(OutputError):
        _io.ensure_outside(csv, csv)
    _io.ensure_outside(tmp_path / "runs" / "x", data, csv, None)  # beside the data, and beside a CSV: fine


def test_check_writable_probes_without_leaving_anything(tmp_path):
    _io.check_writable(tmp_path / "a" / "b" / "run")
    assert list(tmp_path.iterdir()) == []
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(OutputError, match="not a directory"):
        _io.check_writable(f / "run")
    with pytest.raises(OutputError, match="/proc/transferlab-x"):
        _io.check_writable("/proc/transferlab-x")
