"""TensorFlow SavedModel and LiteRT (TFLite) exports, converted from the checked ONNX graph.

:func:`export_tf` writes the ONNX export's folder (labels, preprocessing, head, cards) with
``saved_model/`` and/or ``model.tflite`` + ``model_int8.tflite`` in it (``model.onnx`` too when
``onnx`` is among the formats). The converter is onnx2tf (:mod:`.convert` says why); the LiteRT
files are converted from its SavedModel (:mod:`.tflite`). The readers are
:class:`~transferlab.inference.tf_model.SavedModelPredictor` and
:class:`~transferlab.inference.tf_model.LiteRTModel`, which ``transferlab predict DIR`` uses.

- SavedModel: signature ``serving_default`` takes ``pixels`` uint8 [n, S, S, 3] (the ONNX
  input) and returns ``probs``, ``logits``, ``features`` (the embedding) and ``fmap``; the
  function ``embed`` returns the embedding alone (what ``keras.layers.TFSMLayer`` takes as a
  frozen feature extractor).
- Every file checks itself against PyTorch on the same real photos, through the same reader
  that ``predict`` uses: max |Δp| <= 1e-3 for float32 (SavedModel, ``model.tflite``), top-1
  agreement >= 99 % for the small variant; the LiteRT files' accuracy is measured on the run's
  own validation photos. A failed check raises :class:`~transferlab.errors.ExportError` and
  leaves nothing behind.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .._io import atomic_write, write_json
from ..errors import ExportError, ImageError
from ..inference.tf_model import LiteRTModel, SavedModelPredictor, import_tensorflow
from . import tflite
from .convert import float_onnx, to_savedmodel
from .hubcard import write_cards
from .layout import (
    BATCH,
    EXPORT,
    MODEL,
    OPSET,
    PREPROCESSING,
    SAVED_MODEL,
    SMALL_TFLITES,
    TFLITE,
    ExportReport,
    read_json,
)
from .onnx import _timed, _verify_pixels, _write_export, check_out

FORMATS = ("onnx", "savedmodel", "tflite")
MAX_DPROB = 1e-3  # float32 TensorFlow / LiteRT against PyTorch
MIN_SMALL_AGREEMENT = 0.99  # top-1 agreement of the small LiteRT variant with PyTorch


@dataclass
class EngineCheck:
    """One exported file against PyTorch on the same pixels."""

    file: str
    engine: str  # "tensorflow" or "litert"
    size_bytes: int
    max_abs_dprob: float
    top1_agreement: float
    img_s: float
    val_accuracy: float | None = None  # on the run's validation photos (LiteRT files)
    weights: str = "float32"  # "int8" or "float16" for the smaller LiteRT variant


@dataclass
class TFExportReport:
    """What :func:`export_tf` wrote, and how each engine compares with PyTorch."""

    out_dir: str
    formats: list[str]
    files: list[str]
    onnx: ExportReport  # the ONNX export the conversion started from, and its parity
    converter: str
    convert_seconds: float
    checks: list[EngineCheck]
    torch_img_s: float
    val_images: int = 0  # validation photos the LiteRT accuracies are measured on
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """Verification photos that could not be read (as :attr:`ExportReport.skipped`)."""
        return self.onnx.skipped

    def lines(self) -> list[str]:
        """What ``transferlab export`` prints."""
        o = self.onnx
        out = [f"exported {', '.join(self.formats)} to {self.out_dir}  ({self.converter}, "
               f"{self.convert_seconds:.1f} s)",
               f"parity on {o.n_images} images ({o.verify_source}), batch {o.batch_size}; PyTorch fp32 "
               f"{self.torch_img_s:.0f} img/s"]
        if "onnx" in self.formats:
            out.append(f"  model.onnx  onnxruntime  max |Δp| {o.max_abs_dprob:.1e}  top-1 {o.top1_agreement:.0%}  "
                       f"{o.onnx_img_s:.0f} img/s")
        for c in self.checks:
            acc = f"  val accuracy {c.val_accuracy:.1%}" if c.val_accuracy is not None else ""
            out.append(f"  {c.file}  {c.engine}  {c.size_bytes / 1e6:.1f} MB  max |Δp| {c.max_abs_dprob:.1e}  "
                       f"top-1 {c.top1_agreement:.0%}  {c.img_s:.0f} img/s{acc}")
        return [*out, *self.notes, f"predict: transferlab predict {self.out_dir} PHOTOS..."]


def require_tensorflow() -> str:
    """The converter's name and versions, or ExportError saying which extra to install."""
    try:
        tf = import_tensorflow()  # first: it orders triton before TensorFlow
        import ai_edge_litert  # noqa: F401
        import onnx2tf
    except ImportError as e:
        raise ExportError(f"SavedModel and LiteRT exports need the TensorFlow extra ({e.name} is missing): "
                          "pip install 'transferlab[tensorflow]'") from None
    return f"onnx2tf {onnx2tf.__version__}, TensorFlow {tf.__version__}"


