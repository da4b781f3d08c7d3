"""Linear training on real photos -> run directory -> evaluate / predict."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import transferlab as tl
from transferlab.errors import DataError, RunError
from transferlab.features import extraction as F
from transferlab.run import load, load_run


def test_run_directory_contents(small_pets_run):
    files = {p.name for p in small_pets_run.iterdir()}
    assert {"config.json", "model.safetensors", "metrics.json", "confusion.png"} <= files
    cfg = json.loads((small_pets_run / "config.json").read_text())
    assert cfg["classes"] == ["Cat", "Dog"] and cfg["mode"] == "linear"
    assert cfg["backbone"]["name"] == "efficientnet_lite0" and len(cfg["backbone"]["weights_digest"]) == 16
    assert cfg["preprocessing"]["input_size"] == 224 and cfg["train"]["C"] in (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
    assert set(load_file(str(small_pets_run / "model.safetensors"))) == {"head.weight", "head.bias"}
    m = json.loads((small_pets_run / "metrics.json").read_text())
    assert m["val_accuracy"] >= 0.9  # 96 training photos of cats vs dogs, 24 held out
    assert m["val"]["n"] == 24 and set(m["val"]["per_class"]) == {"Cat", "Dog"}


def test_second_train_extracts_nothing(tmp_path, small_pets, small_pets_run, monkeypatch):
    from transferlab.training.api import train

    calls = []
    real = F.run_features
    monkeypatch.setattr(F, "run_features", lambda *a, **k: calls.append(1) or real(*a, **k))
    run = train(small_pets, out=tmp_path / "again", progress=False)
    assert calls == []
    a = json.loads((run.path / "metrics.json").read_text())
    b = json.loads((small_pets_run / "metrics.json").read_text())
    assert a["val_accuracy"] == b["val_accuracy"]  # same seed, same split, same features


@pytest.mark.slow
def test_evaluate_and_predict_on_heldout(tmp_path, small_pets_run, heldout_pets_csv):
    run = load(small_pets_run)
    m = tl.evaluate(run, heldout_pets_csv, out=tmp_path / "eval", progress=False)
    assert m["n"] == 40 and m["accuracy"] >= 0.9
    assert (tmp_path / "eval" / "confusion.png").stat().st_size > 5000
    assert (tmp_path / "eval" / "top_losses.png").exists()
    assert all(t["true"] != t["pred"] for t in m["top_losses"])
    assert len(m["top_losses"]) == round((1 - m["accuracy"]) * 40)
    # predict agrees with evaluate
    paths = [line.split(",")[0] for line in heldout_pets_csv.read_text().splitlines()[1:]]
    preds = run.predict(paths[:4] + paths[-4:], top_k=2)
    assert [p["top"][0]["label"] for p in preds][:4].count("Cat") >= 3
    assert [p["top"][0]["label"] for p in preds][4:].count("Dog") >= 3
    assert all(abs(sum(t["score"] for t in p["top"]) - 1) < 1e-4 for p in preds)  # 2 classes: top-2 sums to 1


def test_evaluate_val_split_reproduces_training_metrics(small_pets_run, small_pets):
    run = load(small_pets_run)
    m = tl.evaluate(run, small_pets, split="val", progress=False)
    trained = json.loads((small_pets_run / "metrics.json").read_text())
    assert m["n"] == 24 and m["accuracy"] == pytest.approx(trained["val_accuracy"])


@pytest.mark.slow
def test_oxford_breeds_linear(tmp_path, oxford):
    """Oxford-IIIT Pet layout end to end on 4 breeds (via CSV of official trainval / test)."""
    from transferlab.data.datasets import load_dataset
    from transferlab.training.api import train

    breeds = {"Bengal", "Persian", "beagle", "pug"}
    tv = load_dataset(oxford, split="trainval")
    keep = [i for i, y in enumerate(tv.labels) if tv.classes[y] in breeds]
    sub = tv.subset(keep)
    sub.classes = tv.classes
    run = train(sub, out=tmp_path / "ox", val_fraction=0.0, progress=False)
    assert run.config["train"]["selection"] == "cv"
    te = load_dataset(oxford, split="test")
    keep_te = [i for i, y in enumerate(te.labels) if te.classes[y] in breeds]
    m = tl.evaluate(run, te.subset(keep_te), progress=False)
    assert m["n"] == len(keep_te) > 70 and m["accuracy"] > 0.85
    probs = run.predict_proba(te.subset(keep_te).paths[:3])
    other = [i for i, c in enumerate(run.classes) if c not in breeds]
    assert probs[:, other].max() < 1e-3  # breeds never seen in training are never predicted


def test_bad_run_dirs(tmp_path):
    with pytest.raises(RunError, match="not found"):
        load(tmp_path / "missing" / "")
    (tmp_path / "junk").mkdir()
    with pytest.raises(RunError, match="not a run directory"):
        load_run(tmp_path / "junk")
    (tmp_path / "junk" / "config.json").write_text("{not json")
    (tmp_path / "junk" / "model.safetensors").write_bytes(b"x")
    with pytest.raises(RunError, match="unreadable"):
        load_run(tmp_path / "junk")


def test_train_refuses_single_class(tmp_path, petimages):
    import shutil

    (tmp_path / "only" / "Cat").mkdir(parents=True)
    for i in range(3):
        shutil.copy(petimages / "Cat" / f"{i}.jpg", tmp_path / "only" / "Cat")
    from transferlab.training.api import train

    with pytest.raises(DataError, match="at least 2"):
        train(tmp_path / "only", out=tmp_path / "r", progress=False)
    assert np.array_equal(sorted(p.name for p in (tmp_path / "only" / "Cat").iterdir()), ["0.jpg", "1.jpg", "2.jpg"])


def test_input_size_is_part_of_the_run(tmp_path, small_pets, small_pets_run):
    """--input-size: features at another resolution (own cache entries), remembered by the run."""
    from transferlab.errors import TransferlabError
    from transferlab.features import extract
    from transferlab.models.registry import create_backbone
    from transferlab.training.api import train

    run = train(small_pets, mode="linear", input_size=160, out=tmp_path / "r160", progress=False)
    assert run.config["preprocessing"]["input_size"] == 160 and run.config["preprocessing"]["resize_size"] == 182
    again = load(tmp_path / "r160")
    assert again.data_config.input_size == 160
    cat = sorted((small_pets / "Cat").iterdir())[0]
    f160 = extract(again.backbone, [cat], progress=False).features
    f224 = extract(create_backbone("efficientnet_lite0"), [cat], progress=False).features
    assert not np.allclose(f160, f224, atol=1e-3)  # another picture in, not a stale cache entry
    probs = again.predict_proba([cat])
    assert np.allclose(probs, again.model.head(torch.from_numpy(f160)).softmax(-1).numpy(), atol=1e-5)
    val = json.loads((tmp_path / "r160" / "metrics.json").read_text())["val_accuracy"]
    assert val >= 0.75  # 24 val photos at 160 px; chance 0.5
    with pytest.raises(TransferlabError, match="input_size"):
        create_backbone("efficientnet_lite0", input_size=8)
