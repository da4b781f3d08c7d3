"""Feature views: ensembles of backbones, per-member normalisation and flip averaging, as one
backbone.

Name syntax (what ``--backbone`` takes and what a run directory records)::

    MEMBER[+MEMBER...][:OPTION[,OPTION]]      MEMBER = NAME[@SIZE]      OPTION = l2 | std | gem | flip

``efficientnet_lite2@384+efficientnet_lite1+mobilenet_v2`` concatenates the pooled features of
three networks, each at its own input size (``@384``: that size, keeping the member's crop
ratio). ``l2`` scales each member's block to unit L2 norm (times sqrt(d), so values stay O(1) for
an MLP head); ``std`` (the default) leaves the raw features, which every head standardises per
dimension anyway (the linear probe's StandardScaler). ``gem`` pools each member's last feature
map by generalised mean (p = 3) instead of the plain average: it weighs the strongest responses
(an ear, a muzzle) more, which helps fine-grained classes (Oxford breeds: +0.1 to +0.8 points on
every bundled backbone and on an ensemble; BENCHMARKS.md, session 7). ``flip`` averages the
features of the image and its mirror (feature-level test-time augmentation). A single
``NAME@SIZE`` is the plain backbone at that size.

Two paths compute the same features, and this is the documented choice of the issue:

- **cached path** (training, evaluate, review, auto search): every member runs through the normal
  cached :func:`transferlab.features.extract` with *its own* preprocessing from the original
  photo, so an ensemble reuses every feature its members ever cached (and vice versa);
  :func:`transferlab.features.extract_view` combines them.
- **pixel path** (predict on in-memory images, TTA, attacks, robustness, export, serve): the view
  is one ``nn.Module`` on [0, 1] pixels. Its :class:`DataConfig` is the largest member's (with the
  widest crop of any member, mean 0 / std 1: each member normalises inside), and each member crops
  its own share of that view and resizes it to its own size inside ``forward``, antialiased.

The two differ by one extra resampling of the pixels (cosine similarity of the features > 0.98 on
real photos, see ``tests/test_ensemble.py``); predictions agree on nearly every photo.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.geometry import DataConfig
from ..errors import TransferlabError, UnknownBackbone
from .classifier import Backbone, ImageClassifier, Normalize

NORMS = ("std", "l2")
OPTIONS = (*NORMS, "gem", "flip")
GEM_P = 3.0  # the usual exponent of GeM pooling (Radenovic et al., 2018); not searched
_CROP_TOLERANCE = 0.01  # crop ratios this close count as equal (0.875 vs 224/256, 384/438...)


@dataclass(frozen=True)
class MemberSpec:
    name: str
    size: int | None = None  # None: the backbone's own input size


@dataclass(frozen=True)
class ViewSpec:
    """A parsed view name: the members, how each is normalised, and flip averaging."""

    members: tuple[MemberSpec, ...]
    norm: str = "std"
    flip: bool = False
    pool: str = "avg"

    @property
    def is_plain(self) -> bool:
        """One member, no option: just a backbone (perhaps at another size)."""
        return len(self.members) == 1 and self.norm == "std" and not self.flip and self.pool == "avg"

    def name(self, sizes: list[int] | None = None) -> str:
        """Canonical name: every member with its size (``sizes``, else the members' own), options
        in a fixed order."""
        sizes = sizes or [m.size for m in self.members]
        body = "+".join(f"{m.name}@{s}" if s else m.name for m, s in zip(self.members, sizes, strict=True))
        opts = [o for o in (self.norm if self.norm != "std" else "", "gem" if self.pool == "gem" else "",
                            "flip" if self.flip else "") if o]
        return body + (":" + ",".join(opts) if opts else "")

    def with_options(self, norm: str | None = None, flip: bool | None = None, pool: str | None = None) -> ViewSpec:
        return replace(self, norm=self.norm if norm is None else norm, flip=self.flip if flip is None else flip,
                       pool=self.pool if pool is None else pool)


def is_view_name(name: str) -> bool:
    """True for names this module handles: ``+``-joined, ``@SIZE``, or with ``:options``."""
    return "+" in name or "@" in name or _split_options(name)[1] is not None


def _split_options(name: str) -> tuple[str, list[str] | None]:
    head, sep, tail = name.rpartition(":")
    if not sep or not tail:
        return name, None
    opts = [o.strip().lower() for o in tail.split(",")]
    if all(o in OPTIONS for o in opts):
        return head, opts
    return name, None  # e.g. timm:resnet50 — the colon belongs to the member's name


def parse_view(name: str) -> ViewSpec:
    """``a@384+b:l2,flip`` -> ViewSpec; a bad size, an empty member or clashing options raise
    :class:`~transferlab.errors.UnknownBackbone` with the syntax."""
    body, opts = _split_options(name.strip())
    opts = opts or []
    norms = [o for o in opts if o in NORMS]
    if len(norms) > 1 or len(set(opts)) != len(opts):
        raise UnknownBackbone(f"'{name}': give at most one of {', '.join(NORMS)} and each option once")
    members = tuple(_parse_member(m, name) for m in body.split("+"))
    return ViewSpec(members, norms[0] if norms else "std", "flip" in opts, "gem" if "gem" in opts else "avg")


def _parse_member(text: str, whole: str) -> MemberSpec:
    text = text.strip()
    base, sep, size = text.partition("@")
    if not base or (sep and not size.isdigit()):
        raise UnknownBackbone(f"'{whole}': members are NAME or NAME@SIZE joined by '+', with optional "
                              f":{'|'.join(OPTIONS)} at the end (e.g. efficientnet_lite2@384+mobilenet_v2:l2)")
    if sep and not 32 <= int(size) <= 1024:
        raise TransferlabError(f"'{text}': the input size must be between 32 and 1024 pixels")
    return MemberSpec(base, int(size) if sep else None)


# ----------------------------------------------------------------------------------------------
# Modules
# ----------------------------------------------------------------------------------------------
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
    """Per-member normalisation, then concatenation: the one formula the pixel path, the cached
    path and the auto search share. ``l2`` scales each block to norm sqrt(d) (unit mean square,
    so an MLP head sees O(1) inputs whatever the member's width)."""
    if norm == "l2":
        feats = [f * (math.sqrt(f.shape[1]) / f.norm(dim=1, keepdim=True).clamp_min(1e-12)) for f in feats]
    return torch.cat(feats, 1)


def combine_arrays(parts: list[np.ndarray], norm: str) -> np.ndarray:
    """:func:`combine_blocks` on numpy arrays (rows aligned)."""
    with torch.no_grad():
        return combine_blocks([torch.from_numpy(np.ascontiguousarray(p, np.float32)) for p in parts], norm).numpy()


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


# ----------------------------------------------------------------------------------------------
# Building, and what the cached path needs
# ----------------------------------------------------------------------------------------------
def create_view(name: str, create, weights=None, input_size: int | None = None) -> Backbone:
    """The backbone a view name stands for. ``create`` is the registry's ``create_backbone`` for
    the members (passed in, so the registry imports this module and not the reverse).
    ``input_size`` applies to a single member; an ensemble takes sizes in its name."""
    spec = parse_view(name)
    if input_size is not None and len(spec.members) == 1:
        spec = replace(spec, members=(MemberSpec(spec.members[0].name, int(input_size)),))
    if weights is not None and len(spec.members) > 1:
        raise TransferlabError("--weights applies to one backbone, not an ensemble")
    members = [create(m.name, weights=weights, input_size=m.size) for m in spec.members]
    if spec.pool == "gem":
        members = [gem_pooled(m) for m in members]
    if spec.is_plain:
        return members[0]
    view = _assemble(spec, members)
    if input_size is not None and int(input_size) != view.data_config.input_size:
        raise TransferlabError(f"'{name}' runs at {view.data_config.input_size} px; give each member's size "
                               f"in the name (NAME@SIZE) instead of --input-size {input_size}")
    return view


def _assemble(spec: ViewSpec, members: list[Backbone]) -> Backbone:
    """The view as a backbone; its network (built on first use) shares the members' networks."""
    common = common_config([m.data_config for m in members])
    dim = sum(m.feature_dim for m in members)

    def build() -> ImageClassifier:
        trunk = EnsembleTrunk([MemberTrunk(m, common) for m in members], spec.norm, spec.flip)
        # flip-averaged features: same ImageNet head (a GeM member's head is already NoImageNetHead)
        reuse_head = len(members) == 1 and spec.norm == "std"
        head = members[0].model.head if reuse_head else NoImageNetHead(dim)
        return ImageClassifier(Normalize(common.mean, common.std), trunk, head)

    digest = hashlib.sha256("|".join(m.weights_digest for m in members).encode()).hexdigest()[:16]
    source = members[0].source if len({m.source for m in members}) == 1 else "mixed"
    return Backbone(name=spec.name([m.data_config.input_size for m in members]), data_config=common,
                    feature_dim=dim, weights_digest=digest, source=source, family="ensemble", build=build,
                    members=tuple(members))


def view_spec(backbone: Backbone) -> ViewSpec:
    """The view a backbone is (a plain backbone is a one-member view without options)."""
    if backbone.family == "ensemble":
        return parse_view(backbone.name)
    return ViewSpec((MemberSpec(backbone.name, backbone.data_config.input_size),))


def view_members(backbone: Backbone) -> list[Backbone]:
    """The plain backbones whose cached features make up ``backbone``'s (itself when plain)."""
    return list(backbone.members) or [backbone]


def with_options(backbone: Backbone, norm: str | None = None, flip: bool | None = None) -> Backbone:
    """The same members as another view (``flip=False``: the view without flip averaging, what
    feature augmentation trains on). Shares the members' networks; no weights are read."""
    spec = view_spec(backbone).with_options(norm, flip)
    members = view_members(backbone)
    return members[0] if spec.is_plain else _assemble(spec, members)


def mirrored(backbone: Backbone) -> Backbone:
    """A plain backbone run on mirrored images, cached under its own key (the name says ``|flip``);
    its network (built on first use) shares the backbone's."""
    def build() -> ImageClassifier:
        m = backbone.model
        return ImageClassifier(m.normalize, MirrorTrunk(m.trunk), m.head)

    return replace(backbone, name=f"{backbone.name}|flip", network=None, build=build)


def gem_pooled(backbone: Backbone) -> Backbone:
    """A plain backbone whose features are GeM-pooled, cached under its own key (the name says
    ``|gem``); its network (built on first use) shares the backbone's weights."""
    def build() -> ImageClassifier:
        m = backbone.model
        return ImageClassifier(m.normalize, GeMTrunk(m.trunk), NoImageNetHead(backbone.feature_dim))

    return replace(backbone, name=f"{backbone.name}|gem", network=None, build=build)


def combine_features(backbone: Backbone, parts: list[np.ndarray]) -> np.ndarray:
    """Members' raw features (in member order, same rows) -> the view's features, normalised and
    concatenated exactly like :meth:`EnsembleTrunk.combine` (flip averaging is the caller's)."""
    if backbone.family != "ensemble":
        return parts[0]
    return combine_arrays(parts, view_spec(backbone).norm)
