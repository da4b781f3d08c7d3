"""SavedModel and LiteRT exports (the ``tensorflow`` extra): one conversion of the trained
2-class Lite0 run, shared by the module, checked on real photos against PyTorch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch._dynamo  # noqa: F401 - before TensorFlow: triton (via dynamo) loaded after TF 2.21 segfaults
import torchvision  # noqa: F401

pytest.importorskip("tensorflow")
pytest.importorskip("onnx2tf")
pytest.importorskip("ai_edge_litert")

from transferlab.export import export_tf
from transferlab.export.tflite import read_metadata
from transferlab.inference import LiteRTModel, SavedModelPredictor, load_model
from transferlab.inference.layout import SMALL_TFLITE as SMALL
from transferlab.inference.layout import TFLITE


def _pets(petimages: Path, start: int, n: int) -> list[Path]:
    return [p for cls in ("Cat", "Dog") for i in range(start, start + n)
            if (p := petimages / cls / f"{i}.jpg").exists()]


@pytest.fixture(scope="module")
def pets_run(small_pets_run):
    from transferlab.run import load

    return load(small_pets_run)


@pytest.fixture(scope="module")
def tf_export(tmp_path_factory, pets_run, petimages):
    """Both TensorFlow formats in one folder, from one conversion, verified on 16 held-out photos."""
    out = tmp_path_factory.mktemp("exports") / "pets-tf"
    report = export_tf(pets_run, out, formats=("savedmodel", "tflite"), verify_images=_pets(petimages, 2000, 8))
    return out, report


@pytest.fixture(scope="module")
def lite_only(tf_export, tmp_path_factory) -> Path:
    """The same export without its SavedModel: what a phone app ships."""
    d = tmp_path_factory.mktemp("exports") / "pets-lite"
    shutil.copytree(tf_export[0], d, ignore=shutil.ignore_patterns("saved_model"))
    return d


def test_every_file_agrees_with_pytorch(tf_export, pets_run):
    out, r = tf_export
    checks = {c.file: c for c in r.checks}
    assert set(checks) == {"saved_model", TFLITE, SMALL}
    for name in ("saved_model", TFLITE):
        assert checks[name].max_abs_dprob <= 1e-3 and checks[name].top1_agreement == 1.0
    assert checks[SMALL].top1_agreement >= 0.99 and checks[SMALL].img_s > 0 and r.torch_img_s > 0
    assert checks[SMALL].size_bytes < 0.4 * checks[TFLITE].size_bytes  # int8 weights: about a quarter
    assert r.onnx.n_images == 16 and r.val_images == json.loads((pets_run.path / "config.json").read_text())[
        "data"]["val_images"]
    assert checks[SMALL].val_accuracy >= 0.9 and checks[TFLITE].val_accuracy >= 0.9
    assert {"saved_model", TFLITE, SMALL, "labels.json", "preprocessing.json", "head.safetensors", "export.json",
            "README.md", "MODEL_CARD.md"} == set(r.files)  # no model.onnx: it was not asked for
    info = json.loads((out / "export.json").read_text())
    assert info["formats"] == ["savedmodel", "tflite"] and "onnx2tf" in info["tensorflow"]["converter"]
    card = (out / "MODEL_CARD.md").read_text()
    assert "## TensorFlow and LiteRT" in card and f"{checks[SMALL].val_accuracy:.1%}" in card
    assert f"{checks[SMALL].size_bytes / 1e6:.1f} MB" in card


def test_savedmodel_signature_and_keras(tf_export, pets_run, petimages):
    import keras
    import tensorflow as tf

    out, _ = tf_export
    sig = tf.saved_model.load(str(out / "saved_model")).signatures["serving_default"]
    (spec,) = sig.structured_input_signature[1].values()
    assert spec.dtype == tf.uint8 and spec.shape.as_list() == [None, 224, 224, 3]
    assert {"probs", "logits", "features", "fmap"} <= set(sig.structured_outputs)
    pixels = np.stack([pets_run.preprocess(p) for p in _pets(petimages, 2100, 5)])
    pt, ft = pets_run._forward(pixels)
    outs = sig(pixels=tf.constant(pixels))
    assert np.abs(outs["probs"].numpy() - pt).max() <= 1e-3
    # the frozen feature extractor of the Keras notebook
    layer = keras.layers.TFSMLayer(str(out / "saved_model"), call_endpoint="embed", trainable=False)
    feats = np.asarray(layer(pixels))
    assert feats.shape == (10, 1280) and np.abs(feats - ft).max() <= 1e-3 * max(1.0, np.abs(ft).max())


def test_litert_file_describes_itself(tf_export):
    from ai_edge_litert.interpreter import Interpreter

    out, _ = tf_export
    for name in (TFLITE, SMALL):
        meta = read_metadata(out / name)
        assert json.loads(meta["transferlab.labels"]) == ["Cat", "Dog"]
        assert json.loads(meta["transferlab.preprocessing"]) == json.loads((out / "preprocessing.json").read_text())
        runner = Interpreter(model_path=str(out / name)).get_signature_runner("serving_default")
        (inp,) = runner.get_input_details().values()
        assert inp["dtype"] == np.uint8 and list(inp["shape_signature"]) == [-1, 224, 224, 3]


def test_predictors_read_both_formats(tf_export, lite_only, pets_run, petimages):
    out, _ = tf_export
    sm, lite = load_model(out), load_model(lite_only)
    assert isinstance(sm, SavedModelPredictor) and isinstance(lite, LiteRTModel)
    assert sm.info["kind"] == "savedmodel" and lite.info["kind"] == "litert" and lite.classes == ["Cat", "Dog"]
    photos = _pets(petimages, 2200, 10)
    truth = np.array([p.parent.name == "Dog" for p in photos], int)
    p_sm, p_lite = sm.predict_proba(photos), lite.predict_proba(photos)
    small = LiteRTModel(lite_only, small=True).predict_proba(photos)
    assert np.abs(p_sm - p_lite).max() <= 1e-3  # same PIL pixels, two engines
    assert (p_lite.argmax(1) == truth).mean() >= 0.9 and (small.argmax(1) == p_lite.argmax(1)).mean() >= 0.9
    assert (np.sum(lite.embed(photos[:4]) * sm.embed(photos[:4]), axis=1) > 0.9999).all()  # cosine, same photo


def test_litert_cam_matches_torch_grad_cam(lite_only, pets_run, petimages):
    from transferlab.inference.cam import grad_cam
    from transferlab.inference.torch_model import to_float

    lite = LiteRTModel(lite_only)
    pixels = pets_run.preprocess(_pets(petimages, 2300, 1)[0])
    a, ref = lite.analyze(pixels), grad_cam(pets_run, to_float(pixels[None]))
    assert a.class_idx == int(ref.class_idx[0]) and a.cam.shape == ref.cam[0].shape == (7, 7)
    assert np.corrcoef(a.cam.ravel(), ref.cam[0].ravel())[0, 1] > 0.99


def test_cli_predict_takes_a_litert_export(lite_only, petimages):
    from typer.testing import CliRunner

    from transferlab.apps import cli

    photos = _pets(petimages, 2400, 5)
    res = CliRunner().invoke(cli.app, ["predict", str(lite_only), *map(str, photos), "--json", "--top-k", "1"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert len(rows) == 10 and np.mean([r["top"][0]["label"] == Path(r["path"]).parent.name for r in rows]) >= 0.9


def test_cli_refuses_a_full_folder_and_missing_extra(tmp_path, small_pets_run):
    from typer.testing import CliRunner

    from transferlab.apps import cli

    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    res = CliRunner().invoke(cli.app, ["export", str(small_pets_run), "--format", "tflite", "--out", str(out)])
    # in-process the error surfaces as is; main() (below, in a subprocess) turns it into exit code 2
    assert "not empty" in str(res.exception) and [p.name for p in out.iterdir()] == ["keep.txt"]
    # without the extra: one line naming it, exit 2, nothing written
    code = textwrap.dedent(f"""
        import sys
        sys.modules["onnx2tf"] = None
        sys.argv = ["transferlab", "export", {str(small_pets_run)!r}, "--format", "savedmodel",
                    "--out", {str(tmp_path / "new")!r}]
        from transferlab.cli import main
        main()
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "transferlab[tensorflow]" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "new").exists()


