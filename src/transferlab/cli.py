"""Command-line interface: one thin command per verb over the Python API.

Exit codes: 0 success, 2 user error (one line on stderr, no traceback), 1 internal error.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from . import progress as _progress
from .errors import TransferlabError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Transfer learning for images, offline: train, explain and attack one model.",
)
out = Console()
err = Console(stderr=True)

BackboneOpt = Annotated[str, typer.Option("--backbone", "-b", help="Backbone name (see `transferlab backbones`).")]
RunOpt = Annotated[str | None, typer.Option(
    "--run", help="A trained run directory to use instead of the backbone's ImageNet classifier.")]
StepsOpt = Annotated[int | None, typer.Option("--steps", min=1, help="Optimisation steps (default: the method's).")]
WeightsOpt = Annotated[
    Path | None, typer.Option("--weights", help="Local state dict (.safetensors or .pth) for the backbone.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable results on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]


def _quiet(q: bool) -> None:
    _progress.QUIET = q


def _print_json(obj) -> None:
    from ._io import _jsonable

    sys.stdout.write(json.dumps(obj, indent=2, default=_jsonable) + "\n")


def _list_files(title: str, files) -> None:
    files = [str(f) for f in files if f]
    if files:
        err.print(f"[bold]{title}[/bold]")
        for f in files:
            err.print(f"  {f}")


@app.command()
def backbones(as_json: JsonOpt = False) -> None:
    """List backbones: bundled (offline) ones and how to use online ones."""
    from .backbones import create_backbone, list_backbones

    rows = []
    for spec in list_backbones():
        row = {"name": spec.name, "kind": "bundled", "available": spec.available(), "description": spec.description}
        if row["available"]:
            bb = create_backbone(spec.name)
            row |= {
                "params_m": round(bb.num_params() / 1e6, 2),
                "feature_dim": bb.feature_dim,
                "input_size": bb.data_config.input_size,
            }
        rows.append(row)
    rows.append({"name": "<torchvision name> e.g. resnet50, vgg16", "kind": "online", "available": False,
                 "description": "downloads through torchvision's cache when online"})
    rows.append({"name": "timm:<name>", "kind": "online", "available": False,
                 "description": "downloads through timm / Hugging Face cache when online"})
    if as_json:
        _print_json(rows)
        return
    t = Table(title="Backbones")
    for c in ("name", "kind", "available", "params (M)", "feature dim", "input"):
        t.add_column(c, no_wrap=True)
    for r in rows:
        if r["kind"] == "bundled":
            t.add_row(r["name"], r["kind"], "yes" if r["available"] else "no: pip install",
                      str(r.get("params_m", "")), str(r.get("feature_dim", "")), str(r.get("input_size", "")))
    out.print(t)
    out.print("Online (when the machine is online; weights go to torchvision's / timm's cache):\n"
              "  any torchvision classifier name (resnet50, vgg16, mobilenet_v3_large, ...) and timm:<name>.\n"
              "  Offline, use --weights PATH with a local state dict for those architectures.")


@app.command()
def classify(
    images: Annotated[list[Path], typer.Argument(help="Image files.")],
    backbone: BackboneOpt = "efficientnet_lite0",
    weights: WeightsOpt = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1)] = 5,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """ImageNet top-k for photos with a pretrained backbone."""
    from .predict import predict
    from .run import from_backbone

    _quiet(quiet)
    results = predict(from_backbone(backbone, weights), images, top_k=top_k)
    _show_predictions(results, as_json)


@app.command()
def train(
    data: Annotated[Path, typer.Argument(help="Folder of class subfolders, Oxford-IIIT Pet root, or CSV.")],
    fmt: Annotated[str, typer.Option("--format", help="auto|folder|oxford-pets|csv")] = "auto",
    label: Annotated[str, typer.Option("--label", help="Oxford-IIIT Pet: breed or species.")] = "breed",
    split: Annotated[str | None, typer.Option("--split", help="Oxford-IIIT Pet: trainval (default) or test.")] = None,
    backbone: BackboneOpt = "efficientnet_lite0",
    weights: WeightsOpt = None,
    mode: Annotated[str, typer.Option("--mode", help="linear | head | finetune")] = "linear",
    val_fraction: Annotated[float, typer.Option("--val-fraction", help="Held-out validation share.")] = 0.2,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    epochs: Annotated[int | None, typer.Option("--epochs", help="head/finetune: epochs.")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="head/finetune: peak learning rate.")] = None,
    unfreeze: Annotated[str | None, typer.Option(
        "--unfreeze", help="finetune: all | last:K (depth groups) | progressive.")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, help="head/finetune.")] = None,
    aug: Annotated[str | None, typer.Option("--aug", help="finetune: light | randaug | none.")] = None,
    mixup: Annotated[float | None, typer.Option(
        "--mixup", min=0, help="finetune: MixUp Beta(a, a) parameter, e.g. 0.2 (0 = off).")] = None,
    cutmix: Annotated[float | None, typer.Option(
        "--cutmix", min=0, help="finetune: CutMix Beta(a, a) parameter, e.g. 1.0 (0 = off).")] = None,
    wise: Annotated[float | None, typer.Option(
        "--wise", help="finetune: keep A x the fine-tuned weights + (1 - A) x the start (WiSE-FT; "
                       "0.5 helps on small data; 1 = off).")] = None,
    input_size: Annotated[int | None, typer.Option(
        "--input-size", min=32, max=1024, help="Input size in pixels instead of the backbone's own.")] = None,
    resume: Annotated[Path | None, typer.Option(
        "--resume", help="finetune: continue RUN from its last checkpoint.")] = None,
    nproc: Annotated[int, typer.Option(
        "--nproc", min=1, help="Processes (DDP via torchrun; gloo on CPU, nccl on CUDA).")] = 1,
    run_out: Annotated[Path | None, typer.Option("--out", "-o", help="Run directory to write.")] = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train a classifier on your photos and write a run directory."""
    from .train import train as _train

    _quiet(quiet)
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        from .finetune import launch_torchrun

        raise typer.Exit(launch_torchrun(nproc, sys.argv[1:]))
    opts = {k: v for k, v in {"epochs": epochs, "lr": lr, "unfreeze": unfreeze, "batch_size": batch_size,
                              "aug": aug, "mixup": mixup, "cutmix": cutmix, "wise": wise,
                              "resume": resume}.items() if v is not None}
    run = _train(data, backbone=backbone, weights=weights, mode=mode, format=fmt, label=label, split=split,
                 val_fraction=val_fraction, seed=seed, out=run_out or resume, input_size=input_size,
                 progress=not quiet, **opts)
    if run is None:  # a non-zero torchrun rank: rank 0 reports
        return
    m = json.loads((run.path / "metrics.json").read_text())
    if as_json:
        _print_json({"run": str(run.path), **{k: m.get(k) for k in
                     ("mode", "backbone", "train_accuracy", "val_accuracy", "seconds", "skipped", "skipped_files")}})
    else:
        va = m.get("val_accuracy")
        out.print(f"run: {run.path}  ({m['mode']}, {m['backbone']}, {len(run.classes)} classes, {m['seconds']:.1f} s)")
        out.print(f"train accuracy {m['train_accuracy']:.4f}" + (f"   val accuracy {va:.4f}" if va is not None else ""))
    _report_skipped(m.get("skipped_files", []))
    _list_files("figures:", m.get("figures", []))


