"""Backbone registry: name -> pretrained network + the preprocessing it was trained with.

Modelled on timm's ``create_model``: a registry of builders, and a data config that travels with
the model. Everything downstream (features, training, attacks, dreams, export) asks the backbone
for its input size, resize, interpolation, mean and std; nothing else spells ImageNet constants.

Every caller gets its own network: the built weights are cached (building reads and renames a
state dict), and :func:`create_backbone` hands out a deep copy, so one caller converting its model
(channels_last, another device, fine-tuning) never changes what another caller holds.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

from ..data.geometry import DataConfig
from ..errors import UnknownBackbone
from ..options import INPUT_SIZE
from . import efficientnet_lite, hub, mobilenet
from .catalog import bundled_info
from .classifier import Backbone, BackboneSpec
from .views import create_view, is_view_name
from .weights import file_digest, package_file

DEFAULT_BACKBONE = "efficientnet_lite0"


_REGISTRY: dict[str, BackboneSpec] = {s.name: s for s in (*efficientnet_lite.SPECS, mobilenet.SPEC)}


def register_backbone(name: str, *, package: str = "", description: str = ""):
    def deco(fn: Callable[[str | None], Backbone]):
        _REGISTRY[name] = BackboneSpec(name, fn, bool(package), package, description)
        return fn

    return deco


def list_backbones() -> list[BackboneSpec]:
    """Registered (bundled) backbones. Any torchvision model name or ``timm:<name>`` also works."""
    return list(_REGISTRY.values())


def bundled_names() -> list[str]:
    return [s.name for s in _REGISTRY.values() if s.bundled]


def create_backbone(name: str = DEFAULT_BACKBONE, weights: str | Path | None = None,
                    input_size: int | None = None) -> Backbone:
    """Build a backbone by name, in eval mode on CPU.

    ``name``: a registered name (bundled weights), a torchvision model name (``resnet50``...),
    or ``timm:<model>``. ``weights``: optional local state dict (.safetensors, or .pth/.pt read
    with ``weights_only=True``) to use instead of the default weights. ``input_size``: run the
    network at another square input size (like timm's ``--img-size``; the resize keeps the
    backbone's crop ratio). CNNs pool globally, and one trained with random-resized crops sees
    objects larger than a centre crop shows them, so a somewhat larger test size often helps
    (Touvron et al. 2019, "FixRes").

    Ensembles and feature views (``efficientnet_lite2@384+mobilenet_v2:l2,flip``, or a single
    ``NAME@SIZE``) are built by :func:`transferlab.models.views.create_view`.
    """
    if is_view_name(name):
        return create_view(name, create_backbone, weights=weights, input_size=input_size)
    cached = _create_cached(name, str(weights) if weights else None)
    bb = replace(cached, network=None, build=lambda: copy.deepcopy(cached.model))  # the caller's own, when used
    dc = bb.data_config
    if input_size is None or int(input_size) == dc.input_size:
        return bb
    input_size = INPUT_SIZE("input_size", input_size)
    resized = DataConfig.from_crop_pct(int(input_size), dc.input_size / dc.resize_size, interpolation=dc.interpolation,
                                       mean=dc.mean, std=dc.std)
    return replace(bb, data_config=resized)  # same network: only its input geometry differs


def _outline(spec: BackboneSpec) -> Backbone:
    """A bundled backbone whose network is built on first use: its preprocessing and feature size
    come from the static catalog and its identity from the weights file's digest, so a job that
    finds every feature cached never imports timm or reads the weights.
    ``tests/test_models_catalog.py`` checks each outline against the built backbone."""
    info = bundled_info(spec.name)
    path = package_file(spec.package, spec.weights_file)
    dc = DataConfig(info.input_size, info.resize_size, info.interpolation, info.mean, info.std)
    return Backbone(name=spec.name, data_config=dc, feature_dim=info.feature_dim, weights_digest=file_digest(path),
                    source="bundled", family=info.family, build=lambda: _frozen(spec.builder(None).model))


@lru_cache(maxsize=4)
def _create_cached(name: str, weights: str | None) -> Backbone:
    """The backbone, read once per process; never handed out (see :func:`create_backbone`)."""
    if name in _REGISTRY and weights is None and bundled_info(name) is not None:
        return _outline(_REGISTRY[name])
    if name in _REGISTRY:
        bb = _REGISTRY[name].builder(weights)
    elif name.startswith("timm:"):
        bb = hub.build_timm_online(name, weights)
    elif name in hub.torchvision_names():
        bb = hub.build_torchvision_online(name, weights)
    else:
        raise UnknownBackbone(
            f"unknown backbone '{name}'. Bundled: {', '.join(bundled_names())}; "
            "online: any torchvision classification model (e.g. resnet50, vgg16) or timm:<name>"
        )
    _frozen(bb.model)
    return bb


load_backbone = create_backbone


def _frozen(model):
    """In eval mode, no gradients: how every backbone is handed out (fine-tuning unfreezes its own)."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
