"""Who runs the model: torch or onnxruntime, chosen by measurement on this machine.

CPU flags are a poor guide: onnxruntime fp32 was 3-6x faster than torch fp32 on an AVX2-only
EPYC, and still beat torch bf16 (168 vs 120 img/s, efficientnet_lite0, batch 32) on an
AVX512-BF16 one, where bf16 autocast was expected to win. So ``auto`` times both engines once
per machine, network and input size (a few batches, a few seconds), caches the verdict
(:mod:`transferlab.runtime.verdict`) and uses the faster. ``TRANSFERLAB_ENGINE=torch|onnxruntime``
overrides it. torch.compile is left out of the race: its one-off compile (~54 s on 2 cores) costs
more than the choice is allowed to.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone

import torch
from torch import nn

from ..models.classifier import Backbone
from .device import bf16_default, cpu_has_bf16
from .distributed import world_size
from .runner import FeatureRunner
from .switches import ENGINES, engine_override, onnxruntime_available, warn_fallback
from .verdict import arch_key, backbone_arch, load_verdict, save_verdict, verdict_key

__all__ = ["ENGINES", "auto_candidates", "choose_engine", "engine_default", "engine_override", "measure_engines",
           "onnxruntime_available", "record_verdict", "table_candidates", "warn_fallback"]

MEASURE_BUDGET_S = 4.0  # timed rounds after the warm-ups; the whole choice stays under ~10 s on 2 cores


def engine_default(device: torch.device, backbone: Backbone | None = None, *, measure: bool = True) -> str:
    """The engine for ``backbone``'s network on ``device``: the override, else the measured verdict
    (measured now, once, unless ``measure`` is False: then torch until one exists). Without a
    backbone there is nothing to measure: the override, else torch. Reading a verdict does not
    build the backbone's network (:func:`~transferlab.runtime.verdict.backbone_arch`)."""
    forced = engine_override(device)
    if forced or backbone is None:
        return forced or "torch"
    if not onnxruntime_available():
        return "torch"
    return _choose(lambda: backbone.model, backbone_arch(backbone), device, backbone.data_config.input_size,
                   measure, backbone.name)


def choose_engine(model: nn.Module, device: torch.device, size: int, *, measure: bool = True,
                  label: str = "") -> str:
    """The engine measured fastest for ``model.features`` at ``size`` px here (see the module doc).
    ``measure`` False: use a cached verdict only (small jobs, where timing would cost more than it
    saves); without one, torch. Processes of a DDP job never time (each would see the others' load)."""
    forced = engine_override(device)
    if forced:
        return forced
    if not onnxruntime_available():
        return "torch"
    return _choose(lambda: model, arch_key(model), device, size, measure, label)


def _choose(get_model: Callable[[], nn.Module], arch: str, device: torch.device, size: int, measure: bool,
            label: str) -> str:
    key, _ = verdict_key(arch, size, _precision(device))
    verdict = load_verdict(key)
    if verdict is None:
        if not measure or world_size() > 1:  # DDP ranks would time each other's load, and could disagree
            return "torch"
        t0 = time.perf_counter()
        model = get_model()
        rates = measure_engines(model, device, size, auto_candidates(device))
        verdict = record_verdict(arch, device, size, rates, source="auto", label=label,
                                 seconds=time.perf_counter() - t0)
    return verdict["engine"]


def _precision(device: torch.device) -> str:
    return "bf16" if bf16_default(device) else "fp32"


def auto_candidates(device: torch.device) -> dict[str, dict]:
    """What ``auto`` races: torch eager channels_last (bf16 autocast where the CPU has it, else fp32)
    against onnxruntime fp32. Labels are the bench table's."""
    p = _precision(device)
    return {f"torch {p}": {"engine": "torch", "bf16": p == "bf16"}, "onnxruntime fp32": {"engine": "onnxruntime"}}