def _report_skipped(skipped: list[dict]) -> None:
    if skipped:
        err.print(f"[yellow]skipped {len(skipped)} unreadable file(s):[/yellow]")
        for s in skipped[:20]:
            err.print(f"  {s['path']}: {s['reason']}", highlight=False)
        if len(skipped) > 20:
            err.print(f"  ... and {len(skipped) - 20} more (see metrics.json)")


@app.command()
def evaluate(
    run: Annotated[str, typer.Argument(help="Run directory (or a backbone name for its ImageNet head).")],
    data: Annotated[Path, typer.Argument(help="Dataset to evaluate on.")],
    split: Annotated[str | None, typer.Option("--split", help="test (Oxford default) | trainval | train | val")] = None,
    fmt: Annotated[str, typer.Option("--format")] = "auto",
    eval_out: Annotated[Path | None, typer.Option("--out", "-o", help="Where to write metrics and figures.")] = None,
    tta: Annotated[str | None, typer.Option("--tta", help="Test-time aug: flip | flip+crops.")] = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Accuracy, per-class P/R/F1, confusion matrix and top losses of a run on a dataset."""
    from .run import load

    _quiet(quiet)
    r = load(run)
    dest = eval_out or ((r.path / f"eval-{Path(str(data).rstrip('/')).name}-{split or 'default'}") if r.path else None)
    m = r.evaluate(data, split=split, out=dest, format=fmt, progress=not quiet,
                   **({"tta": tta} if tta else {}))
    if as_json:
        _print_json({k: v for k, v in m.items() if k not in ("confusion",)})
    else:
        line = f"accuracy {m['accuracy']:.4f} on {m['n']} images"
        if "top5_accuracy" in m:
            line += f"   top-5 {m['top5_accuracy']:.4f}"
        out.print(line + f"   macro F1 {m['macro_f1']:.4f}")
        if dest:
            out.print(f"written: {dest / 'metrics.json'}")
    _report_skipped(m.get("skipped_files", []))
    _list_files("figures:", m.get("figures", []))


@app.command()
def predict(
    run: Annotated[str, typer.Argument(help="Run directory (or a backbone name).")],
    images: Annotated[list[Path], typer.Argument(help="Image files.")],
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1)] = 3,
    tta: Annotated[str | None, typer.Option("--tta", help="Test-time aug: flip | flip+crops.")] = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Top-k classes of a trained run for photos."""
    from .predict import predict as _predict
    from .run import load

    _quiet(quiet)
    _show_predictions(_predict(load(run), images, top_k=top_k, tta=tta), as_json)


@app.command()
def fetch(
    name: Annotated[str, typer.Argument(help="oxford-pets | petimages")],
    dest: Annotated[Path, typer.Argument(help="Folder to download and extract into.")],
    mirror: Annotated[str | None, typer.Option("--mirror", help="Base URL serving the same archive names.")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Download an official dataset archive (resumable, checksummed, safely extracted)."""
    from .fetch import fetch as _fetch

    _quiet(quiet)
    root = _fetch(name, dest, mirror=mirror)
    out.print(f"dataset ready: {root}   (train it: transferlab train {root})")


@app.command()
def demo(
    demo_out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the report and figures.")] = Path(
        "demo-out"),
    quiet: QuietOpt = False,
) -> None:
    """Run the whole tool on bundled data, offline; writes report.html."""
    from .demo import run_demo

    _quiet(quiet)
    run_demo(demo_out, quiet=quiet, log=lambda s: out.print(s, highlight=False))


def _show_predictions(results: list[dict], as_json: bool) -> None:
    if as_json:
        _print_json(results)
    else:
        for r in results:
            if "error" in r:
                err.print(f"{r['path']}: skipped ({r['error']})")
                continue
            t = Table(title=str(r["path"]), title_justify="left", show_header=False)
            for name, p in r["top"]:
                t.add_row(name, f"{p:.3f}")
            out.print(t)
    if results and all("error" in r for r in results):
        raise TransferlabError("no readable image among the inputs")


@app.command()
def bench(
    backbone: BackboneOpt = "efficientnet_lite0",
    data: Annotated[Path | None, typer.Option(
        "--data", help="Image folder (default ../shared/data/petimages, else bundled samples).")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Images for (b), tiled.")] = None,
    naive_limit: Annotated[int, typer.Option("--naive-limit", min=0, help="Images for (a); 0 skips it.")] = 256,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 32,
    workers: Annotated[int | None, typer.Option("--workers", min=1, help="Decode threads.")] = None,
    threads: Annotated[int | None, typer.Option("--threads", min=1, help="torch intra-op threads.")] = None,
    engine: Annotated[str, typer.Option(
        "--engine", help="auto | torch | onnxruntime (auto: what train/evaluate use here).")] = "auto",
    compile: Annotated[bool, typer.Option("--compile/--no-compile", help="torch.compile (engine torch).")] = True,
    bf16: Annotated[bool | None, typer.Option("--bf16/--fp32", help="bf16 if supported (engine torch).")] = None,
    device: Annotated[str | None, typer.Option("--device", help="cpu or cuda (default cuda if any).")] = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Extraction speed: (a) naive loop, (b) transferlab pipeline, (c) forward-only limit."""
    from .bench import bench as run_bench
    from .bench import format_report

    _quiet(quiet or as_json)
    r = run_bench(backbone, data, limit, naive_limit=naive_limit, batch_size=batch_size, workers=workers,
                  threads=threads, compile=compile, bf16=bf16, device=device, naive=naive_limit > 0,
                  engine=engine)
    if as_json:
        _print_json(r)
    else:
        sys.stdout.write(format_report(r) + "\n")  # plain text: rich would re-wrap the table


@app.command()
def attack(
    image: Annotated[Path, typer.Argument(help="Photo to attack (resized + centre-cropped like classify).")],
    out_png: Annotated[Path, typer.Option("--out", "-o", help="Adversarial image (.png, at input size).")],
    backbone: BackboneOpt = "efficientnet_lite0",
    run: RunOpt = None,
    target: Annotated[str | None, typer.Option("--target", "-t", help="Class to reach.")] = None,
    untargeted: Annotated[bool, typer.Option("--untargeted", help="Move away from the prediction.")] = False,
    method: Annotated[str, typer.Option("--method", "-m", help="fgsm|pgd|pgd-l2|cw|optimize")] = "pgd",
    eps: Annotated[str | None, typer.Option(
        "--eps", help="Budget in [0,1] pixels, e.g. 2/255 (L∞) or 0.5 (pgd-l2).")] = None,
    steps: StepsOpt = None,
    step_size: Annotated[str | None, typer.Option("--step-size", help="e.g. 0.5/255")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    transfer_to: Annotated[str | None, typer.Option(
        "--transfer-to", help="Also score the saved PNG with this backbone or run.")] = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Adversarial example; epsilons are in pixel units, success is scored on the saved 8-bit PNG."""
    from .attack import attack_image, format_result

    _quiet(quiet)
    if (target is None) == (not untargeted):
        raise TransferlabError("give exactly one of --target CLASS or --untargeted")
    r = attack_image(image, run or backbone, target=target, method=method,
                     eps=eps if eps is not None else "default", steps=steps, step_size=step_size,
                     seed=seed, transfer_to=transfer_to, out=out_png, quiet=quiet)
    if as_json:
        _print_json(r)
    else:
        for line in format_result(r):
            out.print(line, highlight=False)


@app.command()
def robustness(
    run: Annotated[str, typer.Argument(help="Run directory (or a backbone whose classes match DATA).")],
    data: Annotated[Path, typer.Argument(help="Folder / Oxford-IIIT Pet root / CSV.")],
    method: Annotated[str, typer.Option("--method", "-m", help="pgd|fgsm|pgd-l2")] = "pgd",
    eps: Annotated[str, typer.Option("--eps", help="Comma-separated budgets.")] = "0,1/255,2/255,4/255,8/255",
    steps: Annotated[int, typer.Option("--steps", min=1)] = 10,
    limit: Annotated[int | None, typer.Option(
        "--limit", min=1, help="Seeded stratified subsample of N images.")] = None,
    split: Annotated[str | None, typer.Option("--split", help="test|trainval|val (run's own)")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 32,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Writes robustness.json + .png.")] = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Accuracy under attack for a list of epsilons (pixel units), with a curve."""
    from .attack import parse_eps_list
    from .robustness import format_table
    from .robustness import robustness as _robustness

    _quiet(quiet)
    r = _robustness(run, data, method=method, eps=parse_eps_list(eps), steps=steps, limit=limit, split=split,
                    seed=seed, batch_size=batch_size, out=out_dir, progress=not quiet)
    if as_json:
        _print_json(r)
        return
    t = Table(title=f"{r['method']} ({r['steps']} steps) on {r['images']} images", title_justify="left")
    t.add_column("ε")
    t.add_column("accuracy")
    for lab, acc in format_table(r):
        t.add_row(lab, acc)
    out.print(t)
    if r["skipped"]:
        err.print(f"skipped {len(r['skipped'])} unreadable files")
    _list_files("written", [r.get("figure"), Path(out_dir) / "robustness.json" if out_dir else None])


@app.command()
def featuremaps(
    image: Annotated[Path | None, typer.Argument(help="Photo (not needed with --list-layers).")] = None,
    backbone: BackboneOpt = "efficientnet_lite0",
    run: RunOpt = None,
    layer: Annotated[str | None, typer.Option(
        "--layer", "-l", help="Name or position from --list-layers (default: a mid-level block).")] = None,
    list_layers: Annotated[bool, typer.Option("--list-layers", help="Print layers, output shapes.")] = False,
    out_png: Annotated[Path, typer.Option("--out", "-o", help="Figure (.png).")] = Path("featuremaps.png"),
    as_json: JsonOpt = False,
) -> None:
    """Feature maps of one layer: the most active channels and a heat map over the photo."""
    from . import inspect as _inspect
    from .run import load

    if list_layers:
        layers = _inspect.list_layers(load(run or backbone))
        if as_json:
            _print_json([{"name": li.name, "shape": list(li.shape)} for li in layers])
        else:
            for li in layers:
                out.print(f"{li.name:<14} {'x'.join(map(str, li.shape))}", highlight=False)
        return
    if image is None:
        raise TransferlabError("give an IMAGE (or --list-layers)")
    fm, path = _inspect.featuremaps(image, run or backbone, layer=layer, out=out_png)
    if as_json:
        _print_json(fm.to_dict() | {"out": str(path)})
    else:
        c, h, w = fm.activations.shape
        out.print(f"{fm.layer}: {c} channels at {h}x{w}; most active {fm.top_channels[:8]}", highlight=False)
        _list_files("written", [path])


@app.command()
def dream(
    target: Annotated[str, typer.Argument(help="Class: ImageNet name (fuzzy: 'siamese') or a run's class.")],
    out_png: Annotated[Path, typer.Option("--out", "-o", help="Image (.png, at the model's input size).")],
    backbone: BackboneOpt = "efficientnet_lite0",
    run: RunOpt = None,
    method: Annotated[str, typer.Option("--method", "-m", help="lucid (robust, readable) | plain (lesson)")]
    = "lucid",
    steps: StepsOpt = None,
    tv: Annotated[float | None, typer.Option("--tv", min=0, help="Total-variation weight (plain: 0.005).")]
    = None,
    lr: Annotated[float | None, typer.Option("--lr", min=0)] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    from_image: Annotated[Path | None, typer.Option("--from", help="Start from this photo.")] = None,
    check_with: Annotated[str | None, typer.Option(
        "--check-with", help="Score the saved PNG with an independent backbone.")] = None,
    snapshots: Annotated[int, typer.Option("--snapshots", min=0, help="Also save a strip of K steps.")] = 0,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Optimise an image until the model says CLASS; probabilities are of the saved 8-bit PNG."""
    from .dream import dream as _dream

    _quiet(quiet)
    r = _dream(target, run or backbone, method=method, steps=steps, tv=tv, lr=lr, seed=seed,
               check_with=check_with, init_image=from_image, snapshots=snapshots, out=out_png,
               progress=not quiet)
    if as_json:
        _print_json(r.to_dict())
        return
    out.print(f"{r.method}, {r.steps} steps, {r.seconds:.1f} s: p({r.target}) = {r.prob:.3f} on "
              f"{r.model}  (top-3: {', '.join(f'{c} {p:.2f}' for c, p in r.top)})", highlight=False)
    if r.check:
        c = r.check
        p = "n/a" if c["prob"] is None else f"{c['prob']:.3f}"
        out.print(f"check with {c['backbone']}: p({r.target}) = {p}  (top-3: "
                  f"{', '.join(f'{n} {q:.2f}' for n, q in c['top'])})", highlight=False)
    _list_files("written", [r.paths.get("out"), r.paths.get("snapshots")])


# --- commands of later pipeline stages register below (one thin function each) -------------


def main() -> None:
    """Console-script entry point: map user errors to exit 2 with one line, no traceback."""
    try:
        app(standalone_mode=False)
    except TransferlabError as e:
        err.print(f"error: {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except (typer.Exit, SystemExit) as e:
        code = getattr(e, "exit_code", getattr(e, "code", 0))
        sys.exit(code)
    except typer.Abort:
        err.print("aborted")
        sys.exit(130)
    except _click_exceptions() as e:  # bad option value, missing argument, unknown option...
        msg = e.format_message() if hasattr(e, "format_message") else str(e)
        ctx = getattr(e, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        err.print(f"error: {msg}{hint}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except (PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError) as e:
        # e.g. an --out inside a read-only folder: the user's environment, not a bug
        err.print(f"error: {e.strerror or e}: {e.filename}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except Exception as e:
        if os.environ.get("TRANSFERLAB_DEBUG"):
            raise
        err.print(f"internal error: {type(e).__name__}: {e} (set TRANSFERLAB_DEBUG=1 for the traceback)",
                  highlight=False, soft_wrap=True)
        sys.exit(1)


def _click_exceptions() -> tuple[type[Exception], ...]:
    """click's usage errors, and those of the click copy that recent typer versions vendor."""
    import click

    vendored = getattr(typer, "TyperException", None)
    return (click.ClickException, *([vendored] if isinstance(vendored, type) else []))
