"""Pooled backbone features for a list of images, batched, with an on-disk cache.

Cache layout: ``<cache>/features/<backbone.key>-<precision>/shard-*.safetensors``. Each shard
holds the features of up to ``SHARD`` images and, in its metadata, the identity keys of those
images (path, size, mtime, inode and ctime: see :func:`file_key`) and of the files that failed to
decode. Shards are written atomically and durably, every ``SHARD`` images and at least every
``TRANSFERLAB_FLUSH_SECONDS`` (30 s), so a killed extraction loses at most the last half minute
of work, and a re-run extracts only what no shard has yet. Features stream to disk shard by
shard: memory stays flat however large the set.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ._io import cache_root, env_number, save_safetensors
from .models.classifier import Backbone, ImageClassifier
from .progress import resolve
from .runtime.device import compile_default, default_device, precision_tag
from .runtime.engine import engine_default
from .runtime.runner import FeatureRunner, run_features

SHARD = 1024
FLUSH_ENV = "TRANSFERLAB_FLUSH_SECONDS"
# Fewer images than this run in torch even where onnxruntime is the engine: exporting the model
# costs ~6 s once, which only pays off over a few hundred images (24 vs 150 img/s, issue 5).
ONNX_MIN_IMAGES = 256


@dataclass
class Features:
    """Features of the readable images, in input order; ``ok`` marks which inputs they are."""

    features: np.ndarray  # [n_ok, d] float32
    ok: np.ndarray  # [n] bool
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    extracted: int = 0  # how many images were actually run through the model (0 = all cached)


def file_key(path: str | Path, _dirs: dict[str, str] | None = None) -> str:
    """Identity of a file's content as far as cheap metadata tells: path, size, mtime, inode and
    ctime. mtime alone can be set back (``touch -r``, ``cp -p``, rsync) after the bytes changed;
    ctime cannot be set by a user and changes with every write, and a file replaced by a rename
    gets a new inode, so a replaced image is never served its predecessor's features.

    ``_dirs`` (see :func:`file_keys`) memoises resolved directories: a regular file that is not a
    symlink resolves to its resolved directory plus its name, so one ``lstat`` gives both the key's
    path and its metadata, instead of ``Path.resolve``'s ``lstat`` of every path component (0.6 s
    over 6,000 cached photos, issue 16). Anything else takes the general route; the key is the same.
    """
    if _dirs is not None and isinstance(path, str):
        head, tail = os.path.split(path)
        try:
            st = os.lstat(path)
        except OSError:
            st = None
        if st is not None and tail not in ("", ".", "..") and stat.S_ISREG(st.st_mode):
            real = _dirs.get(head)
            if real is None:
                real = _dirs[head] = os.path.realpath(head or ".")
            raw = f"{os.path.join(real, tail)}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}|{st.st_ctime_ns}"
            return hashlib.sha1(raw.encode()).hexdigest()
    p = Path(path)
    try:
        st = p.stat()
        raw = f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}|{st.st_ctime_ns}"
    except OSError:
        raw = f"{p.absolute()}|missing"
    return hashlib.sha1(raw.encode()).hexdigest()


def file_keys(paths: Sequence[str | Path]) -> list[str]:
    """:func:`file_key` of each path, resolving each directory once (within this call only, so a
    directory symlink retargeted later is seen by the next call)."""
    dirs: dict[str, str] = {}
    return [file_key(str(p), dirs) for p in paths]


def flush_seconds() -> float:
    """``TRANSFERLAB_FLUSH_SECONDS`` (default 30): the most extraction work a kill can lose."""
    return env_number(FLUSH_ENV, 30.0, float, lambda v: v > 0, "give a number of seconds > 0")


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


@torch.no_grad()
def extract(
    backbone: Backbone,
    paths: Sequence[str | Path],
    *,
    model: ImageClassifier | None = None,
    cache: bool = True,
    batch_size: int = 64,
    workers: int | None = None,
    device: torch.device | str | None = None,
    progress=True,
    description: str = "features",
) -> Features:
    """Pooled features for ``paths``. ``model`` defaults to the backbone's own network; the cache
    is used only when the trunk is the backbone's (not a fine-tuned one)."""
    device = torch.device(device) if device else default_device()
    # the cache holds the pretrained trunk's features: only for the backbone's own trunk (a cached
    # job never builds it; a network with a trunk of its own, fine-tuned, is never cached)
    cache = cache and (model is None or (backbone.built and model.trunk is backbone.model.trunk))
    paths = [str(p) for p in paths]
    keys = file_keys(paths)
    engine = engine_default(device, backbone, measure=len(paths) >= ONNX_MIN_IMAGES)  # timed once per machine
    where = cache_root() / "features" / f"{backbone.key}-{precision_tag(device, engine)}"
    store = FeatureCache(where) if cache else None

    have = store.get(keys) if store else {}
    bad = {k: store.bad[k] for k in keys if store and k in store.bad and k not in have}
    todo = [i for i, k in enumerate(keys) if k not in have and k not in bad]

    if todo:
        model = model or backbone.model
        if (engine == "onnxruntime" and len(todo) < ONNX_MIN_IMAGES and precision_tag(device) == "fp32"
                and not _has_runner(model, device, batch_size, engine)):
            engine = "torch"  # a small job: not worth the export (same fp32 features, same cache)
        run = _runner(model, device, batch_size, engine)
        with resolve(progress)(description, len(todo)) as advance, _Pending(store, backbone.feature_dim) as pending:
            for batch, f in run_features([paths[i] for i in todo], backbone.data_config, run, workers):
                failed = {keys[todo[j]]: why for j, why in batch.failed}
                bkeys = [keys[todo[j]] for j in batch.indices]
                bad.update(failed)
                have.update(zip(bkeys, f, strict=True))
                pending.add(bkeys, f, failed)
                advance(len(batch.indices) + len(batch.failed))
        model.to("cpu")

    ok = np.array([k in have for k in keys], dtype=bool)
    feats = (
        np.stack([have[k] for k in keys if k in have]).astype(np.float32)
        if ok.any()
        else np.zeros((0, backbone.feature_dim), np.float32)
    )
    skipped = [(p, bad.get(k, "unreadable")) for p, k in zip(paths, keys, strict=True) if k not in have]
    return Features(feats, ok, skipped, extracted=len(todo))


