"""The peers: what a user of another tool would run on the same photos with the same weights.

Each peer is a script of its own (``python -m benchmarks.peers.NAME``), run as a subprocess so its
imports, threads and memory are its own, exactly as transferlab's commands are. The scripts print
one JSON object; the rows here turn it into figures. A peer that cannot run here (not installed,
or it fails) is a row that says why, never a missing row.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from ..core import BenchError, Row
from ..machine import version
from ..tools import run_cmd, shorten

PEERS_EXTRA = "pip install -e '.[peers]'"


def _script(module: str, train: Path, test: Path, spec, extra: list[str]) -> dict:
    size = ["--size", str(spec.size)] if spec.size else []
    argv = [sys.executable, "-m", f"benchmarks.peers.{module}", "--train", str(train), "--test", str(test),
            "--backbone", spec.backbone, *size, *extra]
    done = run_cmd(argv, timeout=spec.timeout)
    return {**done.out, "wall": done.seconds}


def _row_from(row: Row, out: dict) -> Row:
    row.add("test accuracy", 100 * out["accuracy"], "%")
    # the training time is the process's wall time up to the trained model: the script's own test
    # scoring (after training) is taken off, so the figure compares with `transferlab train`'s
    row.add("train", out["wall"] - out["test_seconds"], "s", 1).add("test", out["test_seconds"], "s", 1)
    row.settings = out.get("settings", {})
    return row


def _run(row: Row, module: str, train: Path, test: Path, spec, extra: list[str]) -> Row:
    try:
        return _row_from(row, _script(module, train, test, spec, extra))
    except BenchError as e:
        row.status, row.reason = "failed", shorten(str(e))
        return row


def sklearn_row(train: Path, test: Path, spec, run: bool = True) -> Row:
    """The naive scikit-learn probe (``run`` False: the row as it would run, not run)."""
    ver = f"scikit-learn {version('scikit-learn')}, timm {version('timm')}, torch {version('torch')}"
    recipe = (f"timm tf_{spec.backbone} + resolve_data_config/create_transform, DataLoader(num_workers=0), eager "
              "fp32; LogisticRegression(max_iter=1000), default C")
    row = Row("scikit-learn probe on timm features", ver, recipe)
    return _run(row, "sklearn_probe", train, test, spec, []) if run else row


def fastai_row(train: Path, test: Path, spec, run: bool = True) -> Row:
    """fastai's fine_tune; a skipped row saying why when fastai is not installed."""
    ver = f"fastai {version('fastai')}, torch {version('torch')}" if version("fastai") else "fastai (not installed)"
    size = spec.size or "the weights' own"
    recipe = (f"vision_learner(timm tf_{spec.backbone}, pretrained=False) + the bundled weights; Resize(460) + "
              f"aug_transforms(size={size}, min_scale=0.75) + their Normalize; "
              f"fine_tune({spec.fastai_epochs}) (1 frozen epoch first), default lr 2e-3, bs {spec.fastai_bs}")
    row = Row("fastai fine_tune", ver, recipe)
    if importlib.util.find_spec("fastai") is None:
        row.status, row.reason = "skipped", f"fastai is not installed here ({PEERS_EXTRA})"
        return row
    extra = ["--epochs", str(spec.fastai_epochs), "--bs", str(spec.fastai_bs)]
    return _run(row, "fastai_finetune", train, test, spec, extra) if run else row
