"""``load_model(name_or_path)``: the one place a name or path becomes a :class:`~.base.Predictor`.

- an export directory (``labels.json`` + a model file) -> its reader (:data:`READERS`):
  :class:`~.onnx_model.ExportedModel` for ``model.onnx`` (onnxruntime),
  :class:`~.tf_model.SavedModelPredictor` for ``saved_model/`` (TensorFlow),
  :class:`~.tf_model.LiteRTModel` for ``model.tflite`` (LiteRT); torch is not imported;
- a run directory (its config + ``model.safetensors``) -> :class:`~.torch_model.Run`;
- a backbone name -> a :class:`~.torch_model.Run` with that backbone's ImageNet head.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from ..errors import RunError, TransferlabError
from .config import CONFIG, METRICS, WEIGHTS, RunConfig
from .layout import export_kind, read_json

# The reader of each kind of export (:data:`.layout.MARKERS` says which file marks it): module and
# class, imported on first use, so that an ONNX export never imports TensorFlow.
READERS = {"onnx": (".onnx_model", "ExportedModel"), "savedmodel": (".tf_model", "SavedModelPredictor"),
           "litert": (".tf_model", "LiteRTModel")}


def load_model(spec: str | Path, weights: str | Path | None = None):
    """The predictor for an export directory, a run directory or a backbone name."""
    if export_kind(spec) is not None:
        return load_export(spec)
    return load(spec, weights)


def load_export(directory: str | Path):
    """An export directory's predictor, by the model file it holds (ONNX first, then SavedModel,
    then LiteRT); a folder that is no export raises ExportError naming what one needs."""
    module, name = READERS[export_kind(directory) or "onnx"]
    return getattr(importlib.import_module(module, __package__), name)(directory)


def load(spec: str | Path, weights: str | Path | None = None):
    """A run directory, or a backbone name meaning that backbone's ImageNet classifier (PyTorch)."""
    p = Path(spec)
    if p.is_dir():
        return load_run(p)
    if str(spec).endswith(("/", "\\")) or (p.suffix == "" and p.parent != Path(".") and not p.exists()):
        raise RunError(f"run directory not found: {spec}")
    try:
        return from_backbone(str(spec), weights)
    except TransferlabError as e:
        raise type(e)(f"'{spec}' is neither a run directory nor a usable backbone: {e}") from None


def from_backbone(name: str, weights: str | Path | None = None):
    """A bare backbone as a classifier over its ImageNet classes."""
    from ..models.registry import create_backbone
    from .torch_model import Run

    bb = create_backbone(name, weights=weights)
    return Run(backbone=bb, classes=bb.class_names, synonyms=bb.class_synonyms)


def load_run(path: str | Path):
    """A run directory as a :class:`~.torch_model.Run`: its config checked (schema, classes vs
    head, weights digest), its weights loaded without unpickling, its temperature applied."""
    from ..models.registry import create_backbone
    from .torch_model import Run

    path = Path(path)
    if not (path / CONFIG).is_file() or not (path / WEIGHTS).is_file():
        raise RunError(f"not a run directory (needs {CONFIG} and {WEIGHTS}): {path}")
    cfg = RunConfig.read(path)
    ref = cfg.backbone
    bb = create_backbone(ref.name, weights=ref.weights_path, input_size=cfg.input_size)
    if ref.weights_digest and ref.weights_digest != bb.weights_digest:
        raise RunError(f"run {path} was trained on {bb.name} weights {ref.weights_digest}, "
                       f"but the installed weights are {bb.weights_digest}")
    head, network = _weights(path, cfg)
    return Run(backbone=bb, classes=cfg.classes, config=cfg, path=path, synonyms=None,
               metrics=read_json(path / METRICS), network=network, head=head)


def _weights(path: Path, cfg: RunConfig):
    """(head, fine-tuned network or None) from model.safetensors, frozen and in eval mode."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from ..models.heads import apply_temperature
    from ..models.registry import create_backbone

    w_file = path / WEIGHTS
    try:
        sd = load_file(str(w_file))
    except (SafetensorError, OSError) as e:
        raise RunError(f"unreadable {w_file}: {e}") from None
    head = _head(cfg, path / CONFIG)
    if any(k.startswith("trunk.") for k in sd):  # fine-tuned: a network of its own, never the backbone's
        ref = cfg.backbone
        network = create_backbone(ref.name, weights=ref.weights_path, input_size=cfg.input_size).model
        network.head = head
        _load_weights(network, sd, w_file)
    else:  # a head on the pretrained trunk: checked and loaded without building the trunk
        network = None
        _load_weights(torch.nn.ModuleDict({"head": head}), sd, w_file)
    if cfg.temperature is not None:  # every probability the run gives is calibrated
        apply_temperature(head, cfg.temperature)
    for m in (head, network):
        if m is not None:
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)
    return head, network


def _head(cfg: RunConfig, cfg_file: Path):
    """The head the config describes; its output size must be the number of classes, or every
    prediction would name the wrong class (a hand-edited or mixed-up config)."""
    import torch

    from ..models.heads import build_head

    try:
        head = build_head(cfg.head)
    except (KeyError, TypeError, ValueError) as e:
        raise RunError(f"unreadable {cfg_file}: bad head {cfg.head!r} ({e})") from None
    outs = [m.out_features for m in head.modules() if isinstance(m, torch.nn.Linear)]
    if not outs or outs[-1] != len(cfg.classes):
        raise RunError(f"{cfg_file} lists {len(cfg.classes)} classes but its head has "
                       f"{outs[-1] if outs else 'no'} outputs; the run directory is inconsistent")
    return head


def _load_weights(model, sd: dict, w_file: Path) -> None:
    """``sd`` into ``model``: every head tensor present, nothing the model lacks, shapes matching."""
    try:
        missing, unexpected = model.load_state_dict(sd, strict=False)
    except RuntimeError as e:  # a tensor of the wrong shape
        raise RunError(f"{w_file} does not match its config: {str(e).splitlines()[-1].strip()[:200]}") from None
    if unexpected or any(k.startswith("head.") for k in missing):
        raise RunError(f"{w_file} does not match its config (missing {missing[:3]}, unexpected {unexpected[:3]})")
