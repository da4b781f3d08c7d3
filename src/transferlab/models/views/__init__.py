"""Feature views: ensembles of backbones, per-member normalisation, GeM pooling and flip
averaging, as one backbone. The name grammar is in :mod:`.spec`.

Two paths compute the same features, and this is the documented choice of the issue:

- **cached path** (training, evaluate, review, auto search): every member runs through the normal
  cached :func:`transferlab.features.extract` with *its own* preprocessing from the original
  photo, so an ensemble reuses every feature its members ever cached (and vice versa);
  :func:`transferlab.features.extract_view` combines them (:mod:`.combine`, numpy).
- **pixel path** (predict on in-memory images, TTA, attacks, robustness, export, serve): the view
  is one ``nn.Module`` on [0, 1] pixels (:mod:`.modules`); each member crops its own share of the
  view's pixels and resizes it to its own size inside ``forward``, antialiased.

The two differ by one extra resampling of the pixels (cosine similarity of the features > 0.98 on
real photos, see ``tests/test_ensemble.py``); predictions agree on nearly every photo.

:mod:`.spec` parses names, :mod:`.modules` holds the networks, :mod:`.build` turns names into
backbones, :mod:`.combine` joins cached member features.
"""

from .build import create_view, gem_pooled, mirrored, view_members, with_options
from .combine import combine_arrays, combine_features
from .modules import (
    GEM_P,
    EnsembleTrunk,
    GeMTrunk,
    MemberTrunk,
    MirrorTrunk,
    NoImageNetHead,
    combine_blocks,
    common_config,
    crop_pct,
    feature_map,
    resample_matrix,
)
from .spec import NORMS, OPTIONS, MemberSpec, ViewSpec, is_view_name, parse_view, view_spec

__all__ = [
    "GEM_P", "NORMS", "OPTIONS", "EnsembleTrunk", "GeMTrunk", "MemberSpec", "MemberTrunk", "MirrorTrunk",
    "NoImageNetHead", "ViewSpec", "combine_arrays", "combine_blocks", "combine_features", "common_config",
    "create_view", "crop_pct", "feature_map", "gem_pooled", "is_view_name", "mirrored", "parse_view",
    "resample_matrix", "view_members", "view_spec", "with_options",
]
