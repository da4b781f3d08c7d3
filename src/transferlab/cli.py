"""Command-line interface: one thin command per verb over the Python API.

Exit codes: 0 success, 2 user error (one line on stderr, no traceback), 1 internal error.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

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
WeightsOpt = Annotated[
    Optional[Path], typer.Option("--weights", help="Local state dict (.safetensors or .pth) for the backbone.")
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
    for c in ("name", "kind", "available now", "params (M)", "feature dim", "input size"):
        t.add_column(c)
    for r in rows:
        t.add_row(r["name"], r["kind"], "yes" if r["available"] else "no" if r["kind"] == "bundled" else "if online",
                  str(r.get("params_m", "")), str(r.get("feature_dim", "")), str(r.get("input_size", "")))
    out.print(t)


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
    except _click_exceptions() as e:
        e.show()
        sys.exit(e.exit_code)
    except typer.Abort:
        err.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except Exception as e:  # noqa: BLE001
        if os.environ.get("TRANSFERLAB_DEBUG"):
            raise
        err.print(f"internal error: {type(e).__name__}: {e} (set TRANSFERLAB_DEBUG=1 for the traceback)",
                  highlight=False, soft_wrap=True)
        sys.exit(1)


def _click_exceptions():
    import click

    return (click.ClickException,)
