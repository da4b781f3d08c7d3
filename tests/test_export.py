"""ONNX export, model card, and the two predictors (onnxruntime without torch; torch over a Run),
on real photos and the bundled Lite0 weights."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transferlab.errors import ImageError
from transferlab.export import (
    ExportedModel,
    ExportError,
    cam_weights,
    export_onnx,
    load_exported,
    load_predictor,
    verification_images,
)
from transferlab.inference import Run

CAT_CLASSES = {"tiger cat", "tabby", "Egyptian cat"}


def _pets(petimages: Path, start: int, n: int) -> list[Path]:
    """``n`` cat and ``n`` dog photos from id ``start`` on (ids >= 2000 are not in small_pets)."""
    return [p for cls in ("Cat", "Dog") for i in range(start, start + n)
            if (p := petimages / cls / f"{i}.jpg").exists()]


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.fixture(scope="module")
def lite0_export(tmp_path_factory, sample_images) -> tuple[Path, object]:
    """The bare efficientnet_lite0 (ImageNet head) exported; by default a bare backbone is
    verified on scikit-image's sample photos."""
    out = tmp_path_factory.mktemp("exports") / "lite0"
    report = export_onnx("efficientnet_lite0", out)
    return out, report


@pytest.fixture(scope="module")
def pets_run(small_pets_run):
    from transferlab.run import load

    return load(small_pets_run)


@pytest.fixture(scope="module")
def pets_export(tmp_path_factory, pets_run, petimages) -> tuple[Path, object]:
    """The trained 2-class linear run exported under umask 022, verified on 16 held-out photos."""
    out = tmp_path_factory.mktemp("exports") / "pets"
    old = os.umask(0o022)
    try:
        report = export_onnx(pets_run, out, verify_images=_pets(petimages, 2000, 8))
    finally:
        os.umask(old)
    return out, report


def test_parity_on_identical_pixels(pets_export, pets_run, petimages):
    out, report = pets_export
    assert report.max_abs_dprob <= 1e-4 and report.top1_agreement == 1.0
    assert report.n_images == 16 and report.verify_source == "given images" and report.cam
    assert {"model.onnx", "labels.json", "preprocessing.json", "head.safetensors", "export.json",
            "MODEL_CARD.md"} <= set(report.files)
    # independently of the report: the same uint8 pixels through both predictors
    onnx, torch_p = load_exported(out), pets_run
    pixels = np.stack([torch_p.preprocess(p) for p in _pets(petimages, 2100, 5)])
    assert pixels.dtype == np.uint8 and pixels.shape == (10, 224, 224, 3)
    po, fo = onnx._forward(pixels)
    pt, ft = torch_p._forward(pixels)
    assert np.abs(po - pt).max() <= 1e-4 and np.abs(fo - ft).max() <= 1e-3
    assert po.shape == (10, 2) and onnx.classes == pets_run.classes == ["Cat", "Dog"]
    # dynamic batch axis: one image alone gives the same answer as inside the batch
    assert np.abs(onnx._forward(pixels[3:4])[0] - po[3:4]).max() <= 1e-5


def test_exported_model_agrees_with_run_on_photos(pets_export, pets_run, petimages):
    """End to end from files: PIL preprocessing vs the training pipeline's torch resize."""
    paths = _pets(petimages, 2200, 20)
    assert len(paths) >= 38
    p_onnx = load_exported(pets_export[0]).predict_proba(paths)
    p_run = pets_run.predict_proba(paths)
    assert p_onnx.shape == p_run.shape == (len(paths), 2)
    assert (p_onnx.argmax(1) == p_run.argmax(1)).mean() >= 0.95
    assert np.abs(p_onnx - p_run).max() < 0.1  # resampling noise, not a different model
    truth = np.array([0 if p.parent.name == "Cat" else 1 for p in paths])
    assert (p_onnx.argmax(1) == truth).mean() >= 0.9


def test_onnx_cam_equals_torch_grad_cam(pets_export, pets_run, petimages):
    from transferlab.inference.cam import grad_cam

    onnx, torch_p = load_exported(pets_export[0]), pets_run
    for path in _pets(petimages, 2300, 2):
        pixels = torch_p.preprocess(path)
        a = onnx.analyze(pixels)  # already S x S: used as is, so both see identical pixels
        ref = grad_cam(pets_run, torch_p_float(pixels))
        assert a.class_idx == int(ref.class_idx[0]) and a.label == pets_run.classes[a.class_idx]
        assert a.cam.shape == ref.cam[0].shape == (7, 7) and a.cam.max() == pytest.approx(1.0)
        assert np.corrcoef(a.cam.ravel(), ref.cam[0].ravel())[0, 1] > 0.99
        t = torch_p.analyze(pixels)
        assert np.abs(t.probs - a.probs).max() <= 1e-4
        assert float(t.embedding @ a.embedding) > 0.9999
        overlay = onnx.heatmap_overlay(a.pixels, a.cam)
        assert overlay.size == (224, 224) and overlay.mode == "RGB"
        assert not np.array_equal(np.asarray(overlay), a.pixels)


