"""ONNX export of a whole classifier, checked against PyTorch before it is published.

:func:`export_onnx` writes a directory that a machine without PyTorch can serve:

- ``model.onnx``: **uint8 NHWC pixels** ``[n, S, S, 3]`` (already resized and centre-cropped, as
  they come out of any image decoder: no float conversion or transpose client-side) ->
  ``probs`` [n, K] (softmax), ``logits`` [n, K], ``features`` [n, D] (the pooled embedding, for
  duplicate search) and ``fmap`` [n, C, h, w] (the last convolutional map, for CAM). The
  normalisation is inside the graph; the batch axis is dynamic.
- ``labels.json``, ``preprocessing.json`` (how to turn a photo into those pixels),
  ``head.safetensors`` (the head's float32 weights, so the CAM is a few lines of numpy),
  ``export.json`` (versions, provenance, threshold, parity), ``MODEL_CARD.md`` and ``README.md``
  (the same card under Hugging Face model-card front matter, :mod:`.hubcard`).

``model.onnx`` also describes itself (:mod:`.metadata`): labels, preprocessing, licence and
ONNX's image keys in ``metadata_props``, so a program handed that file alone can use it.

The export checks itself: PyTorch and onnxruntime must give the same probabilities (to 1e-4) on
identical pixels, or it raises :class:`~transferlab.errors.ExportError` and leaves nothing
behind. The directory is staged in a hidden sibling and published in one rename
(:func:`transferlab._io.replace_dir`). torch is imported only inside the functions that need it.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import time
import warnings
from pathlib import Path

import numpy as np

from .._io import atomic_write, write_json
from ..errors import ExportError, ImageError, TransferlabError
from ..inference.onnx_model import session
from .card import weights_licence
from .hubcard import write_cards
from .layout import (
    BATCH,
    EXPORT,
    HEAD,
    INPUT,
    LABELS,
    MAX_DPROB,
    MODEL,
    OPSET,
    OUTPUTS,
    PREPROCESSING,
    ExportReport,
)
from .metadata import annotate_onnx


def export_onnx(run_or_spec, out_dir: str | Path, *, verify_images=None, overwrite: bool = False,
                opset: int = OPSET) -> ExportReport:
    """Export ``run_or_spec`` (a :class:`~transferlab.run.Run`, a run directory or a backbone
    name) to ``out_dir``; see the module docstring for the files.

    ``out_dir`` ends up either the complete export or untouched. An existing non-empty
    ``out_dir`` is refused unless ``overwrite``. ``verify_images``: photos (paths, PIL images or
    uint8 arrays) for the parity check, unreadable ones skipped and listed; None:
    :func:`verification_images`.
    """
    from .._io import replace_dir
    from ..inference.load import load
    from ..inference.torch_model import Run

    out = check_out(out_dir, overwrite)
    run = run_or_spec if isinstance(run_or_spec, Run) else load(run_or_spec)
    with replace_dir(out) as tmp:
        report = _write_export(run, tmp, verify_images, opset)
    report.out_dir = str(out)
    return report


def check_out(out_dir: str | Path, overwrite: bool) -> Path:
    """``out_dir`` as a Path, or ExportError when it is a file or a non-empty folder (unless ``overwrite``)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ExportError(f"{out} exists and is not empty; choose another --out or pass overwrite")
    return out