def export_tf(run_or_spec, out_dir: str | Path, *, formats=("savedmodel", "tflite"), verify_images=None,
              overwrite: bool = False) -> TFExportReport:
    """Export ``run_or_spec`` (a Run, a run directory or a backbone name) to ``out_dir`` in
    ``formats`` (any of :data:`FORMATS`, at least one of them TensorFlow's); see the module
    docstring. ``out_dir`` ends up the complete, checked export or untouched."""
    from .._io import replace_dir
    from ..inference.load import load
    from ..inference.torch_model import Run

    formats = _formats(formats)
    converter = require_tensorflow()
    out = check_out(out_dir, overwrite)
    run = run_or_spec if isinstance(run_or_spec, Run) else load(run_or_spec)
    with replace_dir(out) as tmp, tempfile.TemporaryDirectory(prefix=".transferlab-tf-") as scratch:
        report = _write_tf(run, tmp, Path(scratch), formats, verify_images)
        report.converter = converter
        _write_meta(run, tmp, report)
    report.out_dir = str(out)
    return report


def _formats(formats) -> list[str]:
    fs = list(dict.fromkeys(str(getattr(f, "value", f)) for f in ([formats] if isinstance(formats, str) else formats)))
    bad = [f for f in fs if f not in FORMATS]
    if bad or not fs:
        raise ExportError(f"unknown export format {', '.join(bad) or '(none)'}: choose from {', '.join(FORMATS)}")
    if not set(fs) - {"onnx"}:
        raise ExportError("export_tf writes savedmodel or tflite; use export_onnx for ONNX alone")
    return fs


def _write_tf(run, tmp: Path, scratch: Path, formats: list[str], verify_images) -> TFExportReport:
    """The ONNX export into ``tmp``, converted, the chosen files placed and each one checked."""
    onnx_report = _write_export(run, tmp, verify_images, OPSET)
    pixels, _, _ = _verify_pixels(run, verify_images)
    ref_p = np.concatenate([run._forward(b)[0] for b in _batches(pixels)])  # PyTorch (its speed: onnx_report's)
    t0 = time.perf_counter()
    saved = scratch / SAVED_MODEL
    float_onnx(run, scratch / "float.onnx", pixels[:2])
    to_savedmodel(scratch / "float.onnx", saved, run.data_config.input_size)
    seconds = time.perf_counter() - t0
    report = TFExportReport(out_dir="", formats=formats, files=[], onnx=onnx_report, converter="", convert_seconds=0,
                            checks=[], torch_img_s=onnx_report.torch_img_s)
    if "savedmodel" in formats:
        shutil.copytree(saved, tmp / SAVED_MODEL)
        report.checks.append(_check(SAVED_MODEL, SavedModelPredictor(tmp), pixels, ref_p, _size(tmp / SAVED_MODEL)))
    if "tflite" in formats:
        meta = tflite.metadata_entries(list(run.classes), read_json(tmp / PREPROCESSING))
        for kind in ("float32", *tflite.SMALL_KINDS):
            name = TFLITE if kind == "float32" else SMALL_TFLITES[kind]
            t0, data = time.perf_counter(), tflite.with_metadata(tflite.convert(saved, kind), meta)
            seconds += time.perf_counter() - t0
            atomic_write(tmp / name, lambda p, data=data: p.write_bytes(data))
            check = _check(name, LiteRTModel(tmp, small=kind != "float32"), pixels, ref_p, len(data), kind)
            if kind == "float32" or check.top1_agreement >= MIN_SMALL_AGREEMENT:
                report.checks.append(check)
                if kind != "float32":
                    break
                continue
            (tmp / name).unlink()
            report.notes.append(f"{name} agreed with PyTorch on only {check.top1_agreement:.1%} of {len(pixels)} "
                                f"photos (needs {MIN_SMALL_AGREEMENT:.0%}): not kept")
        else:
            raise ExportError(f"no smaller LiteRT variant ({', '.join(tflite.SMALL_KINDS)}) agrees with PyTorch on "
                              f"{MIN_SMALL_AGREEMENT:.0%} of the photos; not exporting")
        _litert_validation(run, tmp, report)
    if "onnx" not in formats:
        (tmp / MODEL).unlink()
    report.convert_seconds = round(seconds, 2)
    return report


