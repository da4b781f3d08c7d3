"""Feature maps of real photos under the real bundled model (and a run directory built here)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from tests._helpers import run_cli as _cli
from transferlab.explain.featuremaps import UnknownLayer, feature_maps, featuremaps, list_layers, resolve_layer


@pytest.fixture(scope="module")
def lite0():
    from transferlab.run import load

    return load("efficientnet_lite0")


def make_run(path, classes: list[str], imagenet_rows: list[int]):
    """A linear-probe run directory whose head copies ImageNet classifier rows: a real model."""
    from safetensors.torch import save_file

    from transferlab.models.registry import create_backbone

    bb = create_backbone("efficientnet_lite0")
    path.mkdir(parents=True, exist_ok=True)
    w = bb.model.head.weight[imagenet_rows].clone().contiguous()
    b = bb.model.head.bias[imagenet_rows].clone().contiguous()
    save_file({"head.weight": w, "head.bias": b}, str(path / "model.safetensors"))
    cfg = {"backbone": {"name": bb.name, "weights_digest": bb.weights_digest}, "classes": classes,
           "head": {"type": "linear", "in": bb.feature_dim, "out": len(classes)}, "mode": "linear"}
    (path / "config.json").write_text(json.dumps(cfg))
    return path


def test_layers_match_model_and_shapes(lite0):
    layers = list_layers(lite0)
    assert [li.name for li in layers] == lite0.backbone.layers()
    shapes = {li.name: li.shape for li in layers}
    assert shapes["conv_stem"] == (32, 112, 112)  # stride 2 at 224 px
    assert shapes["blocks.3"] == (80, 14, 14)
    assert shapes["conv_head"] == (1280, 7, 7)
    # deeper = smaller maps, never larger
    sides = [li.shape[-1] for li in layers]
    assert sides == sorted(sides, reverse=True)


def test_resolve_layer():
    names = ["a", "b", "c", "d"]
    assert resolve_layer(names, None) == "c"
    assert resolve_layer(names, "b") == "b"
    assert resolve_layer(names, "0") == "a"
    with pytest.raises(UnknownLayer, match="inspectable layers: a, b"):
        resolve_layer(names, "blocks.99")


def test_featuremaps_of_chelsea(lite0, sample_images, tmp_path):
    fm, png = featuremaps(sample_images["chelsea"], "efficientnet_lite0", out=tmp_path / "fm.png")
    assert fm.layer == "blocks.3" and fm.activations.shape == (80, 14, 14)
    with Image.open(png) as im:
        assert im.size == (1600, 800) and im.format == "PNG"
    means = fm.activations.reshape(80, -1).mean(1)
    assert list(fm.top_channels) == list(np.argsort(-means)[:16])  # most active first
    # The hooked activation is what the model computes: a deeper layer from the same forward
    # pass feeds the logits that classify chelsea as a cat.
    fm_head = feature_maps(lite0, sample_images["chelsea"], "conv_head")
    pooled = torch.from_numpy(fm_head.activations).mean((1, 2))
    top = lite0.model.head(pooled[None]).argmax().item()
    assert lite0.classes[top] in ("tiger cat", "Egyptian cat", "tabby")


def test_featuremaps_for_a_run_dir(tmp_path, sample_images):
    from transferlab.run import load

    run = load(make_run(tmp_path / "run", ["cat", "espresso"], [285, 967]))
    assert [li.name for li in list_layers(run)][3] == "blocks.2"
    fm, png = featuremaps(sample_images["coffee"], tmp_path / "run", layer="blocks.5", out=tmp_path / "r.png")
    assert fm.activations.shape == (192, 7, 7) and png.is_file()


def test_cli_list_layers_and_errors(monkeypatch, capsys, sample_images, tmp_path):
    code, out, _ = _cli(["featuremaps", "--list-layers", "--json"], monkeypatch, capsys)
    assert code == 0
    rows = json.loads(out)
    assert rows[4] == {"name": "blocks.3", "shape": [80, 14, 14]}
    args = ["featuremaps", sample_images["chelsea"], "--layer", "nope", "--out", tmp_path / "x.png"]
    code, _, err = _cli(args, monkeypatch, capsys)
    assert code == 2 and "no layer 'nope'" in err and "Traceback" not in err
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    code, _, err = _cli(["featuremaps", bad, "--out", tmp_path / "y.png"], monkeypatch, capsys)
    assert code == 2 and "cannot read" in err
    code, out, _ = _cli(["featuremaps", sample_images["astronaut"], "-l", "blocks.1", "--out",
                         tmp_path / "z.png", "--json"], monkeypatch, capsys)
    assert code == 0 and json.loads(out)["shape"] == [24, 56, 56] and (tmp_path / "z.png").is_file()


def test_cli_model_option_and_its_old_names(monkeypatch, capsys, tmp_path):
    """--model/-m takes a backbone name or a run directory; --backbone and --run still work."""
    run = make_run(tmp_path / "run", ["cat", "espresso"], [285, 967])

    def layers(*args):
        code, out, err = _cli(["featuremaps", "--list-layers", "--json", *args], monkeypatch, capsys)
        assert code == 0, err
        return [row["name"] for row in json.loads(out)]

    mobilenet = layers("-m", "mobilenet_v2")
    assert mobilenet == layers("--backbone", "mobilenet_v2") and mobilenet != layers()
    assert layers("--model", run) == layers("--run", run) == layers()  # the run's trunk is lite0's
    code, _, err = _cli(["featuremaps", tmp_path / "missing.jpg", "-m", run, "--out", tmp_path / "m.png"],
                        monkeypatch, capsys)
    assert code == 2 and "image not found" in err  # the run loaded; the photo is what is missing
