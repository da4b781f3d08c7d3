"""The pixel path's networks: a view as one ``nn.Module`` on [0, 1] pixels.

The view's :class:`DataConfig` is the largest member's (with the widest crop of any member, mean 0
/ std 1: each member normalises inside), and each member crops its own share of that view and
resizes it to its own size inside ``forward``, antialiased. Also the geometry both need
(:func:`crop_pct`, :func:`common_config`): a member's crop is cut relative to the view's.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ...data.geometry import DataConfig
from ...errors import TransferlabError, UnknownBackbone
from ..classifier import Backbone

GEM_P = 3.0  # the usual exponent of GeM pooling (Radenovic et al., 2018); not searched
_CROP_TOLERANCE = 0.01  # crop ratios this close count as equal (0.875 vs 224/256, 384/438...)


def crop_pct(dc: DataConfig) -> float:
    return dc.input_size / dc.resize_size


def common_config(configs: list[DataConfig]) -> DataConfig:
    """The view's input: the largest member's size, the widest crop any member wants (so every
    member can cut its own share out of it), normalisation left to the members."""
    big = max(configs, key=lambda d: d.input_size)
    pct = max(crop_pct(d) for d in configs)
    return DataConfig(input_size=big.input_size, resize_size=math.floor(big.input_size / pct),
                      interpolation=big.interpolation, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


class MemberTrunk(nn.Module):
    """One member on the view's pixels: centre-crop its share, resize to its size, its own
    normalisation and trunk. ``backbone`` (not a submodule) is the member as a plain Backbone
    sharing these weights, for the cached path."""

    def __init__(self, backbone: Backbone, common: DataConfig):
        super().__init__()
        self.model = backbone.model
        self.backbone = backbone
        dc = backbone.data_config
        ratio = crop_pct(dc) / crop_pct(common)
        self.crop = round(common.input_size * ratio) if ratio < 1 - _CROP_TOLERANCE else common.input_size
        self.size = dc.input_size
        # the resize as a matrix (rows: output pixels), applied to rows and columns: exactly
        # torch's antialiased kernel, and a MatMul in an ONNX export (the _aa op has no ONNX form)
        self.register_buffer("resample", resample_matrix(self.crop, self.size, dc.interpolation), persistent=False)

    def geometry(self, x: torch.Tensor) -> torch.Tensor:
        """[n, 3, S, S] view pixels -> [n, 3, s, s] this member's pixels."""
        s = x.shape[-1]
        if self.crop < s:
            top = (s - self.crop) // 2
            x = x[..., top:top + self.crop, top:top + self.crop]
        if self.crop != self.size:
            a = self.resample.to(x.dtype)
            x = torch.matmul(torch.matmul(a, x), a.t())
            x = x.clamp(0, 1)  # bicubic overshoots; pixels stay pixels
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.features(self.geometry(x))


def combine_blocks(feats: list[torch.Tensor], norm: str) -> torch.Tensor:
    """Per-member normalisation, then concatenation: the formula of the pixel path, written for
    numpy in :func:`~transferlab.models.views.combine.combine_arrays` for the cached path and the
    auto search. ``l2`` scales each block to norm sqrt(d) (unit mean square, so an MLP head sees
    O(1) inputs whatever the member's width)."""
    if norm == "l2":
        feats = [f * (math.sqrt(f.shape[1]) / f.norm(dim=1, keepdim=True).clamp_min(1e-12)) for f in feats]
    return torch.cat(feats, 1)


def resample_matrix(n_in: int, n_out: int, interpolation: str) -> torch.Tensor:
    """[n_out, n_in]: 1-D resize weights, read off torch's own (antialiased when shrinking)
    kernel by resizing the unit vectors, so in-module resizing matches ``F.interpolate``."""
    mode = interpolation if interpolation in ("bilinear", "bicubic") else "bilinear"
    eye = torch.eye(n_in, dtype=torch.float64).view(n_in, 1, 1, n_in)
    out = F.interpolate(eye, size=(1, n_out), mode=mode, antialias=n_out < n_in, align_corners=False)
    return out.view(n_in, n_out).t().float().contiguous()


class EnsembleTrunk(nn.Module):
    """[0, 1] pixels -> the members' pooled features, each normalised (``norm``), concatenated;
    with ``flip``, averaged with the features of the mirrored image."""

    def __init__(self, members: list[MemberTrunk], norm: str, flip: bool):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.norm, self.flip = norm, flip
        self.dims = [m.backbone.feature_dim for m in members]

    def combine(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return combine_blocks(feats, self.norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.combine([m(x) for m in self.members])
        if self.flip:
            xf = x.flip(-1)
            f = (f + self.combine([m(xf) for m in self.members])) / 2
        return f


class MirrorTrunk(nn.Module):
    """The trunk of the mirrored image: the flipped features of the cached path are this
    network's features, cached under their own key like any backbone's."""

    def __init__(self, trunk: nn.Module):
        super().__init__()
        self.trunk = trunk

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x.flip(-1))


def feature_map(trunk: nn.Module):
    """The trunk's last feature map before pooling, as a callable: timm's ``forward_features``,
    or the ``features`` stack of torchvision's MobileNet/EfficientNet/VGG-style networks."""
    if callable(getattr(trunk, "forward_features", None)):
        return trunk.forward_features
    if isinstance(getattr(trunk, "features", None), nn.Module):
        return trunk.features
    raise UnknownBackbone("gem pooling needs a timm network or a torchvision network with a .features stack; "
                          "use the backbone without :gem")


class GeMTrunk(nn.Module):
    """The trunk's last feature map pooled by generalised mean, ``mean(x^p)^(1/p)`` over the
    positions (computed in fp32: a cube in bf16 keeps 3 significant digits). Written here because
    it is four tensor operations; timm's pooling layers have no GeM."""

    def __init__(self, trunk: nn.Module, p: float = GEM_P):
        super().__init__()
        feature_map(trunk)  # refuse an unsupported network when the view is built
        self.trunk, self.p = trunk, p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = feature_map(self.trunk)(x).float().clamp_min(1e-6)
        return f.pow(self.p).mean((2, 3)).pow(1.0 / self.p)


class NoImageNetHead(nn.Module):
    """A view that mixes, rescales or re-pools members' features has no ImageNet classifier of its
    own: train a run on it (``transferlab train DATA --backbone a+b``)."""

    def __init__(self, dim: int):
        super().__init__()
        self.in_features, self.out_features = dim, 1000

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise TransferlabError("an ensemble (or l2-normalised or gem-pooled) backbone has no ImageNet head; "
                               "train a run on it and use the run")
