"""``review``: confident learning finds photos filed under the wrong class."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from tests._helpers import run_cli
from transferlab.evaluation.review import ReviewOptions, confident_joint, label_issues, rank_suspects, review
from transferlab.run import load


def test_confident_joint_and_issues_on_known_probabilities():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.1, 0.9], [0.2, 0.8], [0.95, 0.05]])
    y = np.array([0, 0, 0, 1, 1, 1])  # the last photo says "class 1" but looks like class 0
    joint, confident, thresholds = confident_joint(probs, y)
    np.testing.assert_allclose(thresholds, [0.8, (0.9 + 0.8 + 0.05) / 3])
    assert confident.tolist() == [0, 0, -1, 1, 1, 0]  # 0.7 is below class 0's threshold: no confident label
    assert joint.tolist() == [[2, 0], [1, 2]]
    order, suggested, margin = label_issues(probs, y)
    assert order.tolist() == [5] and suggested.tolist() == [0] and margin[0] == pytest.approx(-0.9)
    # the ranked list adds photos the model puts elsewhere without confidence (none here)
    order, suggested, margin, flagged = rank_suspects(probs, y)
    assert order.tolist() == [5] and flagged.tolist() == [True]
    probs[2] = [0.45, 0.55]  # photo 2 now leans to class 1, below its threshold (0.583)
    order, suggested, margin, flagged = rank_suspects(probs, y)
    assert order.tolist() == [5, 2] and suggested.tolist() == [0, 1] and flagged.tolist() == [True, False]


@pytest.fixture(scope="module")
def mislabelled(tmp_path_factory, petimages):
    """12 cats + 12 dogs, with 2 dogs filed under Cat and 1 cat under Dog."""
    root = tmp_path_factory.mktemp("mislabelled")
    wrong = []
    for cls in ("Cat", "Dog"):
        (root / cls).mkdir()
        for i in range(300, 312):
            shutil.copy(petimages / cls / f"{i}.jpg", root / cls / f"{i}.jpg")
    for cls, src, i in (("Cat", "Dog", 320), ("Cat", "Dog", 321), ("Dog", "Cat", 322)):
        dst = root / cls / f"{src.lower()}-{i}.jpg"
        shutil.copy(petimages / src / f"{i}.jpg", dst)
        wrong.append(str(dst))
    return root, wrong


def test_review_ranks_the_misfiled_photos_first(mislabelled, tmp_path):
    root, wrong = mislabelled
    before = {p: p.read_bytes() for p in root.rglob("*.jpg")}
    r = review(load("efficientnet_lite0"), root, out=tmp_path / "rev", options=ReviewOptions(folds=3, top=6),
               progress=False)
    top = [s["path"] for s in r["suspects"][:3]]
    assert set(top) == set(wrong), r["suspects"][:5]
    assert {s["suggested"] for s in r["suspects"][:3] if "dog-" in s["path"]} == {"Dog"}
    scores = [s["score"] for s in r["suspects"]]
    assert r["images"] == 27 and scores == sorted(scores) and scores[0] < 0
    assert r["issues_found"] == sum(s["confident"] for s in r["suspects"]) >= 1
    rows = list(csv.DictReader((tmp_path / "rev" / "review.csv").open()))
    assert [row["path"] for row in rows] == [s["path"] for s in r["suspects"]]
    assert json.loads((tmp_path / "rev" / "review.json").read_text())["suspects_found"] == len(rows)
    assert (tmp_path / "rev" / "contact_sheet.png").stat().st_size > 20000
    assert {p: p.read_bytes() for p in root.rglob("*.jpg")} == before  # data never modified


def test_review_cli(mislabelled, tmp_path, monkeypatch, capsys):
    root, wrong = mislabelled
    code, out, err = run_cli(["review", "efficientnet_lite0", root, "--folds", "3", "--out", tmp_path / "r", "-q"],
                             monkeypatch, capsys)
    assert code == 0, err
    assert "suspected label errors among 27 images" in out and wrong[0] in out
    code, _, err = run_cli(["review", tmp_path / "no-such-run", root, "-q"], monkeypatch, capsys)
    assert code == 2 and err.startswith("error:")
