"""Feature views: ensembles of backbones, per-member normalisation, flip averaging — built by
name, cached per member, and one nn.Module on [0, 1] pixels for everything else."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import transferlab as tl
from transferlab import features as F
from transferlab.data.loader import image_array
from transferlab.errors import TransferlabError, UnknownBackbone
from transferlab.models.registry import create_backbone
from transferlab.models.views import parse_view, view_members
from transferlab.run import load

ENS = "efficientnet_lite0+mobilenet_v2"


def _photos(petimages, n=3):
    return [str(petimages / c / f"{i}.jpg") for c in ("Cat", "Dog") for i in range(n)]


def _pixels(paths, dc) -> torch.Tensor:
    return torch.from_numpy(np.stack([image_array(p, dc) for p in paths])).permute(0, 3, 1, 2).float() / 255


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_view_names_parse_and_bad_ones_say_the_syntax():
    s = parse_view("efficientnet_lite2@384+mobilenet_v2:l2,flip")
    assert [(m.name, m.size) for m in s.members] == [("efficientnet_lite2", 384), ("mobilenet_v2", None)]
    assert (s.norm, s.flip) == ("l2", True)
    assert parse_view("timm:resnet50+mobilenet_v2").members[0].name == "timm:resnet50"  # a colon in a name
    for bad in ("efficientnet_lite0@big", "efficientnet_lite0++mobilenet_v2", "efficientnet_lite0:l2,std"):
        with pytest.raises(UnknownBackbone, match=r"NAME@SIZE|at most one"):
            parse_view(bad)
    with pytest.raises(TransferlabError, match="between 32 and 1024"):
        parse_view("efficientnet_lite0@8")


def test_ensemble_is_one_backbone_with_a_canonical_name():
    bb = create_backbone(ENS)
    assert bb.name == "efficientnet_lite0@224+mobilenet_v2@224" and bb.feature_dim == 1280 + 1280
    assert bb.family == "ensemble" and bb.data_config.mean == (0.0, 0.0, 0.0)  # members normalise inside
    assert [m.name for m in view_members(bb)] == ["efficientnet_lite0", "mobilenet_v2"]
    # members are the plain backbones: same cache keys as single-backbone runs
    assert [m.key for m in view_members(bb)] == [create_backbone(n).key for n in ENS.split("+")]
    with pytest.raises(TransferlabError, match="no ImageNet head"):
        bb.model(torch.rand(1, 3, 224, 224))
    plain = create_backbone("efficientnet_lite2@320")  # a single NAME@SIZE is the plain backbone
    assert plain.name == "efficientnet_lite2" and plain.data_config.input_size == 320
    with pytest.raises(TransferlabError, match="give each member's size"):
        create_backbone(ENS, input_size=300)


def test_cached_path_reuses_member_features(petimages):
    paths = _photos(petimages)
    parts = [F.extract(create_backbone(n), paths, progress=False) for n in ENS.split("+")]
    f = F.extract_view(create_backbone(ENS), paths, progress=False)
    assert f.extracted == 0 and f.ok.all()  # every member's features came from its own cache
    np.testing.assert_array_equal(f.features, np.concatenate([p.features for p in parts], 1))
    l2 = F.extract_view(create_backbone(ENS + ":l2"), paths, progress=False)
    norms = np.linalg.norm(l2.features.reshape(len(paths), 2, 1280), axis=2)
    np.testing.assert_allclose(norms, np.sqrt(1280), rtol=1e-4)  # each block scaled to norm sqrt(d)


def test_pixel_path_agrees_with_cached_path(oxford):
    """Members resize inside the module from the largest member's view (lite2 @ 300 here)."""
    paths = sorted(str(p) for p in (oxford / "images").glob("*.jpg"))[:6]
    bb = create_backbone("efficientnet_lite0+efficientnet_lite2@300:l2")
    assert bb.data_config.input_size == 300
    cached = F.extract_view(bb, paths, progress=False, cache=False).features
    with torch.no_grad():
        pixel = bb.model.features(_pixels(paths, bb.data_config)).numpy()
    assert _cosine(cached, pixel).min() > 0.99


