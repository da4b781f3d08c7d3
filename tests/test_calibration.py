"""Calibration: ECE and reliability bins, temperature scaling fitted on held-out logits, stored in
the run and applied to every probability the run gives."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import transferlab as tl
from transferlab.evaluation.calibration import apply_temperature, calibrate, ece, fit_temperature, reliability, softmax
from transferlab.run import load


def test_ece_counts_the_gap_per_bin():
    # 4 answers at 0.95 confidence, 2 of them right: one bin, gap 0.45; 2 answers at 0.55, both right: gap 0.45
    probs = np.array([[0.95, 0.05]] * 4 + [[0.55, 0.45]] * 2)
    y = np.array([0, 0, 1, 1, 0, 0])
    r = reliability(probs, y)
    assert sum(r["count"]) == 6 and r["count"][14] == 4 and r["count"][8] == 2
    assert r["ece"] == pytest.approx((4 * 0.45 + 2 * 0.45) / 6)
    assert ece(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 1])) == 0.0


def test_temperature_is_recovered_from_overconfident_logits():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, size=(20000, 5))
    y = np.array([rng.choice(5, p=p) for p in softmax(true_logits)])
    t = fit_temperature(true_logits * 2.5, y)  # a model 2.5x too sure of itself
    assert t == pytest.approx(2.5, rel=0.05)
    c = calibrate(true_logits * 2.5, y)
    assert c["fitted"] and c["ece_after"] < c["ece_before"] / 3 and c["nll_after"] < c["nll_before"]


def test_no_errors_keeps_temperature_at_one():
    """All held-out answers right: NLL keeps falling as T -> 0, which says nothing about new photos."""
    logits = np.array([[2.0, 0.0]] * 30)
    c = calibrate(logits, np.zeros(30, int))
    assert c["temperature"] == 1.0 and not c["fitted"] and "T kept at 1" in c["note"]


def test_apply_temperature_divides_the_logits_exactly():
    head = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.GELU(), torch.nn.Linear(8, 3))
    x = torch.randn(5, 4)
    before = head(x).detach()
    apply_temperature(head, 1.7)
    torch.testing.assert_close(head(x).detach(), before / 1.7)


def test_run_stores_calibration_and_applies_it(small_pets_run, tmp_path, heldout_pets_csv):
    cfg = json.loads((small_pets_run / "config.json").read_text())
    cal = cfg["calibration"]
    assert cal["source"] == "val" and cal["n"] == 24 and cal["temperature"] > 0
    assert {"ece_before", "ece_after", "temperature"} <= set(cal)
    metrics = json.loads((small_pets_run / "metrics.json").read_text())
    assert metrics["calibration"]["reliability"]["before"]["n"] == 24
    assert (small_pets_run / "reliability.png").stat().st_size > 5000
    run = load(small_pets_run)
    raw = load_file(str(small_pets_run / "model.safetensors"))  # the head as trained, before T
    x = torch.randn(3, raw["head.weight"].shape[1])
    expected = (x @ raw["head.weight"].T + raw["head.bias"]) / cal["temperature"]
    torch.testing.assert_close(run.model.head(x), expected)
    m = tl.evaluate(run, heldout_pets_csv, out=tmp_path / "eval", progress=False)
    assert 0 <= m["ece"] <= 1 and m["temperature"] == cal["temperature"]
    assert (tmp_path / "eval" / "reliability.png").exists()


def test_run_without_validation_calibrates_on_cross_validated_logits(tmp_path, small_pets):
    from transferlab.training.api import train

    run = train(small_pets, mode="linear", val_fraction=0, out=tmp_path / "cv", progress=False)
    cal = run.config["calibration"]
    assert cal["source"] == "cv" and cal["n"] == 120  # every training photo scored out of fold
