"""The static table `transferlab backbones` lists equals what the registry really builds."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from transferlab.models.catalog import BUNDLED, bundled_info
from transferlab.models.registry import create_backbone, list_backbones


def test_every_bundled_spec_has_a_catalog_entry():
    specs = {s.name: s for s in list_backbones() if s.bundled}
    assert set(specs) == {b.name for b in BUNDLED}
    for b in BUNDLED:
        assert (b.package, b.description) == (specs[b.name].package, specs[b.name].description)
        assert b.available() == specs[b.name].available()


@pytest.mark.parametrize("info", BUNDLED, ids=lambda b: b.name)
def test_static_metadata_equals_the_built_backbone(info):
    if not info.available():
        pytest.skip(f"{info.package} not installed")
    outline = create_backbone(info.name)  # what a cached job uses: nothing built yet
    assert not outline.built
    spec = next(s for s in list_backbones() if s.name == info.name)
    built = spec.builder(None)  # the builder's own view, from timm / torchvision and the weights
    dc = built.data_config
    assert outline.data_config == dc and outline.key == built.key
    assert (outline.weights_digest, outline.family, outline.source) == (built.weights_digest, built.family, "bundled")
    assert info.params == built.num_params() == outline.num_params() and outline.built
    assert info.feature_dim == outline.feature_dim == built.model.head.in_features
    assert (info.input_size, info.resize_size, info.interpolation, info.mean, info.std) == (
        dc.input_size, dc.resize_size, dc.interpolation, dc.mean, dc.std)


def test_catalog_needs_no_torch():
    code = "import sys, transferlab.models.catalog as c; c.BUNDLED[0].row(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    assert bundled_info("efficientnet_lite0").input_size == 224 and bundled_info("resnet50") is None


def _cli(*args):
    import os

    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "transferlab", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_backbones_listing_builds_nothing():
    """The listing comes from the static table: torch is never imported (it took 12 s building all four)."""
    code = ("import sys; from transferlab.cli import main; sys.argv = ['transferlab', 'backbones', '--json']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\nprint('torch' in sys.modules, file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stderr.strip().endswith("False"), r.stderr
    assert "efficientnet_lite2" in r.stdout


def test_backbones_name_prints_the_network_summary():
    pytest.importorskip("torchinfo")
    r = _cli("backbones", "efficientnet_lite0", "--depth", "2")
    assert r.returncode == 0, r.stderr
    assert "Conv2dSame (conv_stem)" in r.stdout and "[1, 32, 112, 112]" in r.stdout  # layer, output shape
    assert "Total params: 4,652,008" in r.stdout and "Total mult-adds (M): 385" in r.stdout
    j = _cli("backbones", "mobilenet_v2", "--depth", "1", "--json")
    s = json.loads(j.stdout)
    assert s["params"] == bundled_info("mobilenet_v2").params and s["input_size"] == 224
    assert s["layers"][-1]["output_shape"] == [1, 1000] and s["mult_adds"] > 2e8


def test_backbones_unknown_name_is_a_user_error():
    r = _cli("backbones", "no_such_net")
    assert r.returncode == 2 and "unknown backbone 'no_such_net'" in r.stderr and "Traceback" not in r.stderr


def test_mobilenet_preprocessing_is_torchvisions():
    """The catalog is mobilenet_v2's only source of preprocessing: it must be what torchvision
    ships with the IMAGENET1K_V1 weights (timm backbones are checked against timm's config above)."""
    from torchvision.models import MobileNet_V2_Weights

    t = MobileNet_V2_Weights.IMAGENET1K_V1.transforms()
    dc = create_backbone("mobilenet_v2").data_config
    assert ([dc.input_size], [dc.resize_size], dc.interpolation) == (t.crop_size, t.resize_size, t.interpolation.value)
    assert (list(dc.mean), list(dc.std)) == (list(t.mean), list(t.std))
