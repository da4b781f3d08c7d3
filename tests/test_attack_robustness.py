"""Robustness curves on a real (tiny) cats-vs-dogs run: clean accuracy at eps = 0, ~0 at 8/255,
monotone, seeded stratified subsampling, files written, user errors as one line."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from tests._helpers import run_cli as _cli
from transferlab.attack.robustness import robustness, stratified_subsample
from transferlab.errors import UnknownClass


def _folder(root, petimages, ids) -> str:
    for cls in ("Cat", "Dog"):
        (root / cls).mkdir(parents=True)
        for i in ids:
            (root / cls / f"{i}.jpg").symlink_to(petimages / cls / f"{i}.jpg")
    return str(root)


@pytest.fixture(scope="module")
def catdog_run(tmp_path_factory, petimages):
    """A linear run trained on 14 cats + 14 dogs (features of the bundled efficientnet_lite0)."""
    from transferlab.training.api import train

    base = tmp_path_factory.mktemp("robust")
    data = _folder(base / "train", petimages, range(20, 34))
    run = train(data, backbone="efficientnet_lite0", mode="linear", val_fraction=0, seed=0,
                out=base / "run", progress=False)
    test = _folder(base / "test", petimages, [3, 5, 7])
    return run, test


def test_stratified_subsample_keeps_proportions_and_is_seeded():
    y = np.array([0] * 30 + [1] * 10)
    a = stratified_subsample(y, 8, seed=0)
    assert len(a) == 8 and np.bincount(y[a]).tolist() == [6, 2]
    assert a.tolist() == stratified_subsample(y, 8, seed=0).tolist()
    assert a.tolist() != stratified_subsample(y, 8, seed=1).tolist()
    assert stratified_subsample(y, 100).tolist() == list(range(40))


def test_robustness_curve_on_a_trained_run(catdog_run, tmp_path):
    run, test = catdog_run
    r = robustness(run.path, test, eps=[0, 2 / 255, 8 / 255], steps=3, limit=4, out=tmp_path, progress=False)
    assert r["images"] == 4 and r["subsample"] == "seeded stratified"
    acc = r["accuracy"]
    assert acc[0] >= 0.75  # cats vs dogs is easy for ImageNet features
    assert acc[-1] == 0.0  # PGD at 8/255 fools a standard model on every image
    assert all(b <= a for a, b in itertools.pairwise(acc))
    saved = json.loads((tmp_path / "robustness.json").read_text())
    assert saved["accuracy"] == acc and saved["eps_labels"] == ["0/255", "2/255", "8/255"]
    assert (tmp_path / "robustness.png").stat().st_size > 5000


def test_robustness_cli_and_errors(catdog_run, tmp_path, monkeypatch, capsys):
    run, test = catdog_run
    code, out, err = _cli(["robustness", run.path, test, "--eps", "0,8/255", "--steps", "2", "--limit", "2",
                           "--method", "fgsm", "--json", "-q"], monkeypatch, capsys)
    assert code == 0, err
    r = json.loads(out)
    assert r["method"] == "fgsm" and r["images"] == 2 and r["accuracy"][1] <= r["accuracy"][0]

    # A bare ImageNet backbone cannot score 'Cat'/'Dog' folders: one clear line, exit 2.
    with pytest.raises(UnknownClass):
        robustness("efficientnet_lite0", test, eps=[0], progress=False)
    for args in (["robustness", "efficientnet_lite0", test],
                 ["robustness", run.path, test, "--eps", "1/x"],
                 ["robustness", run.path, test, "--method", "cw"],
                 ["robustness", run.path, tmp_path / "nowhere"]):
        code, out, err = _cli([*args, "-q"], monkeypatch, capsys)
        assert code == 2, (args, err)
        assert err.startswith("error:") and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_attack_a_trained_run(catdog_run, petimages, tmp_path, monkeypatch, capsys):
    run, _ = catdog_run
    code, out, err = _cli(["attack", petimages / "Dog" / "3.jpg", "--model", run.path, "--target", "cat",
                           "--eps", "4/255", "--steps", "5", "--out", tmp_path / "d.png", "--json", "-q"],
                          monkeypatch, capsys)
    assert code == 0, err
    r = json.loads(out)
    assert r["original"]["class"] == "Dog" and r["target"] == "Cat"
    assert r["success"] is True and r["adversarial"]["class"] == "Cat"
    code, out, err = _cli(["predict", run.path, tmp_path / "d.png", "--json"], monkeypatch, capsys)
    if code == 0:  # `predict` is the lead's command; check the round trip when it exists
        assert json.loads(out)[0]["top"][0]["label"] == "Cat"
