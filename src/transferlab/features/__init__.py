"""Pooled backbone features for a list of images, batched, with an on-disk cache.

:mod:`.keys` says which file an image is (path and metadata), :mod:`.cache` stores features in
safetensors shards under those keys, :mod:`.extraction` runs the backbone on what the cache lacks,
and :mod:`.views` combines members' cached features into a feature view's.
"""

from .._io import cache_root
from .cache import FeatureCache, flush_seconds
from .extraction import Features, extract, extract_arrays
from .keys import file_key, file_keys
from .views import extract_view

__all__ = ["FeatureCache", "Features", "cache_root", "extract", "extract_arrays", "extract_view", "file_key",
           "file_keys", "flush_seconds"]
