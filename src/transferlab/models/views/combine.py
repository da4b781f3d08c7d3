"""The cached path's combination: members' cached features (numpy rows) -> the view's features,
by the formula of :func:`~transferlab.models.views.modules.combine_blocks`. numpy only, so the
feature cache and the auto search combine without the view's torch modules."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from .spec import view_spec

if TYPE_CHECKING:
    from ..classifier import Backbone


def combine_arrays(parts: list[np.ndarray], norm: str) -> np.ndarray:
    """Per-member normalisation, then concatenation (rows aligned), in float32: ``l2`` scales each
    block to norm sqrt(d), like :func:`~transferlab.models.views.modules.combine_blocks`."""
    blocks = [np.ascontiguousarray(p, np.float32) for p in parts]
    if norm == "l2":
        tiny = np.float32(1e-12)
        blocks = [b * (np.float32(math.sqrt(b.shape[1])) / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), tiny))
                  for b in blocks]
    return np.concatenate(blocks, 1)


def combine_features(backbone: Backbone, parts: list[np.ndarray]) -> np.ndarray:
    """Members' raw features (in member order, same rows) -> the view's features, normalised and
    concatenated exactly like :meth:`EnsembleTrunk.combine` (flip averaging is the caller's)."""
    if backbone.family != "ensemble":
        return parts[0]
    return combine_arrays(parts, view_spec(backbone).norm)
