"""Look inside a network: which layers there are, and what one of them sees in a photo.

``featuremaps`` runs the photo through the model with a forward hook on one block and draws
(1) the photo with the channel-mean activation overlaid as a heat map and (2) the most active
channels, each over a grey thumbnail of the photo, so you can see *where* each channel fires.
Works for a bare backbone and for a run (a fine-tuned trunk shows its own, changed features).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import TransferlabError


class UnknownLayer(TransferlabError):
    """--layer names no inspectable layer of this model."""


@dataclass(frozen=True)
class LayerInfo:
    name: str
    shape: tuple[int, ...]  # output [C, H, W] at the model's input size

    def __str__(self) -> str:
        return f"{self.name}  {'x'.join(map(str, self.shape))}"


def _trunk_layers(model: nn.Module) -> list[str]:
    from ..models.classifier import inspectable_layers

    return inspectable_layers(model.trunk)


@torch.no_grad()
def _capture(model: nn.Module, x: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    """Outputs of ``model.trunk`` submodules ``names`` for input ``x`` (one forward pass)."""
    acts: dict[str, torch.Tensor] = {}
    hooks = [
        model.trunk.get_submodule(n).register_forward_hook(
            lambda _m, _i, o, n=n: acts.__setitem__(n, o.detach())
        )
        for n in names
    ]
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return acts


def list_layers(run) -> list[LayerInfo]:
    """Inspectable layers of ``run`` (a :class:`~transferlab.run.Run`), shallow to deep, with
    their output shapes at the model's input size."""
    names = _trunk_layers(run.model)
    s = run.data_config.input_size
    acts = _capture(run.model, torch.zeros(1, 3, s, s), names)
    return [LayerInfo(n, tuple(acts[n].shape[1:])) for n in names if acts[n].dim() == 4]


def default_layer(names: list[str]) -> str:
    """A mid-level block: past edges and colours, before the features turn class-specific."""
    return names[len(names) // 2]


def resolve_layer(names: list[str], layer: str | None) -> str:
    if layer is None:
        return default_layer(names)
    if layer in names:
        return layer
    if layer.isdigit() and int(layer) < len(names):  # position in the listing
        return names[int(layer)]
    raise UnknownLayer(f"no layer '{layer}'; inspectable layers: {', '.join(names)}")


@dataclass
class FeatureMaps:
    layer: str
    activations: np.ndarray = field(repr=False)  # [C, h, w]
    image: np.ndarray = field(repr=False)  # [S, S, 3] float in [0, 1]: what the model saw
    top_channels: list[int]  # most active first (by mean activation)

    def plot(self, title: str = "", out: str | Path | None = None):
        """The photo with the layer's mean response, and the 16 most active channels."""
        from ..report.figures import FEATUREMAPS_DPI, plot_featuremaps, save_figure

        fig = plot_featuremaps(self.image, self.activations, self.top_channels, self.layer, title)
        if out is not None:
            save_figure(fig, out, dpi=FEATUREMAPS_DPI, tight=False)
        return fig

    def to_dict(self) -> dict:
        return {"layer": self.layer, "shape": list(self.activations.shape),
                "top_channels": self.top_channels,
                "top_channel_means": [float(self.activations[c].mean()) for c in self.top_channels]}


def feature_maps(run, image, layer: str | None = None, n_channels: int = 16) -> FeatureMaps:
    """Activations of ``layer`` for ``image`` (path or PIL image) under ``run``'s model."""
    from PIL import Image

    from ..data.loader import load_image

    names = [li.name for li in list_layers(run)]
    layer = resolve_layer(names, layer)
    dc = run.data_config
    x = dc.preprocess(image.convert("RGB")) if isinstance(image, Image.Image) else load_image(image, dc)
    a = _capture(run.model, x[None], [layer])[layer][0].float().numpy()
    order = np.argsort(-a.reshape(a.shape[0], -1).mean(1))[:n_channels]
    return FeatureMaps(layer, a, x.permute(1, 2, 0).numpy(), [int(c) for c in order])


def draw(fm: FeatureMaps, path: str | Path, title: str = "") -> Path:
    """The figure of :func:`transferlab.report.figures.featuremaps_figure` for ``fm``."""
    from ..report.figures import featuremaps_figure

    return featuremaps_figure(fm.image, fm.activations, fm.top_channels, path, fm.layer, title)


def featuremaps(image, model: str | Path = "efficientnet_lite0", layer: str | None = None,
                out: str | Path = "featuremaps.png", n_channels: int = 16) -> tuple[FeatureMaps, Path]:
    """One call: load ``model`` (run directory or backbone name), draw ``layer`` for ``image``."""
    from ..inference.load import load

    run = load(model)
    fm = feature_maps(run, image, layer, n_channels)
    name = Path(image).name if isinstance(image, (str, Path)) else "image"
    c, h, w = fm.activations.shape
    title = f"{Path(run.name).name} · {fm.layer} ({c}x{h}x{w}) · {name}"
    return fm, draw(fm, out, title)
