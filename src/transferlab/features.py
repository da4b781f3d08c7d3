"""Pooled backbone features for a list of images, batched, with an on-disk cache.

Cache layout: ``<cache>/features/<backbone.key>-<precision>/shard-*.safetensors``. Each shard
holds the features of up to ``SHARD`` images and, in its metadata, the identity keys of those
images (path + size + mtime) and of the files that failed to decode. Shards are written atomically,
so a killed extraction loses at most the shard in progress, and a re-run extracts only what no
shard has yet. Features stream to disk shard by shard: memory stays flat however large the set.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import progress as _progress
from ._io import save_safetensors
from .backbones import Backbone, ImageClassifier
from .pipeline import (
    FeatureRunner,
    compile_default,
    default_device,
    engine_default,
    precision_tag,
    run_features,
)

SHARD = 1024
# Fewer images than this run in torch even where onnxruntime is the engine: exporting the model
# costs ~6 s once, which only pays off over a few hundred images (24 vs 150 img/s, issue 5).
ONNX_MIN_IMAGES = 256


def cache_root() -> Path:
    env = os.environ.get("TRANSFERLAB_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "transferlab"


@dataclass
class Features:
    """Features of the readable images, in input order; ``ok`` marks which inputs they are."""

    features: np.ndarray  # [n_ok, d] float32
    ok: np.ndarray  # [n] bool
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    extracted: int = 0  # how many images were actually run through the model (0 = all cached)


def file_key(path: str | Path) -> str:
    """Identity of a file's content as far as cheap metadata tells: path, size, mtime."""
    p = Path(path)
    try:
        st = p.stat()
        raw = f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    except OSError:
        raw = f"{p.absolute()}|missing"
    return hashlib.sha1(raw.encode()).hexdigest()


class FeatureCache:
    def __init__(self, directory: Path):
        self.dir = directory
        self.index: dict[str, tuple[Path, int]] = {}  # key -> (shard, row)
        self.bad: dict[str, str] = {}  # key -> reason
        if directory.is_dir():
            for shard in sorted(directory.glob("shard-*.safetensors")):
                self._read_index(shard)

    def _read_index(self, shard: Path) -> None:
        from safetensors import safe_open

        try:
            with safe_open(str(shard), framework="pt") as f:
                meta = f.metadata() or {}
            keys = json.loads(meta.get("keys", "[]"))
            bad = json.loads(meta.get("bad", "{}"))
        except Exception:  # a damaged shard is ignored and re-extracted
            return
        for row, k in enumerate(keys):
            self.index[k] = (shard, row)
        self.bad.update(bad)

    def get(self, keys: list[str]) -> dict[str, np.ndarray]:
        from safetensors import safe_open

        by_shard: dict[Path, list[tuple[str, int]]] = {}
        for k in keys:
            if k in self.index:
                s, r = self.index[k]
                by_shard.setdefault(s, []).append((k, r))
        out = {}
        for s, items in by_shard.items():
            with safe_open(str(s), framework="np") as f:
                arr = f.get_tensor("features")
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
    progress: bool = True,
    description: str = "features",
) -> Features:
    """Pooled features for ``paths``. ``model`` defaults to the backbone's own network; the cache
    is used only when the trunk is the backbone's (not a fine-tuned one)."""
    model = model or backbone.model
    device = torch.device(device) if device else default_device()
    cache = cache and model.trunk is backbone.model.trunk
    paths = [str(p) for p in paths]
    keys = [file_key(p) for p in paths]
    engine = engine_default(device)
    where = cache_root() / "features" / f"{backbone.key}-{precision_tag(device, engine)}"
    store = FeatureCache(where) if cache else None

    have = store.get(keys) if store else {}
    bad = {k: store.bad[k] for k in keys if store and k in store.bad and k not in have}
    todo = [i for i, k in enumerate(keys) if k not in have and k not in bad]

    if todo:
        if (engine == "onnxruntime" and len(todo) < ONNX_MIN_IMAGES and precision_tag(device) == "fp32"
                and not _has_runner(model, device, batch_size, engine)):
            engine = "torch"  # a small job: not worth the export (same fp32 features, same cache)
        run = _runner(model, device, batch_size, engine)
        todo_paths = [paths[i] for i in todo]
        pend_keys: list[str] = []
        pend_feats: list[np.ndarray] = []
        pend_bad: dict[str, str] = {}

        def flush():
            if store and (pend_keys or pend_bad):
                store.put(list(pend_keys), np.concatenate(pend_feats) if pend_feats else
                          np.zeros((0, backbone.feature_dim), np.float32), dict(pend_bad))
            pend_keys.clear(), pend_feats.clear(), pend_bad.clear()

        show = progress and _progress.enabled()
        with _progress.bar(description, len(todo) if show else None) as advance:
            for batch, f in run_features(todo_paths, backbone.data_config, run, workers):
                for j, why in batch.failed:
                    bad[keys[todo[j]]] = why
                    pend_bad[keys[todo[j]]] = why
                if batch.indices:
                    bkeys = [keys[todo[j]] for j in batch.indices]
                    have.update(zip(bkeys, f, strict=True))
                    pend_keys.extend(bkeys)
                    pend_feats.append(f)
                if sum(len(x) for x in pend_feats) >= SHARD:
                    flush()
                advance(len(batch.indices) + len(batch.failed))
            flush()
        model.to("cpu")

    ok = np.array([k in have for k in keys], dtype=bool)
    feats = (
        np.stack([have[k] for k in keys if k in have]).astype(np.float32)
        if ok.any()
        else np.zeros((0, backbone.feature_dim), np.float32)
    )
    skipped = [(p, bad.get(k, "unreadable")) for p, k in zip(paths, keys, strict=True) if k not in have]
    return Features(feats, ok, skipped, extracted=len(todo))


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
