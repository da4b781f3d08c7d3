"""Attacks against the real bundled model on real photos: known behaviour, pixel-unit budgets,
8-bit round trip through the saved PNG, and failures reported as failures."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from tests._helpers import run_cli as _cli
from transferlab.attack.budget import AttackSpec, margin, parse_eps, quantize
from transferlab.attack.core import AttackNet, run_attack
from transferlab.attack.methods import fgsm, pgd_l2
from transferlab.data.loader import load_image
from transferlab.errors import TransferlabError


@pytest.fixture(scope="module")
def lite0():
    from transferlab.run import load

    run = load("efficientnet_lite0")
    return run, AttackNet(run.model)


@pytest.fixture(scope="module")
def photos(sample_images, petimages) -> torch.Tensor:
    """Four real photos as preprocessed 224x224 inputs: chelsea, coffee, a cat, a dog."""
    from transferlab.models.registry import create_backbone

    dc = create_backbone("efficientnet_lite0").data_config
    files = [sample_images["chelsea"], sample_images["coffee"], petimages / "Cat" / "1.jpg",
             petimages / "Dog" / "1.jpg"]
    return torch.stack([load_image(f, dc) for f in files])


def test_parse_eps():
    assert parse_eps("4/255") == pytest.approx(4 / 255)
    assert parse_eps("0.01") == pytest.approx(0.01)
    assert parse_eps(" 2 / 255 ") == pytest.approx(2 / 255)
    assert parse_eps("none") is None
    for bad in ("abc", "1/0", "-1/255"):
        with pytest.raises(TransferlabError):
            parse_eps(bad)
    with pytest.raises(TransferlabError):
        AttackSpec.make("deepfool")


def test_quantize_stays_inside_an_off_grid_budget():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (2, 3, 8, 8), generator=g).float() / 255  # on the 8-bit grid
    eps = 0.01  # 2.55 levels: naive rounding of x + eps would give 3/255 > eps
    xa = (x + eps * torch.sign(torch.randn(x.shape, generator=g))).clamp(0, 1)
    q = quantize(xa, x, eps)
    assert torch.equal(torch.round(q * 255), q * 255)
    assert (q - x).abs().max() <= eps + 1e-7
    assert (q - x).abs().max() * 255 == pytest.approx(2, abs=1e-4)


def test_pgd_8_255_fools_everything_and_fgsm_is_weaker(lite0, photos):
    run, net = lite0
    y = net.score(photos).argmax(1)  # the model's own labels: clean "accuracy" is 100 %
    spec = AttackSpec.make("pgd", 8 / 255, steps=3, targeted=False, refine=1)
    res = run_attack(net, photos, y, spec)
    assert res.success.all()  # accuracy under PGD 8/255 = 0
    assert (res.x_adv - photos).abs().max() <= 8 / 255 + 1e-6
    assert (net.score(res.x_adv).argmax(1) != y).all()  # scored after 8-bit rounding

    # Targeted at 2/255: one FGSM step toward 'Siamese cat' vs 8 PGD steps (no refinement).
    t = torch.full_like(y, run.class_index("siamese"))
    pgd = run_attack(net, photos, t, AttackSpec.make("pgd", 2 / 255, steps=8, targeted=True, refine=0))
    x_f = quantize(fgsm(net, photos, t, AttackSpec.make("fgsm", 2 / 255, targeted=True)), photos, 2 / 255)
    m_fgsm = margin(net.score(x_f), t, True)
    m_pgd = margin(pgd.logits_adv, t, True)
    assert pgd.success.sum() >= (m_fgsm > 0).sum()
    assert pgd.success.float().mean() >= 0.75
    assert m_pgd.mean() > m_fgsm.mean()


def test_pgd_l2_respects_its_ball(lite0, photos):
    _, net = lite0
    x = photos[:2]
    y = net.score(x).argmax(1)
    gen = torch.Generator().manual_seed(0)
    xa = pgd_l2(net, x, y, AttackSpec.make("pgd-l2", 0.5, steps=3, step_size=0.4, targeted=False), gen=gen)
    assert (xa - x).flatten(1).norm(dim=1).max() <= 0.5 + 1e-4
    assert xa.min() >= 0 and xa.max() <= 1


def test_attack_cli_saved_png_is_what_classify_sees(sample_images, tmp_path, monkeypatch, capsys):
    png = tmp_path / "adv.png"
    code, out, err = _cli(["attack", sample_images["chelsea"], "--target", "golden retriever",
                           "--eps", "2/255", "--steps", "8", "--out", png, "--transfer-to", "mobilenet_v2",
                           "--json", "-q"],
                          monkeypatch, capsys)
    assert code == 0, err
    r = json.loads(out)
    assert r["success"] is True and r["scored_from_saved_png"] is True
    assert r["adversarial"]["class"] == "golden retriever"
    assert r["original"]["class"] in ("tiger cat", "Egyptian cat", "tabby")
    assert r["linf_255"] <= 2 + 1e-4 and r["l2"] > 0 and 30 < r["psnr_db"] < 80
    assert set(r["transfer"]) >= {"model", "success", "adversarial"}
    assert isinstance(r["transfer"]["success"], bool)
    assert (tmp_path / "adv.figure.png").is_file()

    # Lossless 8-bit PNG at the model's input size, within the budget of the preprocessed input.
    im = Image.open(png)
    assert im.format == "PNG" and im.mode == "RGB" and im.size == (224, 224)
    from transferlab.models.registry import create_backbone

    x = load_image(sample_images["chelsea"], create_backbone("efficientnet_lite0").data_config)
    adv = torch.from_numpy(np.array(im)).permute(2, 0, 1).float() / 255
    assert (adv - x).abs().max() <= 2 / 255 + 1e-6

    # The user's path: classify the saved file with the same backbone.
    code, out, err = _cli(["classify", png, "--json", "-k", "3"], monkeypatch, capsys)
    assert code == 0, err
    assert json.loads(out)[0]["top"][0]["label"] == "golden retriever"


def test_failed_attack_is_reported_as_failure(sample_images, tmp_path, monkeypatch, capsys):
    # eps = 0: nothing may change, so the target cannot be reached.
    code, out, err = _cli(["attack", sample_images["coffee"], "--target", "siamese", "--eps", "0",
                           "--steps", "1", "--out", tmp_path / "f.png", "-q"], monkeypatch, capsys)
    assert code == 0, err
    assert "FAILED" in out and "SUCCESS" not in out
    code, out, _ = _cli(["attack", sample_images["coffee"], "--target", "siamese", "--method", "fgsm",
                         "--eps", "1/255", "--out", tmp_path / "g.png", "--json", "-q"], monkeypatch, capsys)
    r = json.loads(out)
    assert r["success"] is False and r["adversarial"]["class"] != "Siamese cat"


def test_attack_cli_user_errors(sample_images, tmp_path, monkeypatch, capsys):
    cases = [
        ["attack", sample_images["chelsea"], "--target", "no such class", "--out", tmp_path / "a.png"],
        ["attack", tmp_path / "missing.jpg", "--untargeted", "--out", tmp_path / "a.png"],
        ["attack", sample_images["chelsea"], "--out", tmp_path / "a.png"],
        ["attack", sample_images["chelsea"], "--untargeted", "--eps", "two", "--out", tmp_path / "a.png"],
        ["attack", sample_images["chelsea"], "--untargeted", "--out", tmp_path / "a.jpg", "--steps", "1"],
    ]
    for args in cases:
        code, _, err = _cli([*args, "-q"], monkeypatch, capsys)
        assert code == 2, (args, err)
        assert err.startswith("error:") and len(err.strip().splitlines()) == 1 and "Traceback" not in err