class _Pending:
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

    def __enter__(self) -> _Pending:
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


_RUNNERS: dict[tuple, FeatureRunner] = {}


def _runner_key(model: ImageClassifier, device: torch.device, batch_size: int, engine: str) -> tuple:
    return (id(model), str(device), batch_size, engine, precision_tag(device, engine), compile_default())


def _has_runner(model: ImageClassifier, device: torch.device, batch_size: int, engine: str) -> bool:
    run = _RUNNERS.get(_runner_key(model, device, batch_size, engine))
    return run is not None and run.model is model


def _runner(model: ImageClassifier, device: torch.device, batch_size: int, engine: str) -> FeatureRunner:
    """One FeatureRunner per (model, device, batch size, engine), so a compiled graph or ONNX
    export is reused across calls instead of being built again."""
    key = _runner_key(model, device, batch_size, engine)
    run = _RUNNERS.get(key)
    if run is None or run.model is not model:
        while len(_RUNNERS) >= 4:  # bounded: a runner keeps its (possibly fine-tuned) model alive
            _RUNNERS.pop(next(iter(_RUNNERS)))
        run = _RUNNERS[key] = FeatureRunner(model, device, batch_size=batch_size, engine=engine)
    else:
        model.to(device)
    return run


@torch.no_grad()
def extract_arrays(backbone: Backbone, images: Sequence[np.ndarray], *, model: ImageClassifier | None = None,
                   batch_size: int = 64, device: torch.device | str | None = None) -> np.ndarray:
    """Pooled features [n, d] of in-memory images already at the model's input size (uint8
    [S, S, 3], e.g. from :meth:`DataConfig.resize_crop_array`), run exactly like files are."""
    model = model or backbone.model
    device = torch.device(device) if device else default_device()
    engine = engine_default(device, backbone, measure=False)  # a verdict if one exists; never times here
    if engine == "onnxruntime" and not _has_runner(model, device, batch_size, engine):
        engine = "torch"  # a handful of images: not worth an export (same fp32 features)
    run = _runner(model, device, batch_size, engine)
    out = []
    for s in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.stack(images[s:s + batch_size])).permute(0, 3, 1, 2)  # channels_last view
        out.append(run(batch).numpy())
    model.to("cpu")
    return np.concatenate(out) if out else np.zeros((0, backbone.feature_dim), np.float32)


def extract_view(backbone: Backbone, paths: Sequence[str | Path], *, flip: bool | None = None,
                 description: str = "features", **kw) -> Features:
    """:func:`extract` for a feature view (:mod:`transferlab.models.views`: an ensemble,
    per-member normalisation, flip averaging) through the per-member cache: each member runs at
    its own preprocessing, so a view reuses every feature its members have cached; mirrored
    images are cached under their own key. ``flip``: None = the view's own (averaged with the
    mirror when the view says ``flip``), False = the plain images only, True = the mirrored ones
    only (the extra rows of feature augmentation). A plain backbone gives :func:`extract`'s result.
    """
    from .models.views import combine_features, mirrored, view_members, view_spec

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
