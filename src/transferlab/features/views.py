"""Features of a feature view (:mod:`transferlab.models.views`) through the per-member cache."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..models.classifier import Backbone
from .extraction import Features, extract


def extract_view(backbone: Backbone, paths: Sequence[str | Path], *, flip: bool | None = None,
                 description: str = "features", **kw) -> Features:
    """:func:`extract` for a feature view (:mod:`transferlab.models.views`: an ensemble,
    per-member normalisation, flip averaging) through the per-member cache: each member runs at
    its own preprocessing, so a view reuses every feature its members have cached; mirrored
    images are cached under their own key. ``flip``: None = the view's own (averaged with the
    mirror when the view says ``flip``), False = the plain images only, True = the mirrored ones
    only (the extra rows of feature augmentation). A plain backbone gives :func:`extract`'s result.
    """
    from ..models.views import combine_features, mirrored, view_members, view_spec

    if flip is None and view_spec(backbone).flip:
        a, b = (extract_view(backbone, paths, flip=f, description=description, **kw) for f in (False, True))
        ok = a.ok & b.ok
        feats = (a.features[ok[a.ok]] + b.features[ok[b.ok]]) / 2
        return Features(feats, ok, a.skipped, extracted=a.extracted + b.extracted)
    members = view_members(backbone)
    parts = [extract(mirrored(m) if flip else m, paths, **kw,
                     description=description if len(members) == 1 and not flip
                     else f"{description} {m.name}{' mirrored' if flip else ''}") for m in members]
    ok = np.logical_and.reduce([p.ok for p in parts])
    skipped: dict[str, str] = {}
    for p in parts:
        for path, why in p.skipped:
            skipped.setdefault(path, why)
    feats = combine_features(backbone, [p.features[ok[p.ok]] for p in parts])
    return Features(feats, ok, list(skipped.items()), extracted=sum(p.extracted for p in parts))
