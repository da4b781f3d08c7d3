"""Command-line interface: one thin command per verb over the Python API.

Exit codes: 0 success, 2 user error (one line on stderr, no traceback), 1 internal error.
Importing this module is cheap (no torch, timm, scikit-learn or matplotlib): every command
imports what it needs, so ``transferlab --help`` answers at once. Choices are Enums, so
``--help`` lists them and typer rejects anything else with exit 2.
"""

from __future__ import annotations

import json
import os
import re
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from .. import __version__
from ..errors import TransferlabError
from ..options import FOLDS, INPUT_SIZE, NON_NEGATIVE, PORT, PROBABILITY, SIMILARITY, UPLOAD_MB, OptionError
from ..training.options import Augment, FeatureAug, Mode
from .catalog_cli import catalog_app, users_app

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Transfer learning for images, offline: train, explain and attack one model.",
)

DEFAULT_BACKBONE = "efficientnet_lite0"  # = transferlab.models.registry.DEFAULT_BACKBONE (not imported: torch)


def _choices(name: str, *values: str) -> type[Enum]:
    """A str Enum of ``values``: typer lists them in --help and rejects anything else."""
    return Enum(name, {v.replace("-", "_").replace("+", "_"): v for v in values}, type=str)


Format = _choices("Format", "auto", "folder", "oxford-pets", "csv")
Label = _choices("Label", "breed", "species")
TTA = _choices("TTA", "flip", "flip+crops")
AttackMethod = _choices("AttackMethod", "fgsm", "pgd", "pgd-l2", "cw", "optimize")
BudgetMethod = _choices("BudgetMethod", "pgd", "fgsm", "pgd-l2")
DreamMethod = _choices("DreamMethod", "lucid", "plain")
Engine = _choices("Engine", "auto", "torch", "onnxruntime")
Dataset = _choices("Dataset", "oxford-pets", "petimages")
ExportFormat = _choices("ExportFormat", "onnx", "savedmodel", "tflite")


BackboneOpt = Annotated[str, typer.Option("--backbone", "-b", metavar="NAME",
                                          help="Backbone name (see `transferlab backbones`).")]
ModelOpt = Annotated[str | None, typer.Option(
    "--model", "-m", metavar="MODEL", show_default=False,
    help=f"Backbone name or run directory (default: {DEFAULT_BACKBONE}, its ImageNet classifier).")]
# --model's old spellings, kept (hidden) so existing scripts work
BackboneAlias = Annotated[str | None, typer.Option("--backbone", "-b", metavar="NAME", hidden=True)]
RunAlias = Annotated[str | None, typer.Option("--run", metavar="RUN", hidden=True)]
StepsOpt = Annotated[int | None, typer.Option("--steps", min=1, help="Optimisation steps (default: the method's)")]
WeightsOpt = Annotated[Path | None, typer.Option(
    "--weights", metavar="PATH", help="Local state dict (.safetensors or .pth) for the backbone.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable results on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars (off anyway when not a terminal).")]
TopKOpt = Annotated[int, typer.Option("--top-k", "-k", min=1, help="How many classes to show per image.")]
TTAOpt = Annotated[TTA | None, typer.Option("--tta", help="Test-time augmentation.")]
AdversarialPng = Annotated[Path, typer.Option("--out", "-o", metavar="PNG", show_default=False,
                                              help="Adversarial image (.png, at input size).")]
DreamPng = Annotated[Path, typer.Option("--out", "-o", metavar="PNG", show_default=False,
                                        help="Image (.png, at the model's input size).")]
ClassArg = Annotated[str, typer.Argument(metavar="CLASS", show_default=False,
                                         help="ImageNet class (fuzzy: 'siamese') or a run's class.")]
ImagesArg = Annotated[list[Path], typer.Argument(metavar="IMAGE", help="Image files.", show_default=False)]


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"transferlab {__version__}\n")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Show the version and exit.")] = False) -> None:
    """Transfer learning for images, offline: train, explain and attack one model."""


