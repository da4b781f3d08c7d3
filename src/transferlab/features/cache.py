"""The on-disk feature cache: ``<cache>/features/<backbone.key>-<precision>/shard-*.safetensors``.

Each shard holds the features of up to ``SHARD`` images and, in its metadata, the identity keys
of those images (:func:`~transferlab.features.keys.file_key`) and of the files that failed to
decode. Shards are written atomically and durably, every ``SHARD`` images and at least every
``TRANSFERLAB_FLUSH_SECONDS`` (30 s) (:class:`PendingShard`), so a killed extraction loses at most
the last half minute of work, and a re-run extracts only what no shard has yet.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from .._io import cache_root, env_number, save_safetensors

SHARD = 1024
FLUSH_ENV = "TRANSFERLAB_FLUSH_SECONDS"


def flush_seconds() -> float:
    """``TRANSFERLAB_FLUSH_SECONDS`` (default 30): the most extraction work a kill can lose."""
    return env_number(FLUSH_ENV, 30.0, float, lambda v: v > 0, "give a number of seconds > 0")


def cache_dir(backbone_key: str, precision: str) -> Path:
    """The shard folder of one backbone's features at one precision tag."""
    return cache_root() / "features" / f"{backbone_key}-{precision}"


class FeatureCache:
    def __init__(self, directory: Path):
        self.dir = directory
        self.index: dict[str, tuple[Path, int]] = {}  # key -> (shard, row)
        self.bad: dict[str, str] = {}  # key -> reason
        if directory.is_dir():
            for shard in sorted(directory.glob("shard-*.safetensors")):
                self._read_index(shard)

    def _read_index(self, shard: Path) -> None:
        try:
            keys, bad = _shard_meta(shard)
        except Exception:  # a damaged shard is ignored and re-extracted
            return
        for row, k in enumerate(keys):
            self.index[k] = (shard, row)
        self.bad.update(bad)

    def get(self, keys: list[str]) -> dict[str, np.ndarray]:
        by_shard: dict[Path, list[tuple[str, int]]] = {}
        for k in keys:
            if k in self.index:
                s, r = self.index[k]
                by_shard.setdefault(s, []).append((k, r))
        out = {}
        for s, items in by_shard.items():
            arr = _shard_features(s)
            for k, r in items:
                out[k] = arr[r]
        return out

    def put(self, keys: list[str], feats: np.ndarray, bad: dict[str, str]) -> None:
        shard = self.dir / f"shard-{uuid.uuid4().hex[:12]}.safetensors"
        meta = {"keys": json.dumps(keys), "bad": json.dumps(bad)}
        save_safetensors(shard, {"features": torch.from_numpy(np.ascontiguousarray(feats))}, meta)
        for row, k in enumerate(keys):
            self.index[k] = (shard, row)
        self.bad.update(bad)


class PendingShard:
    """Features (and failures) not yet in a shard; written once a shard's worth has gathered or
    ``flush_seconds`` have passed since the last write, whichever comes first."""

    def __init__(self, store: FeatureCache | None, dim: int):
        self.store, self.dim = store, dim
        self.keys: list[str] = []
        self.feats: list[np.ndarray] = []
        self.bad: dict[str, str] = {}
        self.every = flush_seconds() if store else 0.0
        self.last = time.monotonic()

    def add(self, keys: list[str], feats: np.ndarray, bad: dict[str, str]) -> None:
        if keys:
            self.keys.extend(keys)
            self.feats.append(feats)
        self.bad.update(bad)
        if len(self.keys) >= SHARD or time.monotonic() - self.last >= self.every:
            self.flush()

    def __enter__(self) -> PendingShard:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        """Write what is left: at the end, and on Ctrl-C or an error too (every feature held
        here is complete), without letting a failing write hide the original error."""
        if kind is None:
            self.flush()
            return
        with contextlib.suppress(Exception):
            self.flush()

    def flush(self) -> None:
        if self.store and (self.keys or self.bad):
            feats = np.concatenate(self.feats) if self.feats else np.zeros((0, self.dim), np.float32)
            self.store.put(list(self.keys), feats, dict(self.bad))
        self.keys, self.feats, self.bad = [], [], {}
        self.last = time.monotonic()


# Shards are written once under a fresh name and never changed, so what a process has read of
# one stays valid while the file's identity (inode, size, mtime, ctime) does: a train reads each
# shard once for both its train and val splits instead of once per split (issue 16). Bounded,
# least recently used first out; the arrays are read-only (callers get views of them).
_SHARD_CACHE_BYTES = 128 << 20
_SHARD_META: OrderedDict[tuple, tuple[list[str], dict[str, str]]] = OrderedDict()
_SHARD_ARRAYS: OrderedDict[tuple, np.ndarray] = OrderedDict()


def _shard_id(shard: Path) -> tuple:
    st = os.stat(shard)
    return (str(shard), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _shard_meta(shard: Path) -> tuple[list[str], dict[str, str]]:
    """(keys, bad) of a shard's metadata; raises on a damaged shard (never cached)."""
    from safetensors import safe_open

    ident = _shard_id(shard)
    if ident in _SHARD_META:
        _SHARD_META.move_to_end(ident)
        return _SHARD_META[ident]
    with safe_open(str(shard), framework="pt") as f:
        meta = f.metadata() or {}
    keys, bad = json.loads(meta.get("keys", "[]")), json.loads(meta.get("bad", "{}"))
    if not isinstance(keys, list) or not isinstance(bad, dict):
        raise ValueError(f"{shard}: malformed metadata")
    _SHARD_META[ident] = (keys, bad)
    while len(_SHARD_META) > 256:
        _SHARD_META.popitem(last=False)
    return keys, bad


def _shard_features(shard: Path) -> np.ndarray:
    """The ``features`` array of a shard, read-only, read from disk once while it is cached."""
    from safetensors import safe_open

    ident = _shard_id(shard)
    arr = _SHARD_ARRAYS.get(ident)
    if arr is not None:
        _SHARD_ARRAYS.move_to_end(ident)
        return arr
    with safe_open(str(shard), framework="np") as f:
        arr = f.get_tensor("features")
    arr.flags.writeable = False
    if arr.nbytes <= _SHARD_CACHE_BYTES:
        _SHARD_ARRAYS[ident] = arr
        while sum(a.nbytes for a in _SHARD_ARRAYS.values()) > _SHARD_CACHE_BYTES:
            _SHARD_ARRAYS.popitem(last=False)
    return arr
