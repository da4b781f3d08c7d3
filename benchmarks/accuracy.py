"""Accuracy and training time, transferlab's modes and its peers side by side, on the same photos
and the same bundled weights: the Oxford-IIIT Pet subset (official trainval -> official test) and
PetImages (seeded, stratified 80/20).

Every tool gets the same two ``path,label`` CSV files (train, test), written outside the data
folder, so the photos and labels are identical by construction. Every row starts with an empty
feature cache: its training time is the wall time of the whole training command (imports,
feature extraction and, for transferlab, the one-off engine measurement included). The test
photos are read only after training, by each tool's own prediction path.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from . import peers
from .core import BenchError, Preset, Result, Row, benchmark
from .machine import version
from .tools import per_class, tl, write_csv

BACKBONE = "efficientnet_lite2"  # the strongest bundled weights; the peers load the same file


@dataclass(frozen=True)
class Split:
    train: Path
    test: Path
    about: str


@dataclass(frozen=True)
class Spec:
    """One accuracy benchmark at one preset: which photos, which rows, which recipes."""

    rows: tuple[str, ...]  # of ROWS; the others are written as skipped, saying why
    backbone: str = BACKBONE
    size: int | None = None  # every row's input size (None: the weights' own; finetune-best: best_size)
    classes: int | None = None  # the first N classes (sorted names) only
    per_class: int | None = None  # the first N photos of each class only
    ft_default: tuple[str, ...] = ()
    ft_best: tuple[str, ...] = ("--epochs", "6", "--unfreeze", "last:3", "--aug", "randaug", "--wise", "0.5")
    best_size: int = 384  # the best recipe measured on the Oxford subset (BENCHMARKS.md, issue 3)
    auto: tuple[str, ...] = ("--budget", "2m")
    fastai_epochs: int = 3
    fastai_bs: int = 64
    timeout: float = 3600
    why_not: str = ""  # why the rows left out of ``rows`` do not run at this preset


ROWS = ("linear", "head", "finetune", "finetune-best", "auto", "sklearn", "fastai")


def _rows(ds) -> list[tuple[str, str]]:
    return [(p, ds.classes[int(y)]) for p, y in zip(ds.paths, ds.labels)]


def _narrow(rows: list[tuple[str, str]], spec: Spec) -> list[tuple[str, str]]:
    if spec.classes is None and spec.per_class is None:
        return rows
    return per_class(rows, spec.per_class or len(rows), spec.classes)


def oxford_split(p: Preset, spec: Spec) -> Split:
    """The official lists (the test list is read here only to write its CSV, never for training)."""
    import transferlab as tl_api

    root = p.data / "oxford-pets-subset"
    if not root.is_dir():
        raise BenchError(f"Oxford subset not found at {root} (set TRANSFERLAB_BENCH_DATA)")
    train, test = (_narrow(_rows(tl_api.load_dataset(root, split=s)), spec) for s in ("trainval", "test"))
    if p.quick:  # 6 training photos a breed (auto's 5 folds need 5), 2 test photos
        train, test = per_class(train, 6), per_class(test, 2)
    breeds = len({y for _, y in train})
    about = f"Oxford-IIIT Pet subset, official split, {breeds} breeds: {len(train)} trainval -> {len(test)} test photos"
    return Split(write_csv(p.work / "train.csv", train), write_csv(p.work / "test.csv", test), about)


def pets_split(p: Preset, spec: Spec) -> Split:
    """Seeded (0), stratified 80/20 split: the same as transferlab's default validation split."""
    from sklearn.model_selection import train_test_split

    import transferlab as tl_api

    root = p.data / "petimages"
    if not root.is_dir():
        raise BenchError(f"PetImages not found at {root} (set TRANSFERLAB_BENCH_DATA)")
    rows = _narrow(_rows(tl_api.load_dataset(root)), spec)
    train, test = train_test_split(rows, test_size=0.2, random_state=0, stratify=[y for _, y in rows])
    about = f"PetImages, seeded stratified 80/20 of {len(rows)} photos: {len(train)} train -> {len(test)} test"
    return Split(write_csv(p.work / "train.csv", sorted(train)), write_csv(p.work / "test.csv", sorted(test)), about)


# --------------------------------------------------------------------------------------------
# transferlab's rows: one `transferlab train` + one `transferlab evaluate` each
# --------------------------------------------------------------------------------------------
def _tl_version() -> str:
    from .machine import git_commit

    commit = (git_commit()["commit"] or "")[:8]
    return f"transferlab {version('transferlab')}" + (f" ({commit})" if commit else "")


def tl_row(p: Preset, split: Split, tag: str, label: str, args: list[str], timeout: float) -> Row:
    """Train with ``args`` on the train CSV (all of it: --val-fraction 0), score the test CSV."""
    cache, run = p.work / f"cache-{tag}", p.work / f"run-{tag}"
    argv = ["train", split.train, *args, "--val-fraction", "0", "--out", run]
    row = Row(label, _tl_version(), "transferlab train TRAIN " + " ".join([*args, "--val-fraction", "0"]))
    trained = tl(*argv, cache=cache, timeout=timeout)
    scored = tl("evaluate", run, split.test, "--out", p.work / f"eval-{tag}", cache=cache, timeout=timeout)
    row.add("test accuracy", 100 * scored.out["accuracy"], "%")
    row.add("train", trained.seconds, "s", 1).add("test", scored.seconds, "s", 1)
    env = _environment(run)
    row.settings = {"command": ["transferlab", *map(str, argv)], "engine": env.get("engine"),
                    "precision": env.get("precision"), "test_images": scored.out.get("n"),
                    "trainer_seconds": (trained.out or {}).get("seconds")}
    auto = (trained.out or {}).get("auto")
    if auto:
        row.settings["auto_choice"] = auto.get("why")
    return row


