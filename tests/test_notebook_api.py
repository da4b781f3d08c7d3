"""The Python API as a notebook sees it: one-line reprs, HTML cards, objects to ask questions of,
and plots that return matplotlib Figures (real runs on real photos)."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

import transferlab as tl
from transferlab.display import REPR_MAX


@pytest.fixture(scope="module")
def run(small_pets_run):
    return tl.load_model(small_pets_run)


@pytest.fixture(scope="module")
def ev(run, heldout_pets_csv):
    return tl.evaluate(run, heldout_pets_csv, progress=False)


def _one_line(obj) -> str:
    text = repr(obj)
    assert "\n" not in text and len(text) <= REPR_MAX, text
    return text


def test_a_run_shows_itself_in_one_line_and_a_card(run, small_pets_run):
    text = _one_line(run)
    assert text.startswith("Run(") and "mode='linear'" in text and "classes=2" in text
    html = run._repr_html_()
    assert "efficientnet_lite0" in html and "validation accuracy" in html and "data:image/jpeg;base64," in html
    # the 0.1.0 dataclass repr printed the whole config and metrics (about 9 KB)
    assert len(text) < len(str(run.config.to_dict()))


def test_an_evaluation_answers_questions(ev, heldout_pets_csv):
    lines = heldout_pets_csv.read_text().splitlines()[1:]
    assert ev.n == len(lines) and ev["accuracy"] == ev.accuracy >= 0.9  # still a mapping for old code
    per = ev.per_class
    assert {r["class"] for r in per} == {"Cat", "Dog"} and sum(r["support"] for r in per) == ev.n
    wrong = int((ev.predictions != ev.labels).sum())
    assert len(ev.top_losses(50)) == wrong and sum(r["count"] for r in ev.most_confused(10)) == wrong
    losses = [r["loss"] for r in ev.top_losses(50)]
    assert losses == sorted(losses, reverse=True)
    assert _one_line(ev).startswith("Evaluation(") and "accuracy" in ev._repr_html_()


def test_plots_return_figures_and_save_on_request(ev, tmp_path):
    for fig in (ev.plot_confusion(), ev.plot_top_losses(4), ev.plot_reliability()):
        assert isinstance(fig, Figure) and fig.axes
    out = tmp_path / "confusion.png"
    assert isinstance(ev.plot_confusion(out=out), Figure) and out.stat().st_size > 1000
    grid = tl.show([r["path"] for r in ev.top_losses(3)] or [tmp_path / "confusion.png"], out=tmp_path / "g.png")
    assert isinstance(grid, Figure) and (tmp_path / "g.png").is_file()


def test_predictions_are_rows_that_show_themselves(run, petimages, tmp_path):
    photos = [petimages / "Cat" / "2100.jpg", petimages / "Dog" / "2100.jpg"]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff not a jpeg")
    preds = run.predict([*photos, bad], top_k=2)
    assert isinstance(preds, list) and [r["status"] for r in preds][-1] == "error"  # the CLI's rows
    assert preds.labels[:2] == ["Cat", "Dog"] and len(preds.errors()) == 1
    assert type(preds[:2]) is type(preds) and preds[:2].labels == ["Cat", "Dog"]  # a slice shows like the whole
    text = _one_line(preds)
    assert "n=3" in text and "errors=1" in text
    assert preds._repr_html_().count("<img") == 2 and isinstance(preds.plot(), Figure)  # the broken file: no thumbnail


def test_results_of_explain_and_attack_show_themselves(sample_images, tmp_path):
    d = tl.dream("Siamese cat", "efficientnet_lite0", method="plain", steps=8, progress=False)
    assert _one_line(d).startswith("DreamResult(") and "<img" in d._repr_html_()
    assert isinstance(d.plot(), Figure)
    a = tl.attack_image(sample_images["chelsea"], "efficientnet_lite0", target="goldfish", method="pgd",
                        eps=4 / 255, steps=10)
    assert _one_line(a).startswith("AttackResult(") and a["success"]
    assert a["linf_255"] <= 4 + 1e-3 and isinstance(a.plot(), Figure)
    assert np.abs(a.images["adversarial"].astype(int) - a.images["original"].astype(int)).max() <= 5


def test_leaderboard_is_a_table(run):
    assert run.leaderboard is None  # only auto runs have one
    from transferlab.display import Table

    t = Table([{"candidate": "a", "cv_accuracy": 0.9}, {"candidate": "b", "cv_accuracy": 0.8}], name="Leaderboard")
    assert _one_line(t) == "Leaderboard(rows=2, columns=['candidate', 'cv_accuracy'])"
    assert "<table>" in t._repr_html_() and "0.9" in str(t)
    assert _one_line(t[:1]) == "Leaderboard(rows=1, columns=['candidate', 'cv_accuracy'])" and t[1]["candidate"] == "b"


def test_a_dataset_shows_in_one_line_and_samples_by_class(petimages):
    ds = tl.load_dataset(petimages)
    text = _one_line(ds)
    assert text.startswith("ImageDataset(") and f"images={len(ds)}" in text  # the dataclass repr listed 5,999 paths
    s = ds.sample(40, seed=1)
    assert len(s) == 40 and np.bincount(s.labels).tolist() == [20, 20]
    assert s.paths == ds.sample(40, seed=1).paths != ds.sample(40, seed=2).paths
    assert set(s.paths) <= set(ds.paths) and ds.sample(10**6) is ds
    with pytest.raises(tl.TransferlabError, match="n"):
        ds.sample(0)


def test_a_folder_is_predicted_photo_by_photo_and_saved_as_csv(run, small_pets, tmp_path):
    preds = run.predict(small_pets / "Cat", top_k=1)
    assert len(preds) == len(list((small_pets / "Cat").glob("*.jpg"))) == 60
    assert all(str(small_pets / "Cat") in r["path"] for r in preds)
    assert [r["top"][0]["label"] for r in preds].count("Cat") >= 57  # its own training photos
    lines = preds.to_csv(tmp_path / "p.csv").read_text().splitlines()
    assert len(lines) == 61 and lines[0].startswith("path,") and lines[1].split(",")[-1].startswith("Cat:")
    assert [line.split(",")[0] for line in lines[1:]] == [r["path"] for r in preds]  # one row per photo, in order


def test_a_run_plots_its_own_validation_confusion(run):
    fig = run.plot_confusion()
    assert isinstance(fig, Figure) and fig.axes
    total = sum(t.get_text().isdigit() and int(t.get_text()) for t in fig.axes[0].texts)
    assert total == run.metrics["val"]["n"]  # every validation photo is counted once
    with pytest.raises(tl.TransferlabError, match="no training curves"):
        run.plot_curves()  # a linear run has no epochs


def test_an_attack_says_whether_it_transfers(sample_images, tmp_path):
    with pytest.raises(tl.TransferlabError, match="transfer_to"):
        tl.attack_image(sample_images["chelsea"], target="goldfish", transfer_to="mobilenet_v2")  # no out
    a = tl.attack_image(sample_images["chelsea"], "efficientnet_lite0", target="goldfish", eps=4 / 255, steps=10,
                        out=tmp_path / "adv.png", figure=False, transfer_to="mobilenet_v2")
    t = a["transfer"]
    assert a["success"] and t["model"] == "mobilenet_v2"
    assert t["original"]["class"] in ("tabby", "tiger cat", "Egyptian cat")
    assert 0 <= t["target_prob"] <= 1 and t["success"] == (t["adversarial"]["class"] == "goldfish")


def test_dreams_compare_side_by_side():
    runs = [tl.dream("Siamese cat", method="plain", steps=4, tv=tv, progress=False) for tv in (0, 0.005)]
    fig = tl.plot_dreams(runs, ["noise", "TV"])
    assert [ax.get_title().split("\n")[0] for ax in fig.axes] == ["noise", "TV"]
    assert not np.array_equal(runs[0].image, runs[1].image)  # the penalty changed the image


def test_review_takes_its_options_as_keywords(run, small_pets):
    r = tl.review(run, small_pets, folds=3, progress=False)
    assert r["images"] == 120 and r["options"]["folds"] == 3 and len(r["suspects"]) == r["suspects_found"]
    with pytest.raises(tl.TransferlabError, match="folds"):
        tl.review(run, small_pets, folds=1)


def test_a_small_sample_of_many_classes_still_splits(oxford):
    """4 photos of each of 37 breeds: a 20 % validation part cannot hold every breed, so the split
    is seeded but not stratified (scikit-learn refuses that stratification)."""
    ds = tl.load_dataset(oxford, split="trainval").sample(37 * 4)
    tr, va = ds.train_val_split(0.2, seed=0)
    assert (len(tr), len(va)) == (118, 30) and not set(tr.paths) & set(va.paths)
    assert va.paths == ds.train_val_split(0.2, seed=0)[1].paths