def _batches(pixels: np.ndarray) -> list[np.ndarray]:
    return [pixels[i:i + BATCH] for i in range(0, len(pixels), BATCH)]


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def _check(name: str, model, pixels: np.ndarray, ref_p: np.ndarray, size: int, weights: str = "float32"
           ) -> EngineCheck:
    """``model`` (the export folder's reader for file ``name``) against PyTorch's probabilities on
    the same pixels; raises when a float32 file differs by more than :data:`MAX_DPROB` (the
    caller judges the smaller variant's agreement)."""
    engine = "tensorflow" if model.kind == "savedmodel" else model.kind
    (p, _), t = _timed(model._forward, _batches(pixels))
    dprob, agree = float(np.abs(p - ref_p).max()), float((p.argmax(1) == ref_p.argmax(1)).mean())
    if weights == "float32" and not dprob <= MAX_DPROB:
        raise ExportError(f"{engine} ({name}) differs from PyTorch by {dprob:.2e} in probability "
                          f"(allowed {MAX_DPROB:.0e}); not exporting")
    return EngineCheck(file=name, engine=engine, size_bytes=int(size), max_abs_dprob=dprob, top1_agreement=agree,
                       img_s=round(len(p) / t, 1), weights=weights)


# ----------------------------------------------------------------------------------------------
# The small variant's accuracy on the run's validation photos; export.json and the cards
# ----------------------------------------------------------------------------------------------
def validation_set(run) -> tuple[list[str], np.ndarray] | None:
    """The run's validation photos and labels, re-drawn as ``evaluate --split val`` does (the
    recorded seed and fraction: the split is deterministic); None when the run has none or its
    data is gone or changed."""
    from ..evaluation.evaluate import map_labels, resolve_eval_data

    cfg = run.config
    expected = (cfg.data.get("val_images") if cfg else None) or 0
    if not expected or not cfg.data_root:
        return None
    try:
        va = resolve_eval_data(run, cfg.data_root, "val", format=cfg.data_format)
        return (list(va.paths), map_labels(run, va)) if len(va) == expected else None
    except Exception:  # the data moved, or no longer matches the run's classes
        return None


def _litert_validation(run, folder: Path, report: TFExportReport) -> None:
    """Accuracy of each LiteRT file on the validation photos (decoded like training)."""
    from ..data.loader import image_array

    val = validation_set(run)
    rows, labels = [], []
    for path, y in zip(*(val or ([], []))):
        try:
            rows.append(image_array(path, run.data_config))
            labels.append(int(y))
        except ImageError:
            continue
    if not rows:
        report.notes.append("no validation photos available: the small variant's accuracy change is not measured")
        return
    pixels, y = np.stack(rows), np.asarray(labels)
    for c in report.checks:
        if c.engine == "litert":
            model = LiteRTModel(folder, small=c.weights != "float32")
            p = np.concatenate([model._forward(b)[0] for b in _batches(pixels)])
            c.val_accuracy = float((p.argmax(1) == y).mean())
    report.val_images = len(y)