def _environment(run: Path) -> dict:
    """What the run recorded about the engine and precision it ran with (config.json)."""
    try:
        return json.loads((run / "config.json").read_text()).get("environment") or {}
    except (OSError, ValueError):
        return {}


def _tl_args(spec: Spec) -> dict[str, tuple[str, list[str]]]:
    """transferlab's rows: label and `train` flags."""
    bb = ["--backbone", spec.backbone]
    size = ["--input-size", str(spec.size)] if spec.size else []
    best = ["--input-size", str(spec.size or spec.best_size)]
    return {"linear": ("transferlab linear", ["--mode", "linear", *bb, *size]),
            "head": ("transferlab head", ["--mode", "head", *bb, *size]),
            "finetune": ("transferlab finetune (defaults)", ["--mode", "finetune", *bb, *size, *spec.ft_default]),
            "finetune-best": ("transferlab finetune (best recipe)", ["--mode", "finetune", *bb, *best, *spec.ft_best]),
            "auto": ("transferlab auto", ["--mode", "auto", *spec.auto])}


def accuracy(p: Preset, split: Split, spec: Spec) -> Result:
    ours = _tl_args(spec)
    rows = []
    for key in ROWS:
        if key in ours:
            label, args = ours[key]
            rows.append(tl_row(p, split, key, label, args, spec.timeout) if key in spec.rows else
                        _skipped(Row(label, _tl_version(), "transferlab train TRAIN " + " ".join(args)), spec))
        else:
            row = (peers.sklearn_row if key == "sklearn" else peers.fastai_row)(split.train, split.test, spec,
                                                                                run=key in spec.rows)
            rows.append(row if key in spec.rows or row.status != "ok" else _skipped(row, spec))
    ran = [r for r in rows if r.tool.startswith("transferlab") and r.status == "ok"]
    notes = [split.about, *_peer_wins(rows)]
    if ran:
        best = max(ran, key=lambda r: r.figures["test accuracy"].value)
        notes.insert(1, f"most accurate transferlab row: {best.tool}")
    engines = {r.settings.get("engine") for r in rows if r.settings.get("engine")}
    precisions = {r.settings.get("precision") for r in rows if r.settings.get("precision")}
    return Result(rows, settings={"data": split.about, "spec": asdict(spec)}, notes=notes,
                  engine="/".join(sorted(engines)) or None, precision="/".join(sorted(precisions)) or None)


def _skipped(row: Row, spec: Spec) -> Row:
    row.status, row.reason = "skipped", spec.why_not or "not run at this preset"
    return row


def _peer_wins(rows: list[Row]) -> list[str]:
    """Mark (in the row's note, shown in the table) where a peer beats every transferlab row on
    accuracy, or trains faster than the fastest one."""
    ours = [r for r in rows if r.tool.startswith("transferlab") and r.status == "ok"]
    out = []
    for r in rows:
        if r in ours or r.status != "ok" or not ours:
            continue
        acc, t = r.figures["test accuracy"].value, r.figures["train"].value
        best = max(o.figures["test accuracy"].value for o in ours)
        fastest = min(ours, key=lambda o: o.figures["train"].value)
        wins = []
        if acc > best:
            wins.append(f"more accurate than every transferlab row (+{acc - best:.2f} points)")
        if t < fastest.figures["train"].value:
            wins.append(f"trains faster than {fastest.tool} ({t:g} vs {fastest.figures['train'].value:g} s)")
        if wins:
            r.note = "beats transferlab: " + "; ".join(wins)
            out.append(f"{r.tool} {r.note}")
    return out


QUICK_NOTE = "quick preset: this row runs in the other accuracy benchmark's quick run"
QUICK = {"backbone": "efficientnet_lite0", "size": 64, "per_class": None, "ft_default": ("--epochs", "1"),
         "ft_best": ("--epochs", "1", "--unfreeze", "last:3", "--aug", "randaug", "--wise", "0.5"),
         "auto": ("--budget", "30s", "--members", "efficientnet_lite0@64"), "fastai_epochs": 1, "fastai_bs": 8,
         "timeout": 300, "why_not": QUICK_NOTE}
LONG_NOTE = "fine-tuning thousands of photos takes hours on a 2-core CPU: run with --long"
OXFORD = {  # quick: 3 breeds; full: the first 10 breeds, all their photos (~19 a breed); long: all 37
    "quick": Spec(rows=("linear", "finetune-best", "sklearn", "fastai"), classes=3, **QUICK),
    "full": Spec(rows=ROWS, classes=10),
    "long": Spec(rows=ROWS, auto=("--budget", "15m")),
}
PETS = {  # quick: 10 photos a class; full: 1,000 a class, without the fine-tuning rows; long: all 5,999
    "quick": Spec(rows=("head", "finetune", "auto"), **{**QUICK, "per_class": 10}),
    "full": Spec(rows=("linear", "head", "auto", "sklearn"), per_class=1000, why_not=LONG_NOTE),
    "long": Spec(rows=ROWS, auto=("--budget", "15m"), fastai_epochs=1),
}


@benchmark("oxford", area="accuracy", title="Accuracy and training time: Oxford-IIIT Pet subset", minutes=14)
def oxford(p: Preset) -> Result:
    """transferlab linear/head/finetune/auto vs a naive scikit-learn probe and fastai, official split."""
    spec = OXFORD[p.name]
    return accuracy(p, oxford_split(p, spec), spec)


@benchmark("petimages", area="accuracy", title="Accuracy and training time: PetImages", minutes=9)
def petimages(p: Preset) -> Result:
    """The same rows on PetImages (cats vs dogs), seeded 80/20."""
    spec = PETS[p.name]
    return accuracy(p, pets_split(p, spec), spec)
