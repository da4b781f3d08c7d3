"""Adversarial examples: targeted single-photo attacks through ``transferlab attack`` (success is
scored on the saved 8-bit PNG), and batched PGD through ``transferlab robustness`` (seconds per
photo, accuracy at each budget) on a cats-vs-dogs linear run. efficientnet_lite0, real dog photos
from PetImages taken in id order."""

from __future__ import annotations

import statistics

from .core import BenchError, Preset, Result, Row, benchmark
from .machine import version
from .tools import tl, write_csv

TARGET = "Siamese cat"


def _photos(p: Preset, cls: str, n: int) -> list:
    folder = p.data / "petimages" / cls
    if not folder.is_dir():
        raise BenchError(f"PetImages not found at {folder.parent}")
    files = sorted(folder.glob("*.jpg"), key=lambda f: int(f.stem) if f.stem.isdigit() else 0)
    return files[:n]


def _single(p: Preset, method: str, photos: list) -> Row:
    recipe = f"transferlab attack PHOTO --model efficientnet_lite0 --target '{TARGET}' --method {method}"
    row = Row(f"transferlab attack, {method}", f"transferlab {version('transferlab')}", recipe)
    steps = ["--steps", "2"] if p.quick and method != "fgsm" else []
    runs = [tl("attack", f, "--model", "efficientnet_lite0", "--target", TARGET, "--method", method, *steps,
               "--out", p.work / f"{method}-{f.stem}.png", cache=p.work / "cache", timeout=600) for f in photos]
    outs = [r.out for r in runs]
    row.add("success (saved PNG)", 100 * sum(o["success"] for o in outs) / len(outs), "%", 1)
    row.add("attack", statistics.mean(o["seconds"] for o in outs), "s", 2)
    row.add("command", statistics.median(r.seconds for r in runs), "s", 1)
    row.add("L∞", max(o["linf_255"] for o in outs), "/255", 2)
    row.settings = {"photos": len(photos), "eps": outs[0]["eps_label"], "steps": outs[0]["steps"]}
    return row


def _robustness(p: Preset) -> Row:
    n = p.pick(6, 100)
    rows = [(str(f), c) for c in ("Cat", "Dog") for f in _photos(p, c, n)]
    run = p.work / "pets-run"
    tl("train", write_csv(p.work / "pets.csv", rows), "--out", run, cache=p.work / "cache", timeout=900)
    limit, steps = p.pick(("4", "2"), ("64", "10"))
    eps = "0,1/255,2/255"
    out = tl("robustness", run, p.work / "pets.csv", "--split", "val", "--limit", limit, "--steps", steps,
             "--eps", eps, cache=p.work / "cache", timeout=1800).out
    row = Row("transferlab robustness, pgd", f"transferlab {version('transferlab')}",
              f"transferlab robustness RUN DATA --split val --limit {limit} --steps {steps} --eps {eps}")
    for label, acc in zip(out["eps_labels"], out["accuracy"]):
        row.add(f"accuracy at {label}", 100 * acc, "%", 1)
    row.add("per photo", out["seconds_per_image"], "s", 3)
    row.settings = {"images": out["images"], "run": f"efficientnet_lite0 linear on {len(rows)} PetImages photos"}
    return row


def _fgsm_skipped() -> Row:
    row = Row("transferlab attack, fgsm", f"transferlab {version('transferlab')}",
              f"transferlab attack PHOTO --model efficientnet_lite0 --target '{TARGET}' --method fgsm")
    row.status, row.reason = "skipped", "quick preset: the same command as the pgd row, another --method"
    return row


@benchmark("attack", area="attack", title="Adversarial examples: success and time", minutes=1.5)
def attack(p: Preset) -> Result:
    """Targeted PGD/FGSM single-photo attacks (success on the saved PNG) and batched PGD robustness."""
    photos = _photos(p, "Dog", p.pick(1, 4))
    rows = [_single(p, "pgd", photos), _single(p, "fgsm", photos) if not p.quick else _fgsm_skipped()]
    rows.append(_robustness(p))
    return Result(rows, settings={"model": "efficientnet_lite0", "target": TARGET},
                  notes=["attacks run in torch (eager; bf16 where the CPU has it), not onnxruntime"], engine="torch")
