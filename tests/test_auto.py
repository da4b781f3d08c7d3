"""``--mode auto``: a budgeted, cross-validated search on cached features, with a leaderboard."""

from __future__ import annotations

import csv

import pytest

import transferlab as tl
from tests._helpers import run_cli
from transferlab.errors import DataError
from transferlab.features import extraction as F
from transferlab.run import load
from transferlab.training.auto import COLUMNS
from transferlab.training.options import OptionError, parse_budget

MEMBERS = ("efficientnet_lite0", "mobilenet_v2")


def test_budget_parses_durations():
    assert parse_budget("15m") == 900 and parse_budget("90s") == 90 and parse_budget("1h30m") == 5400
    assert parse_budget(42) == 42 and parse_budget("600") == 600
    for bad in ("soon", "-5m", "0"):
        with pytest.raises(ValueError):
            parse_budget(bad)


@pytest.fixture(scope="module")
def pets_csv(tmp_path_factory, petimages):
    d = tmp_path_factory.mktemp("auto")
    lines = ["path,label"] + [f"{petimages / c / f'{i}.jpg'},{c}" for c in ("Cat", "Dog") for i in range(500, 515)]
    (d / "pets.csv").write_text("\n".join(lines) + "\n")
    return d / "pets.csv"


@pytest.fixture(scope="module")
def auto_run(tmp_path_factory, pets_csv):
    from transferlab.training.api import train

    out = tmp_path_factory.mktemp("auto-run") / "run"
    train(pets_csv, mode="auto", budget="5m", members=MEMBERS, folds=3, val_fraction=0.2, out=out, progress=False)
    return out


def _rows(path):
    return list(csv.DictReader(path.open()))


def test_auto_keeps_the_best_candidate_and_says_why(auto_run, pets_csv):
    rows = _rows(auto_run / "leaderboard.csv")
    assert list(rows[0]) == COLUMNS
    scored = [r for r in rows if r["rank"]]
    assert [int(r["rank"]) for r in scored] == list(range(1, len(scored) + 1))
    accs = [float(r["cv_accuracy"]) for r in scored]
    assert accs == sorted(accs, reverse=True)
    names = {r["candidate"] for r in scored}  # both members, both normalisations, an ensemble, flip and a head
    assert {"efficientnet_lite0@224 linear", "mobilenet_v2@224:l2 linear"} <= names
    assert any("+" in n for n in names) and any("flip" in n for n in names)
    assert any(n.endswith(" head") for n in names) and any(n.endswith(" avg") for n in names)
    assert any(r["pool"] == "gem" and ":" in r["backbone"] for r in scored)  # GeM pooling was tried
    run = load(auto_run)
    auto = run.config["train"]["auto"]
    assert auto["chosen"] == scored[0]["candidate"] and auto["chosen"] in auto["why"]
    chosen = scored[0]["backbone"]  # a single NAME@SIZE is recorded as the plain backbone at that size
    assert run.config["backbone"]["name"] in (chosen, chosen.split("@")[0]) and run.config["mode"] == "auto"
    assert run.config["calibration"]["source"] == "val"
    assert accs[0] >= 0.8 and all(float(r["predict_img_s"]) > 0 for r in scored)
    # the reloaded run reproduces the validation score it was written with (same features, same head)
    assert tl.evaluate(run, pets_csv, split="val", progress=False)["accuracy"] == run.metrics["val_accuracy"]


def test_resume_reuses_rows_and_extracts_nothing(auto_run, pets_csv, tmp_path, monkeypatch):
    from transferlab.training.api import train

    calls = []
    real = F.run_features
    monkeypatch.setattr(F, "run_features", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = train(pets_csv, mode="auto", budget="5m", members=MEMBERS, folds=3, resume=auto_run,
                  out=tmp_path / "again", progress=False)
    assert calls == []  # every feature came from the cache
    first, second = _rows(auto_run / "leaderboard.csv"), _rows(again.path / "leaderboard.csv")
    assert {r["status"] for r in second if r["rank"]} == {"reused"}
    assert [(r["candidate"], r["cv_accuracy"]) for r in first] == [(r["candidate"], r["cv_accuracy"]) for r in second]


def test_same_seed_same_search(auto_run, pets_csv, tmp_path):
    from transferlab.training.api import train

    again = train(pets_csv, mode="auto", budget="5m", members=MEMBERS, folds=3, out=tmp_path / "fresh",
                  progress=False)
    first, second = _rows(auto_run / "leaderboard.csv"), _rows(again.path / "leaderboard.csv")
    assert {r["status"] for r in second if r["rank"]} == {"ok"}  # scored again, not reused
    assert [(r["candidate"], r["cv_accuracy"], r["C"]) for r in first] == \
           [(r["candidate"], r["cv_accuracy"], r["C"]) for r in second]


def test_a_budget_nothing_fits_in_is_a_clear_error(pets_csv, tmp_path, monkeypatch, capsys):
    from transferlab.training.api import train

    with pytest.raises(DataError, match="give a larger --budget"):
        train(pets_csv, mode="auto", budget="0.01s", members=MEMBERS, out=tmp_path / "none", progress=False)
    code, _, err = run_cli(["train", pets_csv, "--mode", "auto", "--budget", "soon", "--out", tmp_path / "x"],
                           monkeypatch, capsys)
    assert code == 2 and "--budget" in err
    code, _, err = run_cli(["train", pets_csv, "--mode", "auto", "--backbone", "mobilenet_v2", "--out", tmp_path / "z"],
                           monkeypatch, capsys)
    assert code == 2 and "--backbone and --input-size do not apply to --mode auto" in err and "--members" in err
    with pytest.raises(OptionError, match="applies to mode auto"):
        train(pets_csv, mode="linear", budget="1m", out=tmp_path / "y", progress=False)


def test_logit_average_is_one_linear_layer_over_the_members_features(auto_run, pets_csv):
    """An ``avg`` ensemble's run head = the mean of its members' own probes' logits."""
    import numpy as np
    import torch

    from transferlab.data.datasets import load_dataset
    from transferlab.models.views import parse_view
    from transferlab.training.auto import Search, final_fit
    from transferlab.training.job import Job
    from transferlab.training.options import AutoOptions, RunOptions

    data = load_dataset(pets_csv)
    tr, va = data.train_val_split(0.2, 0)
    job = Job(load(auto_run).backbone, tr, va, RunOptions(), AutoOptions(members=MEMBERS, folds=3, resume="y"),
              auto_run, progress=False)
    s = Search(job, job.options)
    row = next(r for r in s.board.reuse.values() if r["model"] == "avg")
    head = final_fit(s, row).head
    x, _, _ = s.bank.matrix(parse_view(row["backbone"]))
    parts, start = [], 0
    for member in s.member_rows(parse_view(row["backbone"])):
        h = final_fit(s, member).head
        parts.append(h(torch.from_numpy(x[:, start:start + h.in_features])))
        start += h.in_features
    with torch.no_grad():
        np.testing.assert_allclose(head(torch.from_numpy(x)).numpy(), torch.stack(parts).mean(0).detach().numpy(),
                                   rtol=1e-4, atol=1e-4)