def test_flip_view_averages_mirrored_features_cached_under_their_own_key(petimages, tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERLAB_CACHE", str(tmp_path / "cache"))  # whatever other tests cached
    paths = _photos(petimages, 2)
    bb = create_backbone("mobilenet_v2:flip")
    plain = F.extract_view(bb, paths, flip=False, progress=False)
    mirror = F.extract_view(bb, paths, flip=True, progress=False)
    assert mirror.extracted == len(paths)  # not served the unflipped features
    assert not np.allclose(plain.features, mirror.features)
    both = F.extract_view(bb, paths, progress=False)
    assert both.extracted == 0
    np.testing.assert_allclose(both.features, (plain.features + mirror.features) / 2, rtol=1e-6)
    with torch.no_grad():  # the module does the same on pixels, and keeps the ImageNet head
        pix = bb.model.features(_pixels(paths, bb.data_config)).numpy()
        assert bb.model(_pixels(paths[:1], bb.data_config)).shape == (1, 1000)
    assert _cosine(pix, both.features).min() > 0.99  # the cache may hold bf16 features, the module runs fp32


def _csv(path, petimages, ids) -> str:
    lines = ["path,label"] + [f"{petimages / c / f'{i}.jpg'},{c}" for c in ("Cat", "Dog") for i in ids]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def ensemble_run(tmp_path_factory, petimages):
    """lite0 + mobilenet_v2, l2 per member, flip rows: 16 + 16 photos (a quarter held out)."""
    from transferlab.training.api import train

    d = tmp_path_factory.mktemp("ens")
    data = _csv(d / "train.csv", petimages, range(100, 116))
    train(data, backbone=ENS + ":l2", mode="linear", feature_aug="flip", val_fraction=0.25, out=d / "run",
          progress=False)
    return d / "run"


def test_ensemble_run_with_flip_features_trains_evaluates_and_predicts(ensemble_run, petimages, tmp_path):
    cfg = json.loads((ensemble_run / "config.json").read_text())
    assert cfg["backbone"]["name"] == "efficientnet_lite0@224+mobilenet_v2@224:l2,flip"
    assert cfg["train"]["feature_aug"] == "flip" and cfg["head"]["in"] == 2560
    run = load(ensemble_run)
    m = tl.evaluate(run, _csv(tmp_path / "test.csv", petimages, range(2000, 2008)), progress=False)
    # 24 training photos: 14-16 of 16 right depending on the precision (fp32 14, bf16 15);
    # broken features or a mis-wired member would be near chance (13/16 or more by chance: p = 1 %)
    assert m["n"] == 16 and m["accuracy"] >= 13 / 16
    paths = [str(petimages / c / "2010.jpg") for c in ("Cat", "Dog")]
    by_path, _ = run.predict_proba_paths(paths)  # the per-member path the head was trained on
    arrays = [image_array(p, run.data_config) for p in paths]  # in-memory images: the module's pixel path
    by_pixels = run.predict_proba(arrays)
    assert list(by_path.argmax(1)) == list(by_pixels.argmax(1)) == [0, 1]
    assert np.abs(by_path - by_pixels).max() < 0.1


def test_finetune_refuses_an_ensemble(tmp_path, small_pets):
    from transferlab.training.api import train

    with pytest.raises(TransferlabError, match="ensemble"):
        train(small_pets, backbone=ENS, mode="finetune", out=tmp_path / "ft", progress=False)


def test_ensemble_run_works_with_tta_attack_and_export(ensemble_run, petimages, tmp_path):
    """Everything that takes a run takes an ensemble run: TTA, attacks (gradients through the
    members' in-module resize) and the ONNX export (the resize is a MatMul there)."""
    from transferlab.attack.single import attack_image
    from transferlab.export import export_onnx

    run = load(ensemble_run)
    photos = [str(petimages / c / "2012.jpg") for c in ("Cat", "Dog")]
    tta, _ = run.predict_proba_paths(photos, tta="flip")
    assert list(tta.argmax(1)) == [0, 1]
    r = attack_image(photos[0], run, target="Dog", method="pgd", eps="8/255", steps=3, out=tmp_path / "adv.png",
                     figure=False)
    assert r["success"], r
    report = export_onnx(run, tmp_path / "onnx", verify_images=photos)
    assert report.max_abs_dprob < 1e-4 and report.top1_agreement == 1.0


def test_ensemble_robustness_and_head_mode(ensemble_run, petimages, tmp_path):
    from transferlab.attack.robustness import robustness
    from transferlab.training.api import train

    data = _csv(tmp_path / "few.csv", petimages, range(2000, 2002))
    r = robustness(ensemble_run, data, eps=[0, 8 / 255], steps=2, progress=False)
    assert r["images"] == 4 and r["accuracy"][0] >= r["accuracy"][-1]
    run = train(_csv(tmp_path / "train.csv", petimages, range(100, 116)), backbone=ENS, mode="head", epochs=20,
                val_fraction=0.25, out=tmp_path / "head", progress=False)  # the member features are cached
    assert run.config["head"]["in"] == 2560 and run.metrics["val_accuracy"] >= 0.75


def test_gem_view_pools_by_generalised_mean_through_its_own_cache(petimages, tmp_path, monkeypatch):
    """``:gem`` members are cached under their own key; their features are the power mean of the
    last feature map (never below its plain average), on the cached and the pixel path alike."""
    from torch import nn

    from transferlab.models.views import GEM_P, feature_map

    monkeypatch.setenv("TRANSFERLAB_CACHE", str(tmp_path / "cache"))
    s = parse_view("mobilenet_v2+efficientnet_lite0:gem,l2,flip")
    assert (s.pool, s.norm, s.flip) == ("gem", "l2", True)
    assert s.name() == "mobilenet_v2+efficientnet_lite0:l2,gem,flip"  # canonical order
    paths = _photos(petimages, 2)
    bb = create_backbone("efficientnet_lite0:gem")
    assert bb.name == "efficientnet_lite0@224:gem" and bb.feature_dim == 1280
    (member,) = view_members(bb)
    plain = create_backbone("efficientnet_lite0")
    assert member.key != plain.key  # never served the average-pooled features
    gem = F.extract_view(bb, paths, progress=False)
    avg = F.extract(plain, paths, progress=False)
    assert gem.extracted == len(paths) and F.extract_view(bb, paths, progress=False).extracted == 0
    px = _pixels(paths, plain.data_config)
    with torch.no_grad():
        fmap = feature_map(plain.model.trunk)(plain.model.normalize(px)).float()
        by_hand = fmap.clamp_min(1e-6).pow(GEM_P).mean((2, 3)).pow(1 / GEM_P).numpy()
        pixel = bb.model.features(px).numpy()
    assert _cosine(gem.features, by_hand).min() > 0.99 and _cosine(pixel, by_hand).min() > 0.999
    assert (by_hand >= fmap.mean((2, 3)).numpy() - 1e-5).all()  # power mean >= arithmetic mean
    assert _cosine(gem.features, avg.features).max() < 0.99  # a different pooling, not the same features
    with pytest.raises(UnknownBackbone, match="gem pooling needs"):
        feature_map(nn.Linear(3, 3))


def test_gem_run_reloads_attacks_and_exports(petimages, tmp_path):
    """A run on a GeM view is one network on pixels like any other: reloaded by name, attacked
    through the pooling's gradient, exported to ONNX with parity."""
    from transferlab.attack.single import attack_image
    from transferlab.export import export_onnx
    from transferlab.training.api import train

    run = train(_csv(tmp_path / "train.csv", petimages, range(100, 116)), backbone="mobilenet_v2:gem",
                val_fraction=0.25, out=tmp_path / "run", progress=False)
    run = load(run.path)
    assert run.config["backbone"]["name"] == "mobilenet_v2@224:gem" and run.metrics["val_accuracy"] >= 0.75
    photos = [str(petimages / c / "2012.jpg") for c in ("Cat", "Dog")]
    r = attack_image(photos[0], run, target="Dog", method="pgd", eps="8/255", steps=3, out=tmp_path / "adv.png",
                     figure=False)
    assert r["success"], r
    report = export_onnx(run, tmp_path / "onnx", verify_images=photos)
    assert report.max_abs_dprob < 1e-4 and report.top1_agreement == 1.0