def torch_p_float(pixels: np.ndarray):
    import torch

    return torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255.0


def test_mlp_head_cam_weights_match_autograd(tmp_path, pets_run, petimages):
    """The numpy GELU derivative (MLP head) against torch autograd, through a real export."""
    import dataclasses

    import torch

    from transferlab.inference.cam import grad_cam
    from transferlab.models.heads import build_head

    torch.manual_seed(0)
    head = build_head({"type": "mlp", "in": 1280, "hidden": 64, "out": 3, "dropout": 0.1}).eval()
    run = dataclasses.replace(pets_run, network=None, head=head, classes=["a", "b", "c"], path=None, config={})
    photos = _pets(petimages, 2400, 1)
    export_onnx(run, tmp_path / "mlp", verify_images=photos)
    onnx = load_exported(tmp_path / "mlp")
    assert onnx.head["spec"]["type"] == "mlp"
    f = torch.randn(1280) * 0.5
    f.requires_grad_(True)
    for k in range(3):
        (g,) = torch.autograd.grad(head(f[None])[0, k], f)
        np.testing.assert_allclose(cam_weights(onnx.head, f.detach().numpy(), k), g.numpy(), rtol=1e-4, atol=1e-6)
    pixels = run.preprocess(photos[0])
    ref = grad_cam(run, torch_p_float(pixels))
    assert np.corrcoef(onnx.analyze(pixels).cam.ravel(), ref.cam[0].ravel())[0, 1] > 0.99


def test_bare_backbone_export_classifies_chelsea(lite0_export, sample_images):
    out, report = lite0_export
    assert report.max_abs_dprob <= 1e-4 and report.n_images == 3 and report.verify_source == "scikit-image samples"
    model = load_predictor(out)
    assert isinstance(model, ExportedModel) and model.info["kind"] == "onnx"
    assert model.info["backbone"] == "efficientnet_lite0" and len(model.classes) == 1000
    probs = model.predict_proba([sample_images["chelsea"], sample_images["coffee"]])
    assert model.classes[int(probs[0].argmax())] in CAT_CLASSES
    assert model.classes[int(probs[1].argmax())] == "espresso" and probs[1].max() > 0.8
    meta = json.loads((out / "export.json").read_text())
    assert meta["opset"] >= 17 and meta["backbone"]["source"] == "bundled" and meta["threshold"] is None
    assert "Apache-2.0" in (out / "MODEL_CARD.md").read_text()


def test_torchvision_trunk_exports_its_feature_map(tmp_path, sample_images):
    """MobileNetV2 (torchvision: the map is found by a forward hook, bilinear preprocessing)."""
    from transferlab.inference.cam import feature_map_split, grad_cam
    from transferlab.run import load

    run = load("mobilenet_v2")
    report = export_onnx(run, tmp_path / "mnv2", verify_images=[sample_images["chelsea"]])
    assert report.max_abs_dprob <= 1e-4 and report.cam and report.fmap_hw == [7, 7]
    onnx = load_exported(tmp_path / "mnv2")
    assert onnx.pre["interpolation"] == "bilinear" and onnx.pre["mean"] == [0.485, 0.456, 0.406]
    pixels = run.preprocess(sample_images["chelsea"])
    split = feature_map_split(run.model, run.backbone.family)
    fmap, _ = split(run.model.normalize(torch_p_float(pixels)))
    assert split.name == "features" and tuple(fmap.shape) == (1, 1280, 7, 7)
    a = onnx.analyze(pixels)
    assert a.label in CAT_CLASSES
    ref = grad_cam(run, torch_p_float(pixels))
    assert np.corrcoef(a.cam.ravel(), ref.cam[0].ravel())[0, 1] > 0.99


def test_default_verification_images_come_from_the_run_data(pets_run, small_pets):
    photos, source = verification_images(pets_run, n=10)
    assert source == "training data" and len(photos) == 10
    assert all(Path(p).is_file() and Path(p).is_relative_to(small_pets) for p in photos)
    assert {Path(p).parent.name for p in photos} == {"Cat", "Dog"}  # spread over the list, not its head


def test_load_predictor_falls_back_to_torch(small_pets_run):
    p = load_predictor(small_pets_run)
    assert isinstance(p, Run) and p.info["kind"] == "torch" and p.classes == ["Cat", "Dog"]


