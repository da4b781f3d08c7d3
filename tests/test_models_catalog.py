"""The static table `transferlab backbones` lists equals what the registry really builds."""

from __future__ import annotations

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
    bb = create_backbone(info.name)
    dc = bb.data_config
    assert info.params == bb.num_params() == sum(p.numel() for p in bb.model.parameters())
    assert info.feature_dim == bb.feature_dim == bb.model.head.in_features
    assert (info.input_size, info.resize_size, info.interpolation) == (dc.input_size, dc.resize_size,
                                                                        dc.interpolation)


def test_catalog_needs_no_torch():
    code = "import sys, transferlab.models.catalog as c; c.BUNDLED[0].row(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    assert bundled_info("efficientnet_lite0").input_size == 224 and bundled_info("resnet50") is None
