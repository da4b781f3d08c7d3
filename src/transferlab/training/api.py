"""``train``: dataset -> run directory. One explicit table of trainers (:data:`TRAINERS`), one
options object per mode (:mod:`transferlab.training.options`), one place that writes a run."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from .. import __version__
from .._io import save_safetensors, write_json
from ..data.datasets import ImageDataset, load_dataset
from ..evaluation.calibration import logits_from_probs, softmax
from ..evaluation.metrics import classification_metrics, precision_threshold
from ..inference.config import METRICS, WEIGHTS, BackboneRef, RunConfig
from ..inference.load import load_run
from ..inference.torch_model import Run
from ..models.registry import create_backbone
from ..options import OptionError
from .auto import train_auto
from .finetune import resumed_backbone, train_finetune
from .head import train_head
from .job import Fitted, Job
from .linear import train_linear
from .options import RunOptions, make_options, mode_of
from .output import check_output, check_settings, is_main_rank, resume_source, same_path, staged_run

Trainer = Callable[[Job], Fitted]
TRAINERS: dict[str, Trainer] = {"linear": train_linear, "head": train_head, "finetune": train_finetune,
                                "auto": train_auto}


def default_run_dir(data: str | Path, backbone: str, mode: str) -> Path:
    """``runs/<data>-<backbone>-<mode>``, numbered ``-2``, ``-3``... when it exists."""
    stem = Path(str(data).rstrip("/")).name or "data"
    base = Path("runs") / (f"{stem}-{mode}" if mode == "auto" else f"{stem}-{backbone.replace(':', '_')}-{mode}")
    p, i = base, 2
    while p.exists():
        p, i = Path(f"{base}-{i}"), i + 1
    return p


def train(data: str | Path | ImageDataset, *, mode: str = "linear", out: str | Path | None = None,
          progress=True, options=None, callbacks: list | None = None, **kwargs) -> Run:
    """Train a classifier on ``data`` and write a run directory; returns the loaded :class:`Run`.

    ``kwargs``: the shared settings of :class:`~transferlab.training.options.RunOptions`
    (``backbone``, ``weights``, ``input_size``, ``format``, ``label``, ``split``,
    ``val_fraction``, ``seed``, ``overwrite``) and the mode's own (``LinearOptions``, ``HeadOptions``,
    ``FinetuneOptions``), or pass the mode's options object as ``options``. An unknown keyword,
    or one of another mode, raises :class:`~transferlab.training.options.OptionError`.

    For Oxford-IIIT Pet data the default split is the official ``trainval``; a seeded, stratified
    ``val_fraction`` of it is held out for model selection and the reported validation metrics.
    ``progress``: True (a bar on a terminal), False, or a bar factory (:mod:`transferlab.progress`).
    ``callbacks``: extra :class:`~transferlab.training.learner.Callback` objects (fine-tuning).

    ``out`` is checked before any work (outside DATA, writable; an existing run is replaced only
    with ``overwrite=True``) and the run appears there as a whole when complete
    (:mod:`transferlab.training.output`).
    """
    run_opts, opts = make_options(mode, kwargs, options)
    mode = mode_of(opts)
    resume = getattr(opts, "resume", None)
    root = data.root if isinstance(data, ImageDataset) else data
    out = Path(out) if out else default_run_dir(root, run_opts.backbone, mode)
    check_output(out, data, overwrite=run_opts.overwrite, resume=resume)  # before any work
    check_settings()
    ds = _dataset(data, run_opts)
    source = resume_source(resume) if resume else None
    backbone, input_size = run_opts.backbone, run_opts.input_size
    if resume:
        backbone, input_size = resumed_backbone(resume, backbone, input_size, source=source)
    bb = create_backbone(backbone, weights=run_opts.weights, input_size=input_size)
    if mode == "finetune" and bb.family == "ensemble":
        raise OptionError("mode", f"finetune trains one network; '{backbone}' is an ensemble or feature view "
                                  "(use {mode} linear, head or auto)")
    tr, va = ds.train_val_split(run_opts.val_fraction, run_opts.seed)
    adopt = source if source is not None and not same_path(source, resume) else None
    with staged_run(out, adopt) as stage:  # a killed fine-tune's staging dir is continued in place
        if adopt is not None:
            opts = replace(opts, resume=stage)
        job = Job(bb, tr, va, run_opts, opts, stage, progress, list(callbacks or []))
        t0 = time.perf_counter()
        fitted = TRAINERS[mode](job)
        seconds = time.perf_counter() - t0
        if not is_main_rank():  # torchrun: only rank 0 writes the run directory
            return None  # type: ignore[return-value]
        write_run(job, ds, fitted, seconds, final=out)
    return load_run(out)


def _dataset(data, o: RunOptions) -> ImageDataset:
    if isinstance(data, ImageDataset):
        return data
    split = o.split
    notes = Path(data) / "annotations"
    if split is None and Path(data).is_dir() and (notes / "list.txt").is_file():
        split = "trainval" if (notes / "trainval.txt").is_file() else None  # no official split: all listed
    return load_dataset(data, format=o.format, label=o.label, split=split)


def environment(device: str = "cpu", backbone=None) -> dict:
    """Versions and the engine that ran: what someone reproducing the run needs to know (the
    engine for ``backbone``: the override or this machine's measured verdict; never timed here)."""
    from importlib.metadata import version

    import torch

    from ..runtime.device import precision_tag
    from ..runtime.engine import engine_default

    dev = torch.device(device)
    engine = engine_default(dev, backbone, measure=False)
    return {"transferlab": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "timm": version("timm"), "engine": engine, "precision": precision_tag(dev, engine),
            "platform": platform.platform()}


def _config(job: Job, ds: ImageDataset, fitted: Fitted, skipped: list[dict], unsure: dict | None,
            calib: dict | None) -> RunConfig:
    bb, o = job.backbone, job.run
    return RunConfig(
        transferlab_version=__version__,
        mode=mode_of(job.options),
        classes=ds.classes,
        backbone=BackboneRef(name=bb.name, weights_digest=bb.weights_digest, source=bb.source,
                             weights_path=str(Path(o.weights).resolve()) if o.weights else None),
        preprocessing=bb.data_config.to_dict(),
        head=fitted.head_spec,
        train={"seed": o.seed, "val_fraction": o.val_fraction, **fitted.info},
        predict=unsure,  # the "unsure" threshold chosen on validation data (None without any)
        data={**ds.summary(), "train_images": len(job.train), "val_images": len(job.val),
              "skipped": len(skipped), "skipped_files": skipped, "ignored_files": ds.ignored},
        environment=environment(str(fitted.info.get("device", "cpu")).split(":")[0], bb),
        calibration=calib,
    )


def _save_weights(out: Path, fitted: Fitted) -> None:
    if fitted.model_state is not None:
        save_safetensors(out / WEIGHTS, fitted.model_state)
    else:
        save_safetensors(out / WEIGHTS, {f"head.{k}": v for k, v in fitted.head.state_dict().items()})


def write_run(job: Job, ds: ImageDataset, fitted: Fitted, seconds: float, final: Path | None = None) -> None:
    """Write model.safetensors, metrics.json, the figures and the run config into ``job.out`` (the
    staging dir); files are named by where they will be, under ``final``."""
    from ..report.figures import confusion_figure, curves_figure, reliability_figure

    if fitted.backbone is not None:  # the trainer chose it (auto, --feature-aug flip)
        job = replace(job, backbone=fitted.backbone)
    out, bb = job.out, job.backbone
    out.mkdir(parents=True, exist_ok=True)
    _save_weights(out, fitted)
    skipped = [{"path": p, "reason": r} for p, r in fitted.skipped]
    metrics: dict = {"mode": mode_of(job.options), "backbone": bb.name, "train_accuracy": fitted.train_accuracy,
                     "seconds": round(seconds, 2), "skipped": len(skipped), "skipped_files": skipped}
    figures, unsure = [], None
    calib, curves = calibration_of(job, fitted)
    if calib is not None:
        metrics["calibration"] = {**calib, "reliability": curves}
        figures.append(reliability_figure(curves, out / "reliability.png",
                                          title=f"Reliability ({calib['source']}, {calib['n']} images)"))
    if fitted.val_probs is not None and len(fitted.val_probs):
        m = classification_metrics(job.val.labels[fitted.val_ok], fitted.val_probs, ds.classes)
        metrics["val_accuracy"] = m["accuracy"]
        metrics["val"] = m
        probs = fitted.val_probs
        if calib is not None:  # the threshold applies to what the run will output: calibrated probabilities
            probs = softmax(logits_from_probs(probs), calib["temperature"])
        unsure = precision_threshold(job.val.labels[fitted.val_ok], probs)
        figures.append(confusion_figure(m["confusion"], ds.classes, out / "confusion.png",
                                        title="Validation confusion"))
    if fitted.history:
        metrics["history"] = fitted.history
        metrics["best_epoch"] = fitted.best_epoch
        figures.append(curves_figure(fitted.history, out / "curves.png", best_epoch=fitted.best_epoch))
    metrics["figures"] = [str(Path(final or out) / Path(f).name) for f in figures]
    write_json(out / METRICS, metrics)
    _config(job, ds, fitted, skipped, unsure, calib).write(out)


def calibration_of(job: Job, fitted: Fitted) -> tuple[dict | None, dict | None]:
    """Temperature scaling fitted on the validation probabilities (else the trainer's held-out
    logits: CV out-of-fold, a head's hold-out) and the reliability curves before and after;
    (None, None) without held-out data."""
    from ..evaluation.calibration import calibrate, reliability

    if fitted.val_probs is not None and len(fitted.val_probs):
        logits, y, source = logits_from_probs(fitted.val_probs), job.val.labels[fitted.val_ok], "val"
    elif fitted.calibration is not None:
        logits, y, source = fitted.calibration
    else:
        return None, None
    if len(y) < 2:
        return None, None
    calib = calibrate(logits, y, source)
    t = calib["temperature"]
    return calib, {"before": reliability(softmax(logits), y), f"after T = {t:.2f}": reliability(softmax(logits, t), y)}

