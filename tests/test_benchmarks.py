"""The benchmark harness: every benchmark runs with ``--quick`` and writes a result that validates,
the report links every figure to its file, and the harness's own rules (schema, busy machine)
hold. Figures are not asserted: they belong to the benchmarks, not to CI."""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import harness, machine
from benchmarks.core import Benchmark, Result, Row, load_all
from benchmarks.report import render
from benchmarks.schema import problems

from .conftest import REPO, SHARED_DATA

NAMES = list(load_all())


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory) -> Path:
    """``python -m benchmarks run --quick --out DIR``: every benchmark, once, as CI runs it."""
    if not (SHARED_DATA / "petimages").is_dir() or not (SHARED_DATA / "oxford-pets-subset").is_dir():
        pytest.skip("../shared/data not present")
    out = tmp_path_factory.mktemp("bench-results")
    p = subprocess.run([sys.executable, "-m", "benchmarks", "run", "--quick", "--out", str(out)], cwd=REPO,
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return out / machine.cpu_kind()


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_quick_run_writes_a_valid_result(quick_results, name):
    d = json.loads((quick_results / f"{name}.json").read_text())
    assert problems(d) == []
    assert d["status"] == "ok" and d["benchmark"] == name and d["preset"] == "quick"
    assert d["machine"]["cpu_kind"] == quick_results.name
    assert d["machine"]["versions"]["torch"] and d["git"]["commit"]
    assert len(d["load"]["before"]) == 3 and len(d["load"]["after"]) == 3
    for r in d["rows"]:  # every row ran, or says why not (no row fails, no row is dropped)
        assert r["status"] in ("ok", "skipped"), r
        if r["status"] == "ok":
            assert r["figures"] and all(f["value"] is not None for f in r["figures"].values()), r
        else:
            assert r["reason"] and not r["figures"], r


@pytest.mark.slow
def test_accuracy_tables_have_every_row_and_each_runs_once(quick_results):
    """Both accuracy tables list all seven rows (transferlab's five, the scikit-learn probe,
    fastai); at the quick preset each row runs in one of them, so CI exercises every recipe."""
    tables = [json.loads((quick_results / f"{n}.json").read_text())["rows"] for n in ("oxford", "petimages")]
    tools = [[r["tool"] for r in rows] for rows in tables]
    assert tools[0] == tools[1] and len(tools[0]) == 7
    assert sum(t.startswith("transferlab") for t in tools[0]) == 5
    assert "scikit-learn probe on timm features" in tools[0] and "fastai fine_tune" in tools[0]
    for i, tool in enumerate(tools[0]):
        ran = [rows[i] for rows in tables if rows[i]["status"] == "ok"]
        if tool == "fastai fine_tune" and importlib.util.find_spec("fastai") is None:
            assert not ran and all("[peers]" in rows[i]["reason"] for rows in tables)
            continue
        assert len(ran) == 1, tool
        f = ran[0]["figures"]
        assert 0 <= f["test accuracy"]["value"] <= 100 and f["train"]["value"] > 0 and f["test"]["value"] > 0


@pytest.mark.slow
def test_report_links_every_figure_to_its_file(quick_results, tmp_path):
    out = tmp_path / "BENCHMARKS.md"
    text = render(quick_results.parent, out)
    assert f"## CPU kind `{quick_results.name}`" in text
    assert "{{results}}" not in text and "## Methods" in text
    for name in NAMES:  # one table per benchmark, each marked as quick
        title = load_all()[name].title
        assert f"### {title}" in text
    links = re.findall(r"\]\(([^)]+\.json)\)", text)
    assert {Path(x).stem for x in links} == set(NAMES)
    assert all((out.parent / x).resolve().is_file() for x in links)
    assert text.count("**quick preset: tiny inputs") == len(NAMES)


def _fake(rows) -> Benchmark:
    return Benchmark("fake", "test", "A fake benchmark", lambda p: Result(rows), 0.1, "nothing")


@pytest.fixture
def valid(tmp_path) -> dict:
    """A result the harness wrote for a benchmark with one real row."""
    d = harness.run_one(_fake([Row("t", "1", "r").add("x", 1.0, "s")]), "quick", tmp_path)
    assert problems(d) == [] and d["status"] == "ok"
    return d


@pytest.mark.parametrize(("breaks", "says"), [
    (lambda d: d["rows"][0]["figures"].update(x={"value": float("nan"), "unit": "s"}), "finite"),
    (lambda d: d["rows"][0]["figures"].update(x={"value": 1.0}), "value, unit"),
    (lambda d: d["rows"][0].update(status="skipped", reason=""), "must say why"),
    (lambda d: d["rows"][0].update(recipe=" "), "must be named"),
    (lambda d: d["machine"].pop("cpu_kind"), "cpu_kind"),
    (lambda d: d.update(preset="medium"), "preset"),
    (lambda d: d.update(status="failed"), "error"),
])
def test_schema_rejects_broken_results(valid, breaks, says):
    d = copy.deepcopy(valid)
    breaks(d)
    assert any(says in p for p in problems(d)), problems(d)


def test_full_run_refuses_on_a_busy_machine_and_force_marks_it(monkeypatch, tmp_path):
    monkeypatch.setattr(machine, "busy_load", lambda: True)
    ok = [Row("t", "1", "r").add("x", 1.0, "s")]
    assert harness.run_many([_fake(ok)], "full", tmp_path, log=lambda s: None) == 3
    assert not list(tmp_path.rglob("*.json"))
    assert harness.run_many([_fake(ok)], "quick", tmp_path, log=lambda s: None) == 0  # quick never refuses
    assert harness.run_many([_fake(ok)], "full", tmp_path, force=True, log=lambda s: None) == 0
    d = json.loads(harness.result_path(tmp_path, "fake").read_text())
    assert d["load"]["contended"] is True and d["preset"] == "full" and problems(d) == []


def test_a_run_is_not_contended_by_its_own_previous_benchmark(monkeypatch, tmp_path):
    """The 1-minute load average after one benchmark still holds that benchmark: only the start of
    the run and other processes' CPU share while each one runs count."""
    loads = iter([False, True, True])  # quiet when the run starts; loaded by its own first benchmark after
    monkeypatch.setattr(machine, "busy_load", lambda: next(loads))
    monkeypatch.setattr(machine.CpuMeter, "stop", lambda self: 0.01)  # nobody else used the CPU
    ok = [Row("t", "1", "r").add("x", 1.0, "s")]
    second = Benchmark("fake2", "test", "Another", lambda p: Result(ok), 0.1, "nothing")
    assert harness.run_many([_fake(ok), second], "full", tmp_path, log=lambda s: None) == 0
    for name in ("fake", "fake2"):
        assert json.loads(harness.result_path(tmp_path, name).read_text())["load"]["contended"] is False
    monkeypatch.setattr(machine.CpuMeter, "stop", lambda self: 0.6)  # another job took 60 % meanwhile
    assert harness.run_one(second, "full", tmp_path)["load"]["contended"] is True


def test_a_failing_benchmark_is_written_as_failed(tmp_path):
    def boom(p):
        raise RuntimeError("no photos here")

    b = Benchmark("boom", "test", "Fails", boom, 0.1, "fails")
    assert harness.run_many([b], "quick", tmp_path, log=lambda s: None) == 1
    d = json.loads(harness.result_path(tmp_path, "boom").read_text())
    assert d["status"] == "failed" and "no photos here" in d["error"] and problems(d) == []


def test_cli_lists_every_benchmark_and_rejects_unknown_names():
    p = subprocess.run([sys.executable, "-m", "benchmarks", "list"], cwd=REPO, capture_output=True, text=True)
    assert p.returncode == 0 and all(re.search(rf"^{n}\s", p.stdout, re.M) for n in NAMES)
    p = subprocess.run([sys.executable, "-m", "benchmarks", "run", "nosuch", "--quick"], cwd=REPO,
                       capture_output=True, text=True)
    assert p.returncode == 2 and "nosuch" in p.stderr