def _write_export(run, tmp: Path, verify_images, opset: int) -> ExportReport:
    """Every file of the export into ``tmp``, checked; the report (``out_dir`` set by caller).
    Each file is written atomically with normal permissions (safetensors' own ``save_file``
    would create 0600 files, unreadable to a web server running as another user)."""
    from safetensors.numpy import save

    head_spec, head_tensors = _head_weights(run.model.head)
    pixels, skipped, source = _verify_pixels(run, verify_images)
    graph = _whole_classifier(run)
    cam, fmap_hw = graph.check(pixels[:8])
    pre, bb = _preprocessing(run), run.backbone

    def write_model(p: Path) -> None:  # the graph, then its metadata (labels, preprocessing, licence)
        _torch_export(graph, pixels[np.arange(2) % len(pixels)], p, opset)
        annotate_onnx(p, run, pre, weights_licence(bb.name, bb.source))

    t0 = time.perf_counter()
    atomic_write(tmp / MODEL, write_model)
    seconds = time.perf_counter() - t0
    parity = _parity(run, tmp / MODEL, pixels)
    report = ExportReport(out_dir="", files=[], opset=opset, export_seconds=round(seconds, 3),
                          verify_source=source, n_images=len(pixels), skipped=skipped, cam=cam,
                          fmap_hw=fmap_hw, **parity)
    head = save(head_tensors, metadata={"head": json.dumps(head_spec)})
    atomic_write(tmp / HEAD, lambda p: p.write_bytes(head))
    write_json(tmp / LABELS, list(run.classes))
    write_json(tmp / PREPROCESSING, pre)
    write_json(tmp / EXPORT, _export_info(run, head_spec, report))
    write_cards(tmp, run, report)
    report.files = sorted(p.name for p in tmp.iterdir())
    return report


def _whole_classifier_class():
    """Defined on first use so that importing this module does not import torch."""
    import torch
    from torch import nn

    from ..inference.cam import feature_map_split, is_pooled_map

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


# ----------------------------------------------------------------------------------------------
# Verification: PyTorch against onnxruntime on identical pixels
# ----------------------------------------------------------------------------------------------
def verification_images(run, n: int = 100) -> tuple[list, str]:
    """Photos for the parity check, and what they are: up to ``n`` of the run's own training
    data (evenly spaced through the list), or scikit-image's sample photos when that data is
    gone or the run is a bare backbone. Real photos matter: random pixels give flat, easy
    probabilities where small numeric differences hide."""
    cfg = run.config
    if cfg is not None and cfg.data_root:
        from ..data.datasets import load_dataset

        with contextlib.suppress(TransferlabError, OSError, ValueError):
            paths = load_dataset(cfg.data_root, format=cfg.data_format, split=cfg.data_split).paths
            return list(paths[:: max(1, len(paths) // n)][:n]), "training data"
    from skimage import data as samples

    return [getattr(samples, name)() for name in ("chelsea", "coffee", "astronaut")], "scikit-image samples"


def _verify_pixels(run, images) -> tuple[np.ndarray, list[tuple[str, str]], str]:
    """uint8 [n, S, S, 3] pixels decoded by the torch pipeline (the pixels the run sees), the
    skipped files, and where the pixels came from."""
    from ..data.loader import image_array

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
    sess = session(model_path)
    batches = [pixels[i:i + BATCH] for i in range(0, len(pixels), BATCH)]
    torch_run = run._forward  # the Run's own uint8 pixels -> (probs, features), fp32

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


# ----------------------------------------------------------------------------------------------
# The head's weights and the metadata files
# ----------------------------------------------------------------------------------------------
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


def _preprocessing(run) -> dict:
    dc = run.data_config
    return {"input_size": dc.input_size, "resize_size": dc.resize_size, "interpolation": dc.interpolation,
            "mean": list(dc.mean), "std": list(dc.std), "input_layout": "NHWC", "input_dtype": "uint8",
            "input_range": [0, 255], "normalization": "inside the graph: (x / 255 - mean) / std",
            "steps": ["EXIF transpose", "RGB (alpha composited on white)",
                      "resize shorter side to resize_size (longer side truncated to int)",
                      "centre crop input_size x input_size (offsets round((side - input_size) / 2))"]}


def _export_info(run, head_spec: dict, report: ExportReport) -> dict:
    from .. import __version__

    bb = run.backbone
    return {"transferlab_version": __version__, "source_run": str(run.path.resolve()) if run.path else None,
            "backbone": {"name": bb.name, "weights_digest": bb.weights_digest, "source": bb.source,
                         "family": bb.family, "feature_dim": bb.feature_dim},
            "mode": run.mode if run.path is not None else "imagenet",
            "head": head_spec, "opset": report.opset, "threshold": run.threshold,
            "input": {"name": INPUT, "shape": ["batch", run.data_config.input_size, run.data_config.input_size, 3],
                      "dtype": "uint8"},
            "outputs": list(OUTPUTS), "cam": report.cam,
            "parity": {k: v for k, v in report.to_dict().items() if k not in ("out_dir", "files")}}
