"""'Ideal class' images: ``transferlab dream`` (the lesson's plain method and the default lucid one),
scored on the saved 8-bit PNG by the model itself and, in the full preset, by an independent one
(mobilenet_v2: does a second network see the class too?)."""

from __future__ import annotations

from .core import Preset, Result, Row, benchmark
from .machine import version
from .tools import tl


def _dream(p: Preset, method: str, target: str) -> Row:
    steps = ["--steps", "4"] if p.quick else []
    check = [] if p.quick else ["--check-with", "mobilenet_v2"]
    tag = f"{method}-{target.replace(' ', '_')}"
    done = tl("dream", target, "--model", "efficientnet_lite0", "--method", method, "--seed", "0", *steps, *check,
              "--out", p.work / f"{tag}.png", cache=p.work / "cache", timeout=900)
    o = done.out
    recipe = f"transferlab dream '{target}' --method {method} --seed 0" + (" --check-with mobilenet_v2" * bool(check))
    row = Row(f"transferlab dream, {method}", f"transferlab {version('transferlab')}", recipe)
    row.add("own p(target)", o["prob"], "", 3).add("dream", o["seconds"], "s", 1).add("command", done.seconds, "s", 1)
    if o.get("check"):
        row.add("mobilenet_v2 p(target)", o["check"].get("prob"), "", 3)
    row.settings = {"target": target, "steps": o.get("steps"),
                    **({"check_top1_is_target": o["check"].get("top1_is_target")} if o.get("check") else {})}
    return row


@benchmark("dream", area="explain", title="'Ideal class' images: quality and time", minutes=2.5)
def dream(p: Preset) -> Result:
    """Plain and lucid dreams of ImageNet classes on efficientnet_lite0: own p, a second network's p, seconds."""
    jobs = [("plain", "Siamese cat"), ("lucid", "Siamese cat"), *p.pick([], [], [("lucid", "zebra")])]
    rows = [_dream(p, m, t) for m, t in jobs]
    return Result(rows, settings={"model": "efficientnet_lite0"}, engine="torch")
