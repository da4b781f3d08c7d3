"""Online backbones: any torchvision classifier name or ``timm:<name>``, downloaded through the
libraries' own caches (their real download code paths). Offline, the error names the bundled ones."""

from __future__ import annotations

import hashlib
from functools import lru_cache

from ..data.geometry import DataConfig
from ..errors import BackboneUnavailable, TransferlabError, UnknownBackbone
from .classifier import Backbone, split_last_linear, split_timm, wrap
from .weights import file_digest, load_state_dict, load_strict


def _offline_message(name: str, why: str) -> str:
    from . import efficientnet_lite, mobilenet  # the bundled ones, named in the error

    bundled = [s.name for s in (*efficientnet_lite.SPECS, mobilenet.SPEC)]
    return (
        f"backbone '{name}' needs its weights downloaded and that failed ({why}). "
        f"Offline, use a bundled backbone ({', '.join(bundled)}) "
        f"or pass --weights PATH to a local state dict"
    )


@lru_cache(maxsize=1)
def torchvision_names() -> frozenset[str]:
    import torchvision

    return frozenset(torchvision.models.list_models(module=torchvision.models))


def _download_error(name: str, e: BaseException) -> TransferlabError:
    return BackboneUnavailable(_offline_message(name, str(e).splitlines()[0][:160] or type(e).__name__))


def build_torchvision_online(name: str, weights: str | None) -> Backbone:
    from torchvision.models import get_model, get_model_weights

    w = get_model_weights(name).DEFAULT
    model = get_model(name, weights=None)
    if weights:
        sd, digest, source = load_state_dict(weights), file_digest(weights), "file"
    else:
        try:
            sd = w.get_state_dict(progress=True, check_hash=True)
        except Exception as e:
            raise _download_error(name, e) from None
        digest, source = hashlib.sha256(w.url.encode()).hexdigest()[:16], "online"
    load_strict(model, sd, name, weights or w.url)
    t = w.transforms()
    dc = DataConfig(
        input_size=int(t.crop_size[0]),
        resize_size=int(t.resize_size[0]),
        interpolation=t.interpolation.value,
        mean=tuple(t.mean),
        std=tuple(t.std),
    )
    return wrap(name, model, split_last_linear, dc, digest, source, "torchvision")


def build_timm_online(name: str, weights: str | None) -> Backbone:
    import timm

    arch = name.split(":", 1)[1]
    if arch not in timm.list_models(pretrained=True) and arch not in timm.list_models():
        raise UnknownBackbone(f"timm has no model '{arch}'")
    try:
        model = timm.create_model(arch, pretrained=not weights)
    except Exception as e:
        raise _download_error(name, e) from None
    if weights:
        load_strict(model, load_state_dict(weights), name, weights)
    if model.num_classes != 1000:
        raise BackboneUnavailable(f"{name} is not an ImageNet-1k classifier")
    cfg = timm.data.resolve_data_config(model=model)
    dc = DataConfig.from_crop_pct(
        cfg["input_size"][-1], cfg["crop_pct"], interpolation=cfg["interpolation"],
        mean=tuple(cfg["mean"]), std=tuple(cfg["std"]),
    )
    digest = file_digest(weights) if weights else hashlib.sha256(str(model.pretrained_cfg).encode()).hexdigest()[:16]
    return wrap(name, model, split_timm, dc, digest, "file" if weights else "online", "timm")
