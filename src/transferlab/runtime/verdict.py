"""The engine verdict cache: which engine ran a network fastest on this machine, at this input size.

CPU flags do not predict it (onnxruntime fp32 beat torch bf16 on an AVX512-BF16 EPYC, issue 16),
so :mod:`transferlab.runtime.engine` times the engines once and remembers the answer here, in
``<cache>/engines.json``. A verdict is keyed by everything that changes the ranking: the CPU
(model name, the instruction-set flags kernels dispatch on, core count, torch threads), the
network's architecture, the input size, torch's precision there (bf16 or fp32) and the versions
of torch and onnxruntime. Weights do not change speed, so a fine-tuned copy shares the verdict.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import torch
from torch import nn

from .._io import cache_root, write_json

FORMAT = 1
# Flags the kernels of torch (oneDNN) and onnxruntime (MLAS) dispatch on.
FLAGS = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
         "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve", "bf16", "i8mm")


def verdict_file() -> Path:
    return cache_root() / "engines.json"


@lru_cache(maxsize=1)
def cpu_info() -> dict:
    """CPU model name, the dispatch-relevant flags and the core count."""
    model, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "Model", "CPU part") and not model:
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        model = platform.processor() or platform.machine()
    return {"model": model or "unknown", "flags": sorted(flags & set(FLAGS)), "cores": os.cpu_count()}


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return ""


def arch_key(model: nn.Module) -> str:
    """The network's architecture (module types, parameter and buffer shapes), not its weights:
    what the speed depends on. For an :class:`ImageClassifier`, the trunk (the head is tiny and
    differs between fine-tuned runs of one backbone)."""
    net = getattr(model, "trunk", model)
    parts = [type(net).__name__, *(f"{k}:{tuple(v.shape)}" for k, v in net.state_dict().items())]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def backbone_arch(backbone) -> str:
    """:func:`arch_key` of a :class:`~transferlab.models.classifier.Backbone`'s network without
    building it when it is not built yet: the key is remembered in ``<cache>/arch.json`` (by name,
    weights digest and the versions of torch and timm, which define the modules) the first time
    it is computed, so a job that finds its features cached never builds the network to learn
    which engine's cache to read (issue 16)."""
    ident = f"{backbone.name}|{backbone.weights_digest}|torch {torch.__version__}|timm {_version('timm')}"
    path = cache_root() / "arch.json"
    try:
        memo = json.loads(path.read_text())
    except (OSError, ValueError):
        memo = {}
    memo = memo if isinstance(memo, dict) else {}
    if not backbone.built and isinstance(memo.get(ident), str):
        return memo[ident]
    key = arch_key(backbone.model)
    if memo.get(ident) != key:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, {**memo, ident: key}, durable=False)  # a lost entry is computed again
    return key


def verdict_key(arch: str, size: int, torch_precision: str) -> tuple[str, dict]:
    """(key, the fields it hashes) of a verdict for the network :func:`arch_key` names ``arch``,
    at ``size`` px on this machine."""
    fields = {"cpu": cpu_info(), "threads": torch.get_num_threads(), "arch": arch, "input_size": int(size),
              "torch_precision": torch_precision,
              "versions": {"torch": torch.__version__, "onnxruntime": _version("onnxruntime")}}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:20], fields


def _read() -> dict:
    try:
        data = json.loads(verdict_file().read_text())
    except (OSError, ValueError):
        return {}  # none yet, or damaged: measure again and rewrite
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("verdicts"), dict):
        return {}
    return data["verdicts"]


def load_verdict(key: str) -> dict | None:
    v = _read().get(key)
    return v if isinstance(v, dict) and v.get("engine") in ("torch", "onnxruntime") else None


def save_verdict(key: str, record: dict) -> Path:
    """Add or replace one verdict (atomic write; a concurrent writer's verdict may be lost, and is
    then simply measured again)."""
    verdicts = _read()
    verdicts[key] = record
    return write_json(verdict_file(), {"format": FORMAT, "verdicts": verdicts})
