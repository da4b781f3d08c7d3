"""The view-name grammar (what ``--backbone`` takes and what a run directory records)::

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

Pure Python: names are parsed and printed without importing torch or building a network.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ...errors import TransferlabError, UnknownBackbone
from ...options import INPUT_SIZE

if TYPE_CHECKING:
    from ..classifier import Backbone

NORMS = ("std", "l2")
OPTIONS = (*NORMS, "gem", "flip")


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
    """True for names this package handles: ``+``-joined, ``@SIZE``, or with ``:options``."""
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
    if sep and not INPUT_SIZE.contains(int(size)):
        raise TransferlabError(f"'{text}': the input size must be {INPUT_SIZE}")
    return MemberSpec(base, int(size) if sep else None)


def view_spec(backbone: Backbone) -> ViewSpec:
    """The view a backbone is (a plain backbone is a one-member view without options). Here, not
    with the builders, because it only reads the backbone's name: the numpy combination of the
    cached path needs it without the view's modules."""
    if backbone.family == "ensemble":
        return parse_view(backbone.name)
    return ViewSpec((MemberSpec(backbone.name, backbone.data_config.input_size),))