def test_embeddings_find_a_near_duplicate(lite0_export, sample_images):
    model = load_exported(lite0_export[0])
    chelsea = Image.open(sample_images["chelsea"])
    w, h = chelsea.size
    copy = chelsea.resize((w // 2, h // 2)).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    e = model.embed([chelsea, np.asarray(copy), sample_images["coffee"], sample_images["astronaut"]])
    assert e.shape == (4, 1280) and np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    sim = e @ e[0]
    assert sim[1] > 0.8 and sim[1] > sim[2] + 0.3 and sim[1] > sim[3] + 0.3


def test_predicts_without_torch(lite0_export, sample_images):
    """A fresh interpreter where any ``import torch`` fails: export's predictor must still work."""
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # any import of torch now raises ImportError
        import numpy as np
        from transferlab.export import load_exported, load_predictor
        m = load_predictor({str(lite0_export[0])!r})
        p = m.predict_proba([{str(sample_images["chelsea"])!r}])
        a = m.analyze({str(sample_images["chelsea"])!r})
        m.heatmap_overlay(a.pixels, a.cam)
        assert abs(float(np.linalg.norm(m.embed([a.pixels])[0])) - 1) < 1e-5
        assert int(p[0].argmax()) == a.class_idx
        print(m.classes[a.class_idx], a.cam.shape, sorted(k for k in sys.modules if k.startswith("torch")))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    label, _, rest = r.stdout.strip().rpartition(" (7, 7) ")
    assert label in CAT_CLASSES and rest == "['torch']"  # only the blocked placeholder


def test_existing_out_dir_refused_and_overwrite(tmp_path, small_pets_run, petimages):
    """Refusal leaves the directory untouched; overwrite swaps in a complete export atomically.
    The run's config threshold (``predict.threshold``) travels into the export."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="not empty"):
        export_onnx(small_pets_run, out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    run_dir = tmp_path / "run"
    shutil.copytree(small_pets_run, run_dir)
    cfg = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps({**cfg, "predict": {"threshold": 0.7}}))
    report = export_onnx(run_dir, out, verify_images=_pets(petimages, 2500, 1), overwrite=True)
    assert not (out / "keep.txt").exists() and "model.onnx" in report.files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "run"]  # no temp dirs left
    assert load_exported(out).threshold == 0.7
    assert load_predictor(run_dir).threshold == 0.7


def test_bad_images_raise_image_error(pets_export, pets_run, tmp_path, petimages, monkeypatch):
    good = petimages / "Cat" / "2000.jpg"
    truncated = tmp_path / "trunc.jpg"
    truncated.write_bytes(good.read_bytes()[:600])
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo")
    for predictor in (load_exported(pets_export[0]), pets_run):
        for bad, why in [(truncated, "trunc.jpg"), (text, "not an image"), (tmp_path / "gone.jpg", "not found"),
                         (tmp_path, "directory|not an image file"), (np.zeros((5, 5), np.float32), "uint8")]:
            with pytest.raises(ImageError, match=why):
                predictor.predict_proba([good, bad])
    results = load_exported(pets_export[0]).predict([good, text, good], top_k=1)
    assert [r["status"] for r in results] == ["ok", "error", "ok"]
    assert results[1]["error"] == "not an image" and results[0]["top"][0]["label"] == "Cat"
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 180 x 180 is now a "bomb"
    with pytest.raises(ImageError, match="decompression bomb"):
        load_exported(pets_export[0]).analyze(good)


def test_export_files_have_normal_modes(pets_export):
    out, _ = pets_export
    assert (out.stat().st_mode & 0o777) == 0o755
    for f in out.iterdir():
        assert (f.stat().st_mode & 0o777) == 0o644, f.name


def test_model_card_reports_data_metrics_and_parity(pets_export, small_pets_run):
    out, report = pets_export
    card = (out / "MODEL_CARD.md").read_text()
    metrics = json.loads((small_pets_run / "metrics.json").read_text())
    assert "- Cat" in card and "- Dog" in card and "Apache-2.0" in card
    assert f"accuracy {metrics['val']['accuracy']:.1%}" in card
    assert "~48 photos per class" in card  # 60 per class, 20 % held out
    assert f"{report.max_abs_dprob:.1e}" in card
    pre = json.loads((out / "preprocessing.json").read_text())
    assert pre["input_size"] == 224 and pre["resize_size"] == 256 and pre["interpolation"] == "bicubic"
    assert pre["input_layout"] == "NHWC" and pre["input_dtype"] == "uint8" and pre["mean"] == [0.5, 0.5, 0.5]


def test_an_export_predicts_a_folder_like_the_run(pets_export, pets_run, small_pets):
    from transferlab.inference.load import load_model

    exported = load_model(pets_export[0]).predict(small_pets / "Dog", top_k=1)
    same = pets_run.predict(small_pets / "Dog", top_k=1)
    assert len(exported) == 60 and [r["path"] for r in exported] == [r["path"] for r in same]
    top = [r["top"][0]["label"] for r in exported]  # the answer before "unsure" (scores sit near the cut-off)
    assert top == [r["top"][0]["label"] for r in same] and top.count("Dog") >= 57
