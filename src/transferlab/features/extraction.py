"""Pooled backbone features for a list of images, batched, through the feature cache: files
(:func:`extract`, streamed to disk shard by shard, so memory stays flat however large the set)
and in-memory images (:func:`extract_arrays`), both through one pool of feature runners.

Named ``extraction`` rather than ``extract``: the package exports the function :func:`extract`,
and a submodule of the same name would be shadowed by it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..models.classifier import Backbone, ImageClassifier
from ..progress import resolve
from ..runtime.device import compile_default, default_device, precision_tag
from ..runtime.engine import engine_default
from ..runtime.runner import FeatureRunner, run_features
from .cache import FeatureCache, PendingShard, cache_dir
from .keys import file_keys

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
    store = FeatureCache(cache_dir(backbone.key, precision_tag(device, engine))) if cache else None

    have = store.get(keys) if store else {}
    bad = {k: store.bad[k] for k in keys if store and k in store.bad and k not in have}
    todo = [i for i, k in enumerate(keys) if k not in have and k not in bad]

    if todo:
        model = model or backbone.model
        if (engine == "onnxruntime" and len(todo) < ONNX_MIN_IMAGES and precision_tag(device) == "fp32"
                and not _has_runner(model, device, batch_size, engine)):
            engine = "torch"  # a small job: not worth the export (same fp32 features, same cache)
        run = _runner(model, device, batch_size, engine)
        with resolve(progress)(description, len(todo)) as advance, PendingShard(store, backbone.feature_dim) as pending:
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


# ----------------------------------------------------------------------------------------------
# The runner pool
# ----------------------------------------------------------------------------------------------
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