def table_candidates(device: torch.device, compiled: bool = False) -> dict[str, dict]:
    """What ``bench`` tabulates: torch fp32, torch bf16 where the hardware has it, onnxruntime fp32
    on a CPU (a superset of :func:`auto_candidates`); with ``compiled``, torch.compile'd torch at
    the precision torch would use here too (a one-off compile of about a minute on 2 cores)."""
    out = {"torch fp32": {"engine": "torch", "bf16": False}}
    bf16 = device.type == "cuda" or cpu_has_bf16() or bf16_default(device)
    if bf16:
        out["torch bf16"] = {"engine": "torch", "bf16": True}
    if compiled:
        out[f"torch {'bf16' if bf16 else 'fp32'} compiled"] = {"engine": "torch", "bf16": bf16, "compile": True}
    if device.type == "cpu" and onnxruntime_available():
        out["onnxruntime fp32"] = {"engine": "onnxruntime"}
    return out


def record_verdict(arch: str, device: torch.device, size: int, rates: dict[str, dict], *,
                   source: str, label: str = "", seconds: float | None = None) -> dict:
    """Store the fastest of ``rates`` (from :func:`measure_engines`) among :func:`auto_candidates` as
    the verdict for the network whose :func:`~transferlab.runtime.verdict.arch_key` is ``arch``
    (of a backbone: :func:`~transferlab.runtime.verdict.backbone_arch`) at ``size`` on this
    machine; returns the record."""
    cands = auto_candidates(device)
    race = {k: v for k, v in rates.items() if k in cands}
    best = max(race, key=lambda k: race[k]["img_s"]) if race else next(iter(cands))
    key, fields = verdict_key(arch, size, _precision(device))
    record = {"engine": cands[best]["engine"], "winner": best, "rates": race, "source": source, "backbone": label,
              "seconds": None if seconds is None else round(seconds, 2),
              "measured": datetime.now(timezone.utc).isoformat(timespec="seconds"), **fields}
    save_verdict(key, record)
    return record


def probe_batch(size: int) -> int:
    """Batch for timing: 32 at 224 px, fewer for larger inputs, so a slow engine's batch stays ~1 s."""
    return max(4, min(32, round(32 * (224 / size) ** 2)))


def measure_engines(model: nn.Module, device: torch.device, size: int, candidates: dict[str, dict], *,
                    batches: Sequence[torch.Tensor] | None = None, budget_s: float = MEASURE_BUDGET_S,
                    min_rounds: int = 2, max_rounds: int = 5) -> dict[str, dict]:
    """Forward-only img/s of each candidate (label -> :class:`FeatureRunner` keywords), each on its
    own copy of ``model`` (the caller's network is never converted). After one warm-up batch each
    (which includes the ONNX export), the candidates take turns over ``batches`` (default: one
    random uint8 batch) for ``min_rounds``..``max_rounds`` rounds, stopping once ``budget_s`` is
    spent; turns cancel a drift of the machine's speed. Rate = the best round (noise only slows).
    A candidate that fell back to another engine (failed export) is left out."""
    if batches is None:
        g = torch.Generator().manual_seed(0)
        data = torch.randint(0, 256, (probe_batch(size), size, size, 3), dtype=torch.uint8, generator=g)
        batches = [data.permute(0, 3, 1, 2)]  # NCHW view of NHWC memory: what the decoder yields
    runners, setup = {}, {}
    for label, kw in candidates.items():
        t0 = time.perf_counter()
        run = FeatureRunner(copy.deepcopy(model).eval(), device, batch_size=len(batches[0]), **{"compile": False, **kw})
        run(batches[0])
        if run.engine == kw["engine"]:
            runners[label], setup[label] = run, time.perf_counter() - t0
    rounds: dict[str, list[float]] = {k: [] for k in runners}
    start = time.perf_counter()
    for r in range(max_rounds):
        for label, run in runners.items():
            t0 = time.perf_counter()
            n = sum(len(run(b)) for b in batches)
            rounds[label].append(n / (time.perf_counter() - t0))
        if r + 1 >= min_rounds and time.perf_counter() - start > budget_s:
            break
    return {k: {"img_s": round(max(v), 1), "rounds": [round(x, 1) for x in v], "setup_seconds": round(setup[k], 2),
                "batch_size": len(batches[0]), **candidates[k]}
            for k, v in rounds.items()}
