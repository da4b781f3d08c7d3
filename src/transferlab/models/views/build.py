"""Views as backbones: build the backbone a view name stands for, and the derived backbones the
cached path extracts (a view with other options, a mirrored or GeM-pooled member). Networks are
built on first use and share the members' weights."""

from __future__ import annotations

import hashlib
from dataclasses import replace

from ...errors import TransferlabError
from ...options import OptionError
from ..classifier import Backbone, ImageClassifier, Normalize
from .modules import EnsembleTrunk, GeMTrunk, MemberTrunk, MirrorTrunk, NoImageNetHead, common_config
from .spec import MemberSpec, ViewSpec, parse_view, view_spec


def create_view(name: str, create, weights=None, input_size: int | None = None) -> Backbone:
    """The backbone a view name stands for. ``create`` is the registry's ``create_backbone`` for
    the members (passed in, so the registry imports this package and not the reverse).
    ``input_size`` applies to a single member; an ensemble takes sizes in its name."""
    spec = parse_view(name)
    if input_size is not None and len(spec.members) == 1:
        spec = replace(spec, members=(MemberSpec(spec.members[0].name, int(input_size)),))
    if weights is not None and len(spec.members) > 1:
        raise OptionError("weights", "applies to one backbone, not an ensemble")
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