def _print(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def _eprint(line: str) -> None:
    sys.stderr.write(line + "\n")


def _print_json(obj) -> None:
    from .._io import _jsonable

    sys.stdout.write(json.dumps(obj, indent=2, default=_jsonable) + "\n")


def _list_files(title: str, files) -> None:
    files = [str(f) for f in files if f]
    if files:
        _eprint(title)
        for f in files:
            _eprint(f"  {f}")


def _val(e):
    return e.value if isinstance(e, Enum) else e


def _model(model: str | None, run: str | None, backbone: str | None) -> str:
    """The model a consumer command was given: ``--model``, or one of its old names ``--run`` /
    ``--backbone``; the default backbone when none."""
    given = [m for m in (model, run, backbone) if m is not None]
    if len(given) > 1:
        raise TransferlabError("give the model once: --model NAME|RUN (--run and --backbone are its old names)")
    return given[0] if given else DEFAULT_BACKBONE


@app.command()
def backbones(
    name: Annotated[str | None, typer.Argument(
        metavar="NAME", show_default=False,
        help="Summarise this backbone: layers, output shapes, parameters, mult-adds at its input size.")] = None,
    depth: Annotated[int, typer.Option("--depth", min=1, help="How deeply the NAME summary nests.")] = 3,
    as_json: JsonOpt = False,
) -> None:
    """List backbones (bundled ones from a static table: nothing is built), or summarise NAME."""
    if name:
        _backbone_summary(name, depth, as_json)
        return
    from ..models.catalog import BUNDLED

    rows = [b.row() | {"kind": "bundled"} for b in BUNDLED]
    rows.append({"name": "<torchvision name> e.g. resnet50, vgg16", "kind": "online", "available": False,
                 "description": "downloads through torchvision's cache when online"})
    rows.append({"name": "timm:<name>", "kind": "online", "available": False,
                 "description": "downloads through timm / Hugging Face cache when online"})
    if as_json:
        _print_json(rows)
        return
    from ..report.text import backbones_table

    _print(backbones_table(rows))


def _backbone_summary(name: str, depth: int, as_json: bool) -> None:
    """torchinfo's summary of the network as the course lesson prints it (the whole classifier:
    normalisation, trunk, ImageNet head) on one image at the backbone's input size."""
    try:
        import torchinfo
    except ImportError:
        raise TransferlabError("`transferlab backbones NAME` needs torchinfo: pip install torchinfo") from None
    from ..models.registry import create_backbone

    bb = create_backbone(name)
    s = bb.data_config.input_size
    for p in bb.model.parameters():  # our own copy: count the weights as trainable, as the lesson does
        p.requires_grad_(True)
    stats = torchinfo.summary(bb.model, input_size=(1, 3, s, s), depth=depth, verbose=0, device="cpu",
                              col_names=("output_size", "num_params", "mult_adds"), row_settings=("var_names",))
    if not as_json:
        _print(f"{bb.name}: input 1x3x{s}x{s} pixels in [0, 1], {bb.feature_dim} pooled features")
        _print(re.sub(r"\(Units\.([A-Z])[A-Z]*\)", r"(\1)", str(stats)))  # torchinfo 1.8 on 3.11: "(Units.MEGABYTES)"
        return
    layers = [{"name": li.var_name, "type": li.class_name, "depth": li.depth, "output_shape": li.output_size,
               "params": li.num_params, "mult_adds": li.macs} for li in stats.summary_list if li.depth <= depth]
    _print_json({"name": bb.name, "input_size": s, "feature_dim": bb.feature_dim, "params": stats.total_params,
                 "mult_adds": stats.total_mult_adds, "layers": layers})


@app.command()
def classify(
    images: ImagesArg,
    backbone: BackboneOpt = DEFAULT_BACKBONE,
    weights: WeightsOpt = None,
    top_k: TopKOpt = 5,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """ImageNet top-k for photos with a pretrained backbone."""
    from ..inference.load import from_backbone

    results = from_backbone(backbone, weights).predict(images, top_k=top_k)
    _show_predictions(results, as_json)


@app.command()
def train(
    data: Annotated[Path, typer.Argument(metavar="DATA", help="Folder of class subfolders, Oxford-IIIT Pet root, "
                                                               "or CSV of path,label.", show_default=False)],
    fmt: Annotated[Format, typer.Option("--format", help="How to read DATA.")] = Format.auto,
    label: Annotated[Label, typer.Option("--label", help="Oxford-IIIT Pet: which label.")] = Label.breed,
    split: Annotated[str | None, typer.Option(
        "--split", help="Oxford-IIIT Pet: trainval or test (default: trainval)")] = None,
    backbone: BackboneOpt = DEFAULT_BACKBONE,
    weights: WeightsOpt = None,
    mode: Annotated[Mode, typer.Option("--mode", help="linear: logistic regression on features; head: MLP; "
                                                      "finetune: end to end; auto: search backbones, ensembles, "
                                                      "heads by cross-validation within --budget.")] = Mode.linear,
    val_fraction: Annotated[float, typer.Option("--val-fraction", help="Held-out validation share.")] = 0.2,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    epochs: Annotated[int | None, typer.Option(
        "--epochs", min=1, help="head/finetune: epochs (default: head 200 (early stopping), finetune 3)")] = None,
    lr: Annotated[float | None, typer.Option(
        "--lr", help="head/finetune: peak learning rate (default: 0.001)")] = None,
    unfreeze: Annotated[str | None, typer.Option(
        "--unfreeze", metavar="all|last:K|progressive", help="finetune: depth groups to train (default: all)")] = None,
    batch_size: Annotated[int | None, typer.Option(
        "--batch-size", min=1, help="head/finetune (default: head 64, finetune 32)")] = None,
    aug: Annotated[Augment | None, typer.Option("--aug", help="finetune: augmentation (default: light)")] = None,
    mixup: Annotated[float | None, typer.Option(
        "--mixup", min=0, help="finetune: MixUp Beta(a, a) parameter, e.g. 0.2 (default: 0 = off)")] = None,
    cutmix: Annotated[float | None, typer.Option(
        "--cutmix", min=0, help="finetune: CutMix Beta(a, a) parameter, e.g. 1.0 (default: 0 = off)")] = None,
    wise: Annotated[float | None, typer.Option(
        "--wise", metavar="A", help="finetune: keep A x the fine-tuned weights + (1 - A) x the start (WiSE-FT; "
                                    "0.5 helps on small data) (default: 1 = off)")] = None,
    input_size: Annotated[int | None, typer.Option(
        "--input-size", help=f"Input size, {INPUT_SIZE} (default: the backbone's)")] = None,
    resume: Annotated[Path | None, typer.Option(
        "--resume", metavar="RUN", help="finetune: continue RUN from its last checkpoint; auto: continue RUN's "
                                        "search (finished candidates are reused).")] = None,
    feature_aug: Annotated[FeatureAug | None, typer.Option(
        "--feature-aug", help="linear/head: flip = mirrored photos' features as extra training rows, and each "
                              "photo's features averaged with its mirror's at prediction (default: none)")] = None,
    budget: Annotated[str | None, typer.Option(
        "--budget", metavar="TIME", help="auto: time budget, e.g. 15m, 90s, 1h (default: 15m)")] = None,
    members: Annotated[str | None, typer.Option(
        "--members", metavar="B@S,...", help="auto: backbones to try (default: lite0, mobilenet_v2, lite1, "
                                             "lite2 at 260/320/384)")] = None,
    nproc: Annotated[int, typer.Option(
        "--nproc", min=1, help="Processes (DDP via torchrun; gloo on CPU, nccl on CUDA).")] = 1,
    run_out: Annotated[Path | None, typer.Option(
        "--out", "-o", metavar="RUN", help="Run directory to write (default: runs/<data>-<backbone>-<mode>, "
                                           "or the --resume RUN)")] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace the run already at --out (as a whole, once the new run is complete).")] = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train a classifier on your photos and write a run directory."""
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        from ..runtime.distributed import launch_torchrun

        raise typer.Exit(launch_torchrun(nproc, sys.argv[1:]))
    from ..training.api import train as _train

    given = {"backbone": backbone, "weights": weights, "input_size": input_size, "format": _val(fmt),
             "label": _val(label), "split": split, "val_fraction": val_fraction, "seed": seed, "epochs": epochs,
             "lr": lr, "unfreeze": unfreeze, "batch_size": batch_size, "aug": _val(aug), "mixup": mixup,
             "cutmix": cutmix, "wise": wise, "resume": resume, "overwrite": overwrite,
             "feature_aug": _val(feature_aug), "budget": budget, "members": members}
    run = _train(data, mode=_val(mode), out=run_out or resume, progress=not quiet, **given)
    if run is None:  # a non-zero torchrun rank: rank 0 reports
        return
    _report_training(run, as_json)


def _report_training(run, as_json: bool) -> None:
    m = run.metrics
    auto, cal = run.config.auto, run.config.calibration
    if as_json:
        _print_json({"run": str(run.path), **{k: m.get(k) for k in
                     ("mode", "backbone", "train_accuracy", "val_accuracy", "seconds", "skipped", "skipped_files")},
                     "calibration": cal, **({"auto": auto} if auto else {})})
    else:
        from ..report.text import calibration_line, leaderboard_lines, training_summary

        lines = [*leaderboard_lines(auto["leaderboard"]), f"chosen: {auto['why']}"] if auto else []
        for line in [*lines, *training_summary(run), calibration_line(cal)]:
            if line:
                _print(line)
    if run.config.interrupted:
        _eprint(f"interrupted: the run keeps epoch {run.config.best_epoch} (best so far); "
                f"continue with --resume {run.path}")
    empty = run.config.empty_classes
    if empty:
        _eprint(f"ignored {len(empty)} empty class folder(s) (no image files): {', '.join(empty)}")
    _report_skipped(m.get("skipped_files", []))
    _list_files("figures:", m.get("figures", []))


def _report_skipped(skipped: list[dict]) -> None:
    if skipped:
        _eprint(f"skipped {len(skipped)} unreadable file(s):")
        for s in skipped[:20]:
            _eprint(f"  {s['path']}: {s['reason']}")
        if len(skipped) > 20:
            _eprint(f"  ... and {len(skipped) - 20} more (see metrics.json)")


@app.command()
def evaluate(
    run: Annotated[str, typer.Argument(metavar="RUN", help="Run directory (or a backbone name for its ImageNet "
                                                            "head).", show_default=False)],
    data: Annotated[Path, typer.Argument(metavar="DATA", help="Dataset to evaluate on.", show_default=False)],
    split: Annotated[str | None, typer.Option(
        "--split", help="test | trainval | train | val (the run's own split of DATA) (default: Oxford test, "
                        "else all of DATA)")] = None,
    fmt: Annotated[Format, typer.Option("--format", help="How to read DATA.")] = Format.auto,
    eval_out: Annotated[Path | None, typer.Option(
        "--out", "-o", metavar="DIR", help="Where to write metrics.json and figures (default: "
                                           "RUN/eval-<data>-<split> inside the run directory)")] = None,
    tta: TTAOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Accuracy, per-class P/R/F1, confusion matrix and top losses of a run on a dataset."""
    from ..evaluation.evaluate import evaluate as _evaluate
    from ..inference.load import load

    r = load(run)
    dest = eval_out or ((r.path / f"eval-{Path(str(data).rstrip('/')).name}-{split or 'default'}") if r.path else None)
    m = _evaluate(r, data, split=split, out=dest, format=_val(fmt), progress=not quiet,
                  **({"tta": _val(tta)} if tta else {}))
    if as_json:
        _print_json({k: v for k, v in m.items() if k not in ("confusion",)})
    else:
        line = f"accuracy {m['accuracy']:.4f} on {m['n']} images"
        if "top5_accuracy" in m:
            line += f"   top-5 {m['top5_accuracy']:.4f}"
        _print(line + f"   macro F1 {m['macro_f1']:.4f}")
        if m.get("ece") is not None:
            _print(f"expected calibration error {m['ece']:.2%} ({m['n']} images, 15 bins)")
        if dest:
            _print(f"written: {dest / 'metrics.json'}")
    _report_skipped(m.get("skipped_files", []))
    _list_files("figures:", m.get("figures", []))


@app.command()
def review(
    run: Annotated[str, typer.Argument(metavar="RUN", help="Run directory (or a backbone name): whose features "
                                                            "score the photos.", show_default=False)],
    data: Annotated[Path, typer.Argument(metavar="DATA", help="Dataset whose labels to check.", show_default=False)],
    split: Annotated[str | None, typer.Option(
        "--split", help="Oxford-IIIT Pet: trainval or test (default: every listed image)")] = None,
    fmt: Annotated[Format, typer.Option("--format", help="How to read DATA.")] = Format.auto,
    folds: Annotated[int, typer.Option("--folds", help=f"Cross-validation folds, {FOLDS}.")
                     ] = 5,
    top: Annotated[int, typer.Option("--top", help=f"Photos on the contact sheet, {NON_NEGATIVE}.")
                   ] = 24,
    review_out: Annotated[Path | None, typer.Option(
        "--out", "-o", metavar="DIR", help="Where to write review.json, review.csv and contact_sheet.png "
                                           "(default: RUN/review-<data>, or review-<data> for a backbone)")] = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Photos whose label looks wrong: confident learning on cross-validated probabilities."""
    from ..evaluation.review import ReviewOptions
    from ..evaluation.review import review as _review
    from ..inference.load import load
    from ..report.text import review_lines

    r = load(run)
    name = f"review-{Path(str(data).rstrip('/')).name}"
    dest = review_out or (r.path / name if r.path else Path(name))
    res = _review(r, data, out=dest, options=ReviewOptions(folds=folds, top=top, split=split, format=_val(fmt)),
                  progress=not quiet)
    if as_json:
        _print_json(res)
    else:
        for line in review_lines(res, top):
            _print(line)
    _report_skipped(res.get("skipped_files", []))
    _list_files("written:", res.get("files", []))


@app.command()
def predict(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="Run directory, export directory (no PyTorch "
                                         "needed) or backbone name.", show_default=False)],
    images: Annotated[list[Path], typer.Argument(metavar="PATH", help="Image files and/or folders (searched "
                                                  "recursively).", show_default=False)],
    top_k: TopKOpt = 5,
    threshold: Annotated[float | None, typer.Option(
        "--threshold", min=PROBABILITY.low, max=PROBABILITY.high, metavar="P",
        help="Answer 'unsure' when the top probability is below P "
        "(default: the model's own, chosen on its validation data; none for a bare backbone).")] = None,
    csv_out: Annotated[Path | None, typer.Option(
        "--csv", metavar="FILE", help="Also write one row per image: path, label, score, status, top-k.")] = None,
    tta: TTAOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Top-k classes of a trained run (or an export) for photos and whole folders."""
    from ..data.images import expand_image_paths
    from ..inference.load import load_model

    paths = expand_image_paths(images)
    if csv_out is not None:
        from .._io import check_writable, ensure_outside

        ensure_outside(csv_out, *[p for p in images if p.is_dir()], param="csv")
        check_writable(csv_out, param="csv")
    rows = load_model(model).predict(paths, top_k=top_k, threshold=threshold, **({"tta": _val(tta)} if tta else {}))
    if csv_out is not None:
        from ..inference.rows import write_csv

        write_csv(rows, csv_out)
    _show_predictions(rows, as_json)
    if csv_out is not None and not as_json:
        _list_files("written:", [csv_out])


@app.command()
def export(
    run: Annotated[str, typer.Argument(metavar="RUN", help="Run directory (or a backbone name).",
                                       show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", metavar="DIR", help="New folder for the export.",
                                      show_default=False)],
    fmt: Annotated[list[ExportFormat] | None, typer.Option(
        "--format", help="onnx (default), savedmodel (TensorFlow) or tflite (LiteRT, float32 + int8); repeat for "
                         "several in one folder. TensorFlow formats need pip install 'transferlab[tensorflow]'.")
                   ] = None,
    verify: Annotated[list[Path] | None, typer.Option(
        "--verify", metavar="IMAGE", help="Photos for the parity check (default: up to 100 of the run's own "
                                          "data, else sample photos).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing export in DIR.")] = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """The whole classifier as ONNX, SavedModel or LiteRT + labels + model card, checked against
    PyTorch; `predict DIR ...` then needs no PyTorch."""
    from ..export import ExportReport, export
    from ..report.text import export_lines

    r = export(run, out, formats=[f.value for f in fmt or [ExportFormat.onnx]], verify_images=verify or None,
               overwrite=overwrite)
    if as_json:
        _print_json(r.to_dict())
        return
    for line in export_lines(r) if isinstance(r, ExportReport) else r.lines():
        _print(line)
    for p, why in r.skipped:
        _eprint(f"{p}: skipped ({why})")
    _list_files("written:", [Path(r.out_dir) / f for f in r.files])


@app.command()
def serve(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="Export directory, run directory or backbone name.",
                                         show_default=False)],
    db: Annotated[str, typer.Option("--db", metavar="PATH|URL",
                                    help="SQLite file, or postgresql://user@host/dbname.")] = "catalog.sqlite",
    media: Annotated[Path | None, typer.Option(
        "--media", metavar="DIR", help="Photo folder (default: media/ next to a SQLite --db; required with a "
                                       "URL).")] = None,
    host: Annotated[str, typer.Option("--host", help="Interface to bind (127.0.0.1: this computer only).")
                    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help=f"Port, {PORT}.")] = 8000,
    max_upload_mb: Annotated[float, typer.Option(
        "--max-upload-mb", help=f"Largest photo accepted, {UPLOAD_MB}.")] = 10.0,
    threshold: Annotated[float | None, typer.Option(
        "--threshold", metavar="P", help="Top-1 probability below which the answer is 'not sure' "
        f"({PROBABILITY}; default: the model's, else 0.5).")] = None,
    duplicate_threshold: Annotated[float, typer.Option(
        "--duplicate-threshold", help="Cosine similarity from which a photo is flagged as a possible duplicate "
        f"({SIMILARITY}).")] = 0.90,
    certfile: Annotated[Path | None, typer.Option("--certfile", metavar="PEM", help="Serve HTTPS with this "
                                                  "certificate (and --keyfile).")] = None,
    keyfile: Annotated[Path | None, typer.Option("--keyfile", metavar="PEM", help="The certificate's key.")] = None,
    trusted_proxy: Annotated[list[str] | None, typer.Option(
        "--trusted-proxy", metavar="IP", help="A reverse proxy whose X-Forwarded-For/-Proto headers are believed "
                                              "(repeatable).")] = None,
    session_hours: Annotated[float, typer.Option("--session-hours", min=0.01, help="Login sessions expire "
                                                 "after this long.")] = 12.0,
) -> None:
    """The shelter's catalog web app: breed from a photo, heat map, duplicates, catalog, CSV export.
    Once `transferlab users add` has made an account, every page and API call needs a login."""
    try:
        from .serve import Settings, run_server
        from .serve.auth import check_bind
    except ImportError as e:
        raise TransferlabError(f"serve needs the web extras: pip install 'transferlab[serve]' ({e.name} is "
                               "missing)") from None
    settings = Settings(model=model, db=db, media=media, host=host, port=port, max_upload_mb=max_upload_mb,
                        threshold=threshold, duplicate_threshold=duplicate_threshold, certfile=certfile,
                        keyfile=keyfile, trusted_proxies=trusted_proxy or None, session_hours=session_hours)
    check_bind(settings)  # before the message: a refused wide bind says only why
    _eprint(f"serving {model} on http{'s' if certfile else ''}://{host}:{port}  (Ctrl-C stops)")
    run_server(settings)


app.add_typer(users_app, name="users")
app.add_typer(catalog_app, name="catalog")


@app.command()
def fetch(
    name: Annotated[Dataset, typer.Argument(metavar="NAME", help="Dataset to download.", show_default=False)],
    dest: Annotated[Path, typer.Argument(metavar="DIR", help="Folder to download and extract into.",
                                         show_default=False)],
    mirror: Annotated[str | None, typer.Option(
        "--mirror", metavar="URL", help="Base URL serving the same archive names.")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Download an official dataset archive (resumable, checksummed, safely extracted)."""
    from ..data.fetch import fetch as _fetch

    root = _fetch(_val(name), dest, mirror=mirror, progress=not quiet)
    _print(f"dataset ready: {root}   (train it: transferlab train {root})")


@app.command()
def demo(
    demo_out: Annotated[Path, typer.Option("--out", "-o", metavar="DIR", help="Folder for the report and figures.")
                        ] = Path("demo-out"),
    quiet: QuietOpt = False,
) -> None:
    """Run the whole tool on bundled data, offline; writes report.html."""
    from .demo import run_demo

    run_demo(demo_out, quiet=quiet, log=_print)


def _show_predictions(results: list[dict], as_json: bool) -> None:
    if as_json:
        _print_json(results)
    else:
        from ..report.text import prediction_lines

        for r in results:
            if "error" in r:
                _eprint(f"{r['path']}: skipped ({r['error']})")
                continue
            for line in prediction_lines(r):
                _print(line)
    if results and all("error" in r for r in results):
        raise TransferlabError("no readable image among the inputs")


@app.command()
def bench(
    backbone: BackboneOpt = DEFAULT_BACKBONE,
    data: Annotated[Path | None, typer.Option(
        "--data", metavar="DIR", help="Image folder (default: bundled scikit-image samples)")] = None,
    limit: Annotated[int | None, typer.Option(
        "--limit", min=1, help="Images for (b), tiled (default: all of --data, or 512 bundled samples).")] = None,
    naive_limit: Annotated[int, typer.Option("--naive-limit", min=0, help="Images for (a); 0 skips it.")] = 256,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 32,
    workers: Annotated[int | None, typer.Option("--workers", min=1, help="Decode threads.")] = None,
    threads: Annotated[int | None, typer.Option("--threads", min=1, help="torch intra-op threads.")] = None,
    engine: Annotated[Engine, typer.Option("--engine", help="auto: what train/evaluate use here.")] = Engine.auto,
    compile: Annotated[bool | None, typer.Option(
        "--compile/--no-compile", help="torch.compile (engine torch; default: as train, TRANSFERLAB_COMPILE); "
        "--compile also adds compiled torch to the engine table (a one-off compile of ~1 min).")] = None,
    engines: Annotated[bool, typer.Option(
        "--engines/--no-engines", help="Time every engine side by side first (and store the verdict).")] = True,
    bf16: Annotated[bool | None, typer.Option("--bf16/--fp32", help="bf16 if supported (engine torch).")] = None,
    device: Annotated[str | None, typer.Option("--device", help="cpu or cuda (default: cuda if any)")] = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Extraction speed: every engine side by side, (a) naive loop, (b) pipeline, (c) forward-only limit."""
    from ..report.text import bench_report
    from .bench import bench as run_bench

    r = run_bench(backbone, data, limit, naive_limit=naive_limit, batch_size=batch_size, workers=workers,
                  threads=threads, compile=compile, bf16=bf16, device=device, naive=naive_limit > 0,
                  engine=_val(engine), engines=engines, progress=not (quiet or as_json))
    if as_json:
        _print_json(r)
    else:
        _print(bench_report(r))


@app.command()
def attack(
    image: Annotated[Path, typer.Argument(metavar="IMAGE", help="Photo to attack (resized + centre-cropped like "
                                                                 "classify).", show_default=False)],
    out_png: AdversarialPng,
    model: ModelOpt = None,
    target: Annotated[str | None, typer.Option("--target", "-t", metavar="CLASS", help="Class to reach.")] = None,
    untargeted: Annotated[bool, typer.Option("--untargeted", help="Move away from the prediction.")] = False,
    method: Annotated[AttackMethod, typer.Option("--method")] = AttackMethod.pgd,
    eps: Annotated[str | None, typer.Option(
        "--eps", help="Budget in [0,1] pixels, e.g. 2/255 (L∞) or 0.5 (pgd-l2) (default: the method's)")] = None,
    steps: StepsOpt = None,
    step_size: Annotated[str | None, typer.Option("--step-size", help="e.g. 0.5/255 (default: the method's)")
                         ] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    transfer_to: Annotated[str | None, typer.Option(
        "--transfer-to", metavar="MODEL", help="Also score the saved PNG with this backbone or run.")] = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    backbone: BackboneAlias = None,
    run: RunAlias = None,
) -> None:
    """Adversarial example; epsilons are in pixel units, success is scored on the saved 8-bit PNG."""
    from ..attack.single import attack_image
    from ..report.text import attack_lines

    if (target is None) == (not untargeted):
        raise TransferlabError("give exactly one of --target CLASS or --untargeted")
    r = attack_image(image, _model(model, run, backbone), target=target, method=_val(method),
                     eps=eps if eps is not None else "default", steps=steps, step_size=step_size,
                     seed=seed, out=out_png, progress=not quiet, transfer_to=transfer_to or None)
    if as_json:
        _print_json(r)
    else:
        for line in attack_lines(r):
            _print(line)


@app.command()
def robustness(
    run: Annotated[str, typer.Argument(metavar="RUN", help="Run directory (or a backbone whose classes match "
                                                            "DATA).", show_default=False)],
    data: Annotated[Path, typer.Argument(metavar="DATA", help="Folder / Oxford-IIIT Pet root / CSV.",
                                         show_default=False)],
    method: Annotated[BudgetMethod, typer.Option("--method", "-m")] = BudgetMethod.pgd,
    eps: Annotated[str, typer.Option("--eps", help="Comma-separated budgets.")] = "0,1/255,2/255,4/255,8/255",
    steps: Annotated[int, typer.Option("--steps", min=1)] = 10,
    limit: Annotated[int | None, typer.Option(
        "--limit", min=1, help="Seeded stratified subsample of N images.")] = None,
    split: Annotated[str | None, typer.Option("--split", help="test | trainval | val (the run's own)")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 32,
    out_dir: Annotated[Path | None, typer.Option("--out", metavar="DIR", help="Writes robustness.json + .png.")
                       ] = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Accuracy under attack for a list of epsilons (pixel units), with a curve."""
    from ..attack.budget import parse_eps_list
    from ..attack.robustness import robustness as _robustness
    from ..report.text import robustness_lines

    r = _robustness(run, data, method=_val(method), eps=parse_eps_list(eps), steps=steps, limit=limit, split=split,
                    seed=seed, batch_size=batch_size, out=out_dir, progress=not quiet)
    if as_json:
        _print_json(r)
        return
    for line in robustness_lines(r):
        _print(line)
    if r["skipped"]:
        _eprint(f"skipped {len(r['skipped'])} unreadable files")
    _list_files("written", [r.get("figure"), Path(out_dir) / "robustness.json" if out_dir else None])


@app.command()
def featuremaps(
    image: Annotated[Path | None, typer.Argument(metavar="IMAGE", help="Photo (not needed with --list-layers).",
                                                 show_default=False)] = None,
    model: ModelOpt = None,
    layer: Annotated[str | None, typer.Option(
        "--layer", "-l", help="Name or position from --list-layers (default: a mid-level block)")] = None,
    list_layers: Annotated[bool, typer.Option("--list-layers", help="Print layers, output shapes.")] = False,
    out_png: Annotated[Path, typer.Option("--out", "-o", metavar="PNG", help="Figure (.png).")
                       ] = Path("featuremaps.png"),
    as_json: JsonOpt = False,
    backbone: BackboneAlias = None,
    run: RunAlias = None,
) -> None:
    """Feature maps of one layer: the most active channels and a heat map over the photo."""
    from ..explain import featuremaps as _fm
    from ..inference.load import load

    model = _model(model, run, backbone)
    if list_layers:
        layers = _fm.list_layers(load(model))
        if as_json:
            _print_json([{"name": li.name, "shape": list(li.shape)} for li in layers])
        else:
            for li in layers:
                _print(f"{li.name:<14} {'x'.join(map(str, li.shape))}")
        return
    if image is None:
        raise TransferlabError("give an IMAGE (or --list-layers)")
    fm, path = _fm.featuremaps(image, model, layer=layer, out=out_png)
    if as_json:
        _print_json(fm.to_dict() | {"out": str(path)})
    else:
        c, h, w = fm.activations.shape
        _print(f"{fm.layer}: {c} channels at {h}x{w}; most active {fm.top_channels[:8]}")
        _list_files("written", [path])


@app.command()
def dream(
    target: ClassArg,
    out_png: DreamPng,
    model: ModelOpt = None,
    method: Annotated[DreamMethod, typer.Option(
        "--method", help="lucid: robust, readable; plain: the lesson's.")] = DreamMethod.lucid,
    steps: StepsOpt = None,
    tv: Annotated[float | None, typer.Option("--tv", min=0, help="Total-variation weight (default: plain 0.005, "
                                                                 "lucid 0)")] = None,
    lr: Annotated[float | None, typer.Option("--lr", min=0, help="Adam step (default: plain 0.02, lucid 0.05).")
                  ] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    from_image: Annotated[Path | None, typer.Option("--from", metavar="IMAGE", help="Start from this photo.")
                          ] = None,
    check_with: Annotated[str | None, typer.Option(
        "--check-with", metavar="MODEL", help="Score the saved PNG with an independent backbone or run.")] = None,
    snapshots: Annotated[int, typer.Option("--snapshots", min=0, help="Also save a strip of K steps.")] = 0,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    backbone: BackboneAlias = None,
    run: RunAlias = None,
) -> None:
    """Optimise an image until the model says CLASS; probabilities are of the saved 8-bit PNG."""
    from ..explain.dream import dream as _dream
    from ..report.text import dream_lines

    r = _dream(target, _model(model, run, backbone), method=_val(method), steps=steps, tv=tv, lr=lr, seed=seed,
               check_with=check_with, init_image=from_image, snapshots=snapshots, out=out_png,
               progress=not quiet)
    if as_json:
        _print_json(r.to_dict())
        return
    for line in dream_lines(r):
        _print(line)
    _list_files("written", [r.paths.get("out"), r.paths.get("snapshots")])


# --- commands of later pipeline stages register below (one thin function each) -------------


def _flag(param: str) -> str:
    return "--" + param.replace("_", "-")


def main() -> None:
    """Console-script entry point: map user errors to exit 2 with one line, no traceback."""
    try:
        app(standalone_mode=False)
    except OptionError as e:  # the library names the parameter; the CLI says its flag
        _eprint(f"error: {e.render(_flag)}")
        sys.exit(2)
    except TransferlabError as e:
        _eprint(f"error: {e}")
        sys.exit(2)
    except (typer.Exit, SystemExit) as e:
        sys.exit(getattr(e, "exit_code", getattr(e, "code", 0)))
    except typer.Abort:
        _eprint("aborted")
        sys.exit(130)
    except _click_exceptions() as e:  # bad option value, missing argument, unknown option...
        msg = e.format_message() if hasattr(e, "format_message") else str(e)
        ctx = getattr(e, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        _eprint(f"error: {msg}{hint}")
        sys.exit(2)
    except KeyboardInterrupt:
        _eprint("interrupted")
        sys.exit(130)
    except (PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError) as e:
        # e.g. an --out inside a read-only folder: the user's environment, not a bug
        _eprint(f"error: {e.strerror or e}: {e.filename}")
        sys.exit(2)
    except Exception as e:
        if os.environ.get("TRANSFERLAB_DEBUG"):
            raise
        _eprint(f"internal error: {type(e).__name__}: {e} (set TRANSFERLAB_DEBUG=1 for the traceback)")
        sys.exit(1)


def _click_exceptions() -> tuple[type[Exception], ...]:
    """click's usage errors, and those of the click copy that recent typer versions vendor."""
    import click

    vendored = getattr(typer, "TyperException", None)
    return (click.ClickException, *([vendored] if isinstance(vendored, type) else []))