def test_tf_exports_predict_without_torch(tf_export, lite_only, petimages):
    """A fresh interpreter where any ``import torch`` fails: both TensorFlow readers still predict."""
    photos = [str(p) for p in _pets(petimages, 2500, 2)]
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # any import of torch now raises ImportError
        from transferlab.inference import load_model
        for folder in ({str(tf_export[0])!r}, {str(lite_only)!r}):
            m = load_model(folder)
            print(m.info["kind"], [r["top"][0]["label"] for r in m.predict({photos!r}, top_k=1)])
        print(sorted(k for k in sys.modules if k.split(".")[0] == "torch"))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.strip().splitlines()
    said = [str([r["top"][0]["label"] for r in load_model(d).predict(photos, top_k=1)])
            for d in (tf_export[0], lite_only)]
    assert lines[-3:] == [f"savedmodel {said[0]}", f"litert {said[1]}", "['torch']"]  # as with torch loaded


def test_serve_takes_a_litert_export(lite_only, tmp_path, petimages):
    """The web app on a phone export: the same answer as the reader, and the heat map from LiteRT's feature map."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from transferlab.apps.serve import Settings, create_app

    photo = _pets(petimages, 2600, 1)[0]
    with TestClient(create_app(Settings(model=str(lite_only), db=str(tmp_path / "catalog.sqlite")))) as client:
        r = client.post("/api/predict", files={"file": (photo.name, photo.read_bytes(), "image/jpeg")})
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["top"][0]["label"] == LiteRTModel(lite_only).predict([photo], top_k=1)[0]["top"][0]["label"]
    assert j["heatmap"].startswith("data:image/jpeg;base64,")


def test_float16_replaces_int8_when_int8_disagrees(tmp_path, pets_run, petimages, monkeypatch):
    """A model whose int8 weights miss the 99 % agreement bar gets float16 weights instead (half
    the size), said in the report and the card; the reader's small variant is that file."""
    import dataclasses

    from transferlab.export import tf as tf_export_module

    check = tf_export_module._check

    def int8_disagrees(*args, **kwargs):
        c = check(*args, **kwargs)
        return dataclasses.replace(c, top1_agreement=0.5) if c.weights == "int8" else c

    monkeypatch.setattr(tf_export_module, "_check", int8_disagrees)
    out = tmp_path / "f16"
    r = export_tf(pets_run, out, formats=["tflite"], verify_images=_pets(petimages, 2000, 4))
    small = {c.file: c for c in r.checks}["model_float16.tflite"]
    assert small.weights == "float16" and small.max_abs_dprob <= 1e-3 and small.top1_agreement == 1.0
    assert 0.4 < small.size_bytes / {c.file: c for c in r.checks}[TFLITE].size_bytes < 0.6
    assert not (out / SMALL).exists() and any("model_int8.tflite agreed" in n for n in r.notes)
    assert LiteRTModel(out, small=True).model_file == "model_float16.tflite"
    assert json.loads((out / "export.json").read_text())["tensorflow"]["small_variant"]["weights"] == "float16"
    assert "`model_float16.tflite` (float16 weights" in (out / "MODEL_CARD.md").read_text()
