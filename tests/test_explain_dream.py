"""Ideal-class images with the real bundled model: probabilities are those of the saved PNG,
both methods raise the target a lot in a few steps, and user errors exit 2 with one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from tests._helpers import run_cli as _cli
from transferlab.data.loader import load_image
from transferlab.errors import UnknownClass
from transferlab.explain.dream import FourierImage, dream, score_image, total_variation


def make_run(path, classes: list[str], imagenet_rows: list[int]):
    """A linear-probe run directory whose head copies ImageNet classifier rows: a real model."""
    from safetensors.torch import save_file

    from transferlab.models.registry import create_backbone

    bb = create_backbone("efficientnet_lite0")
    path.mkdir(parents=True, exist_ok=True)
    w, b = bb.model.head.weight[imagenet_rows], bb.model.head.bias[imagenet_rows]
    save_file({"head.weight": w.contiguous(), "head.bias": b.contiguous()}, str(path / "model.safetensors"))
    cfg = {"backbone": {"name": bb.name, "weights_digest": bb.weights_digest}, "classes": classes,
           "head": {"type": "linear", "in": bb.feature_dim, "out": len(classes)}, "mode": "linear"}
    (path / "config.json").write_text(json.dumps(cfg))
    return path


@pytest.fixture(scope="module")
def lite0():
    from transferlab.run import load

    return load("efficientnet_lite0")


def test_total_variation_counts_neighbour_differences():
    x = torch.zeros(1, 1, 4, 4)
    x[..., :, 2:] = 1.0  # one vertical edge, 4 rows high
    assert total_variation(x).item() == pytest.approx(4.0)
    assert total_variation(torch.full((2, 3, 8, 8), 0.3)).item() == 0.0


def test_fourier_parameterisation_inverts_a_photo(lite0, sample_images):
    photo = load_image(sample_images["chelsea"], lite0.data_config)
    rendered = FourierImage(224, init=photo[None])()[0].detach()
    inside = (photo > 0.01) & (photo < 0.99)  # the sigmoid's inverse is clamped near 0 and 1
    assert (rendered - photo)[inside].abs().max() < 1e-3
    noise = FourierImage(224, generator=torch.Generator().manual_seed(0))()
    assert noise.shape == (1, 3, 224, 224) and 0.4 < noise.mean() < 0.6  # starts near grey


def test_plain_raises_target_and_reports_the_saved_png(lite0, tmp_path):
    start = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))[0]
    idx = lite0.class_index("siamese")
    p0, _ = score_image(lite0.model, (start.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8),
                        lite0.data_config, lite0.classes, idx)
    r = dream("siamese", "efficientnet_lite0", method="plain", steps=10, seed=0, out=tmp_path / "p.png",
              progress=False)
    assert r.target == "Siamese cat" and p0 < 0.01
    assert r.prob > 0.5 and r.top[0][0] == "Siamese cat"
    # the probability is that of the saved 8-bit file, exactly as `classify` would see it
    saved = np.asarray(Image.open(tmp_path / "p.png"))
    assert saved.shape == (224, 224, 3) and np.array_equal(saved, r.image)
    with Image.open(tmp_path / "p.png") as im:
        again, _ = score_image(lite0.model, im.convert("RGB"), lite0.data_config, lite0.classes, idx)
    assert again == pytest.approx(r.prob, abs=1e-6)
    # and `classify`'s pipeline (which may run in bf16) agrees
    got = lite0.predict([tmp_path / "p.png"], top_k=1)[0]["top"][0]
    assert got["label"] == "Siamese cat" and got["score"] == pytest.approx(r.prob, abs=0.02)


def test_lucid_raises_target_checks_and_snapshots(tmp_path):
    r = dream("zebra", method="lucid", steps=12, seed=0, check_with="mobilenet_v2", snapshots=2,
              out=tmp_path / "z.png", progress=False)
    assert r.prob > 0.3 and r.settings["objective"] == "margin"
    assert r.check["backbone"] == "mobilenet_v2" and len(r.check["top"]) == 3
    assert 0.0 <= r.check["prob"] <= 1.0
    with Image.open(r.paths["snapshots"]) as im:
        assert im.size == (3 * 224, 224)  # 2 snapshots + the final image
    d = r.to_dict()
    assert json.loads(json.dumps(d))["check"]["top1_is_target"] in (True, False)


def test_lucid_from_a_photo_keeps_the_photo(lite0, sample_images):
    photo = load_image(sample_images["coffee"], lite0.data_config)
    r = dream("espresso", method="lucid", steps=4, init_image=sample_images["coffee"], progress=False)
    x = torch.from_numpy(r.image).permute(2, 0, 1).float() / 255
    assert torch.corrcoef(torch.stack([x.flatten(), photo.flatten()]))[0, 1] > 0.9
    assert r.prob > 0.9  # coffee already is an espresso; a few steps keep it one


def test_run_classes_and_check_without_that_class(tmp_path):
    run = make_run(tmp_path / "pets", ["Bengal", "Siamese"], [285, 284])  # Egyptian cat, Siamese cat rows
    r = dream("bengal", run, method="plain", steps=6, check_with="mobilenet_v2", progress=False)
    assert r.target == "Bengal" and r.target_index == 0 and r.prob > 0.9
    assert r.check["prob"] is None and r.check["top1_is_target"] is False  # no "Bengal" in ImageNet


def test_unknown_class_and_cli_errors(monkeypatch, capsys, tmp_path):
    with pytest.raises(UnknownClass):
        dream("not-a-class-at-all", steps=1, progress=False)
    code, _, err = _cli(["dream", "cat", "--out", tmp_path / "a.png"], monkeypatch, capsys)
    assert code == 2 and "ambiguous" in err and "Traceback" not in err
    code, _, err = _cli(["dream", "zebra", "--out", tmp_path / "a.jpg", "--steps", "1"], monkeypatch, capsys)
    assert code == 2 and ".png" in err
    code, _, err = _cli(["dream", "zebra", "--out", tmp_path / "a.png", "--from", tmp_path / "missing.jpg"],
                        monkeypatch, capsys)
    assert code == 2 and "not found" in err
    code, out, _ = _cli(["dream", "goldfish", "--method", "plain", "--steps", "3", "--tv", "0", "--out",
                         tmp_path / "g.png", "--json", "-q"], monkeypatch, capsys)
    res = json.loads(out)
    assert code == 0 and res["target"] == "goldfish" and res["settings"]["tv"] == 0
    assert res["out"] == str(tmp_path / "g.png") and (tmp_path / "g.png").is_file()
