"""Baselines without transfer (notebook 4): raw pixels through the same logistic regression, and a
small CNN from random weights, on real images."""

from __future__ import annotations

import pytest

import transferlab as tl
from transferlab.training.baselines import digits_folder, raw_pixels, small_cnn


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    return digits_folder(tmp_path_factory.mktemp("digits"))


@pytest.fixture(scope="module")
def digits(digits_dir):
    return tl.load_dataset(digits_dir)


def test_digits_folder_holds_sklearns_scans_and_is_written_once(digits, digits_dir):
    from sklearn.datasets import load_digits

    assert len(digits) == len(load_digits().images) and digits.classes == [str(i) for i in range(10)]
    stamp = {p: p.stat().st_mtime_ns for p in digits_dir.glob("*/*.png")}
    assert digits_folder(digits_dir.parent) == digits_dir
    assert {p: p.stat().st_mtime_ns for p in digits_dir.glob("*/*.png")} == stamp


def test_raw_pixels_separate_digits_but_not_satellite_patches(digits, eurosat):
    tr, va = digits.sample(500).train_val_split(0.2, seed=0)
    d = raw_pixels(tr, va, size=16)
    assert d.accuracy >= 0.85 and (d.n_train, d.n_val) == (400, 100)  # 8x8 scans: the pixels are the shape
    es = tl.load_dataset(eurosat).sample(300)
    tr, va = es.train_val_split(0.2, seed=0)
    e = raw_pixels(tr, va, size=32)
    assert 0.15 <= e.accuracy <= 0.8  # above chance (0.1), far from what pretrained features reach
    assert repr(e).startswith("BaselineResult(") and "raw pixels" in e._repr_html_()


def test_small_cnn_learns_from_scratch(digits):
    tr, va = digits.sample(600).train_val_split(0.2, seed=0)
    r = small_cnn(tr, va, size=16, epochs=6, width=8, progress=False)
    assert len(r.history) == 6 and r.history[-1]["train_loss"] < r.history[0]["train_loss"]
    assert r.accuracy >= 0.5  # chance is 0.1
    again = small_cnn(tr, va, size=16, epochs=6, width=8, progress=False)
    assert again.history == r.history  # seeded


def test_bad_settings_name_the_setting(digits):
    tr, va = digits.sample(50).train_val_split(0.2, seed=0)
    with pytest.raises(tl.TransferlabError, match="epochs"):
        small_cnn(tr, va, epochs=0)
    with pytest.raises(tl.TransferlabError, match="size"):
        raw_pixels(tr, va, size=2)
