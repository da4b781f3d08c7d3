"""``RunConfig``: the typed config of a run directory. A run written by transferlab 0.1.0 (the
committed fixture: a linear PetImages run, trained before the config had a schema version) still
loads and predicts; a config from a newer schema is refused, not misread."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from transferlab.errors import RunError
from transferlab.inference import SCHEMA_VERSION, RunConfig, load_model, load_run

FIXTURE = Path(__file__).parent / "fixtures" / "run-0.1.0"


@pytest.fixture()
def old_run(tmp_path) -> Path:
    d = tmp_path / "run-0.1.0"
    shutil.copytree(FIXTURE, d)
    return d


def test_a_0_1_0_run_loads_typed_and_predicts(old_run, petimages):
    raw = json.loads((old_run / "config.json").read_text())
    assert "schema_version" not in raw and raw["transferlab_version"] == "0.1.0"
    cfg = RunConfig.read(old_run)
    assert cfg.schema_version == 1 and cfg.classes == ["Cat", "Dog"] and cfg.mode == "linear"
    assert cfg.threshold == pytest.approx(raw["predict"]["threshold"]) and cfg.c == raw["train"]["C"]
    assert cfg.input_size == raw["preprocessing"]["input_size"] and cfg.seed == raw["train"]["seed"]
    run = load_run(old_run)
    photos = [petimages / c / f"{i}.jpg" for c in ("Cat", "Dog") for i in range(2900, 2910)]
    rows = run.predict(photos, top_k=1)
    right = sum(r["top"][0]["label"] == p.parent.name for r, p in zip(rows, photos, strict=True))
    assert right >= 18, [r["top"][0] for r in rows]
    assert run.threshold == cfg.threshold and load_model(old_run).classes == ["Cat", "Dog"]


def test_round_trip_keeps_every_field(old_run, tmp_path):
    cfg = RunConfig.read(old_run)
    cfg.write(tmp_path)
    again = RunConfig.read(tmp_path)
    assert again == cfg and again.schema_version == SCHEMA_VERSION
    assert json.loads((tmp_path / "config.json").read_text())["schema_version"] == SCHEMA_VERSION


def test_a_newer_schema_is_refused(old_run):
    raw = json.loads((old_run / "config.json").read_text())
    (old_run / "config.json").write_text(json.dumps({**raw, "schema_version": SCHEMA_VERSION + 1,
                                                     "transferlab_version": "9.0"}))
    with pytest.raises(RunError, match=r"newer transferlab \(9\.0.*upgrade"):
        load_run(old_run)


@pytest.mark.parametrize("edit, why", [
    (lambda d: d.pop("classes"), "classes"),
    (lambda d: d.__setitem__("backbone", "lite0"), "malformed"),
    (lambda d: d.__setitem__("schema_version", "one"), "schema_version"),
    (lambda d: d.__setitem__("train", [1, 2]), "'train' must be an object"),
    (lambda d: d.__setitem__("calibration", {"temperature": -2}), "temperature"),
    (lambda d: d["preprocessing"].__setitem__("input_size", "big"), "input_size"),
])
def test_a_broken_config_names_what_is_wrong(old_run, edit, why):
    raw = json.loads((old_run / "config.json").read_text())
    edit(raw)
    (old_run / "config.json").write_text(json.dumps(raw))
    with pytest.raises(RunError, match=why):
        load_run(old_run)