def _write_meta(run, tmp: Path, report: TFExportReport) -> None:
    """export.json gains the formats and checks; the cards gain a TensorFlow/LiteRT section."""
    info = read_json(tmp / EXPORT)
    info["formats"] = report.formats
    info["tensorflow"] = {"converter": report.converter, "convert_seconds": report.convert_seconds,
                          "torch_img_s": report.torch_img_s, "val_images": report.val_images,
                          "small_variant": next(({"file": c.file, "weights": c.weights} for c in report.checks
                                                 if c.engine == "litert" and c.weights != "float32"), None),
                          "checks": [asdict(c) for c in report.checks]}
    if "onnx" not in report.formats:
        info.pop("opset", None)
    write_json(tmp / EXPORT, info)
    write_cards(tmp, run, report.onnx, formats=report.formats, extra=card_section(report))
    report.files = sorted(p.name for p in tmp.iterdir())


def card_section(r: TFExportReport) -> str:
    """The model card's TensorFlow / LiteRT section: every file's size, parity and speed, and
    the small variant's accuracy next to float32's."""
    o = r.onnx
    rows = [f"| `{c.file}` | {c.engine} | {c.size_bytes / 1e6:.1f} MB | {c.max_abs_dprob:.1e} | "
            f"{c.top1_agreement:.1%} | {c.img_s:.0f} |" for c in r.checks]
    text = ["\n## TensorFlow and LiteRT\n",
            f"Converted from the ONNX graph by {r.converter}. Each file against PyTorch ({r.torch_img_s:.0f} img/s) on "
            f"the same {o.n_images} {o.verify_source}, batch {o.batch_size}, on the exporting machine:\n",
            "| file | engine | size | max abs Δp | top-1 agreement | img/s |", "|---|---|---|---|---|---|", *rows, ""]
    lite = {c.weights: c for c in r.checks if c.engine == "litert"}
    small = next((c for w, c in lite.items() if w != "float32"), None)
    if small is not None:
        full = lite["float32"]
        how = "dynamic range; activations stay float" if small.weights == "int8" else "computed in float32"
        size = (f"`{small.file}` ({small.weights} weights, {how}) is "
                f"{small.size_bytes / 1e6:.1f} MB against {full.size_bytes / 1e6:.1f} MB for float32")
        if small.val_accuracy is not None:
            text.append(f"{size}. On the run's {r.val_images} validation photos its accuracy is "
                        f"{small.val_accuracy:.1%} against float32's {full.val_accuracy:.1%} "
                        f"({(small.val_accuracy - full.val_accuracy) * 100:+.1f} points).\n")
        else:
            text.append(f"{size}; its accuracy change was not measured (no validation photos).\n")
    text += [f"Note: {n}.\n" for n in r.notes]
    text.append("Labels and preprocessing are also inside each `.tflite` file (metadata entries "
                f"{', '.join(f'`{k}`' for k in tflite.META_KEYS)}).\n")
    return "\n".join(text)


def export(run_or_spec, out_dir: str | Path, *, formats=("onnx",), verify_images=None, overwrite: bool = False):
    """Any of :data:`FORMATS` into one folder: ONNX alone by :func:`~.onnx.export_onnx`
    (returns its :class:`ExportReport`), anything with TensorFlow by :func:`export_tf`."""
    from .onnx import export_onnx

    fs = [str(getattr(f, "value", f)) for f in ([formats] if isinstance(formats, str) else formats)]
    if set(fs) == {"onnx"}:
        return export_onnx(run_or_spec, out_dir, verify_images=verify_images, overwrite=overwrite)
    return export_tf(run_or_spec, out_dir, formats=fs, verify_images=verify_images, overwrite=overwrite)


__all__ = ["FORMATS", "EngineCheck", "TFExportReport", "export", "export_tf", "validation_set"]
