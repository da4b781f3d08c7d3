"""One typed options object per training mode, validated once, here.

The CLI and the Python API build these the same way (:func:`make_options`): every keyword is
checked against the mode's fields, so a typo or an option of another mode is an error instead of
being dropped. Errors are :class:`OptionError`, which names the parameter; the CLI prints it
with its flag spelling (``--batch-size``), the Python API with the keyword (``batch_size``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from enum import Enum
from pathlib import Path
from typing import ClassVar

from ..options import (
    AT_LEAST_ONE,
    FOLDS,
    FRACTION,
    INPUT_SIZE,
    NON_NEGATIVE,
    POSITIVE,
    Choice,
    Interval,
    OptionError,
    Options,
    Rule,
    check,
)


class Mode(str, Enum):
    """Training modes, in the order the CLI lists them."""

    linear = "linear"
    head = "head"
    finetune = "finetune"
    auto = "auto"


MODES = tuple(m.value for m in Mode)


class Augment(str, Enum):
    none = "none"
    light = "light"
    randaug = "randaug"


class FeatureAug(str, Enum):
    """Feature-level augmentation of the probe: ``flip`` adds the mirrored photos' features as
    training rows and averages each photo's features with its mirror's at prediction."""

    none = "none"
    flip = "flip"


class BatchNorm(str, Enum):
    frozen = "frozen"
    train = "train"


def _budget(param: str, value):
    try:
        parse_budget(value)
    except ValueError as e:
        raise OptionError(param, str(e)) from None
    return value


def _members(param: str, value) -> tuple[str, ...]:
    members = tuple(m.strip() for m in (value.split(",") if isinstance(value, str) else value) if m.strip())
    check(len(members) >= 1, param, "must name at least one backbone")
    return members


def _c_grid(param: str, value) -> tuple[float, ...]:
    check(len(value) >= 1 and all(float(c) > 0 for c in value), param, "must be values > 0")
    return tuple(value)


def _unfreeze(param: str, value):
    parse_unfreeze(value, 1)
    return value


@dataclass
class RunOptions(Options):
    """What every mode shares: which data, which backbone, which split, and whether an
    existing run at ``out`` may be replaced."""

    constraints: ClassVar[dict[str, Rule]] = {"val_fraction": FRACTION, "input_size": INPUT_SIZE, "seed": NON_NEGATIVE}

    backbone: str = "efficientnet_lite0"
    weights: str | Path | None = None
    input_size: int | None = None
    format: str = "auto"
    label: str = "breed"
    split: str | None = None
    val_fraction: float = 0.2
    seed: int = 0
    overwrite: bool = False  # replace an existing run at ``out`` (as a whole, once the new one is complete)


@dataclass
class LinearOptions(Options):
    """Multinomial logistic regression on cached features; ``c`` None = chosen on validation."""

    constraints: ClassVar[dict[str, Rule]] = {
        "c": Interval(float, 0, None, closed="neither", optional=True), "feature_aug": Choice.of(FeatureAug)}

    c: float | None = None
    feature_aug: str = "none"


_SHARED = {"epochs": AT_LEAST_ONE, "batch_size": AT_LEAST_ONE, "lr": POSITIVE, "label_smoothing": FRACTION,
           "patience": AT_LEAST_ONE}


@dataclass
class HeadOptions(Options):
    """MLP head on cached features, AdamW + one-cycle, early stopping on validation loss."""

    epochs: int = 200
    lr: float = 1e-3
    batch_size: int = 64
    # the MLP: features -> hidden (GELU, dropout) -> classes
    hidden: int = 512
    dropout: float = 0.5
    weight_decay: float = 0.05
    patience: int = 20
    label_smoothing: float = 0.1
    feature_aug: str = "none"

    constraints: ClassVar[dict[str, Rule]] = {
        **_SHARED, "feature_aug": Choice.of(FeatureAug), "hidden": AT_LEAST_ONE, "dropout": FRACTION}


@dataclass
class FinetuneOptions(Options):
    """End-to-end fine-tuning (fastai's recipe): head warm-up on cached features, then the
    unfrozen depth groups with discriminative learning rates; see :mod:`transferlab.training.finetune`."""

    # optimisation: AdamW, one-cycle, discriminative rates, gradient clipping (None = off)
    epochs: int = 3
    lr: float = 1e-3
    batch_size: int = 32
    trunk_lr: float = 0.1
    lr_mult: float = 100.0
    clip: float | None = 1.0
    pct_start: float = 0.25
    weight_decay: float = 0.01
    label_smoothing: float = 0.1
    mixup: float = 0.0
    cutmix: float = 0.0
    resume: str | Path | None = None  # a run directory to continue from its last checkpoint
    # what trains, and what the run keeps
    unfreeze: str = "all"
    bn: str = "frozen"
    aug: str = "light"
    head_epochs: int = 100
    patience: int = 3
    device: str | None = None
    wise: float = 1.0
    workers: int | None = None  # DataLoader processes (None: one spare core)

    constraints: ClassVar[dict[str, Rule]] = {
        **_SHARED, "unfreeze": _unfreeze, "aug": Choice.of(Augment), "bn": Choice.of(BatchNorm),
        "mixup": Interval(float, 0, unit="(a Beta(alpha, alpha) parameter)"),
        "cutmix": Interval(float, 0, unit="(a Beta(alpha, alpha) parameter)"),
        "wise": Interval(float, 0, 1, closed="right", unit="(1 = the fine-tuned weights alone)"),
        "head_epochs": NON_NEGATIVE, "workers": Interval(int, 0, optional=True)}

    def recipe(self) -> dict:
        """The settings a resumed run must keep (everything but where and on what it runs)."""
        skip = {"resume", "device", "workers"}
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}


def parse_budget(value) -> float:
    """Seconds from ``15m``, ``90s``, ``1h30m``, ``600`` (seconds) or a number."""
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = str(value).strip().lower()
        parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?", text)
        if not text or not parts:
            raise ValueError(f"give a duration like 15m, 90s or 1h30m, not {value!r}")
        h, m, s = (float(p or 0) for p in parts.groups())
        seconds = 3600 * h + 60 * m + s
    if not seconds > 0:
        raise ValueError(f"the budget must be > 0, not {value!r}")
    return seconds


@dataclass
class AutoOptions(Options):
    """The budgeted search of :mod:`transferlab.training.auto`: ``budget`` (``15m``, ``90s``,
    seconds), ``folds`` of the cross-validation on the training photos, the ``members`` to try
    (``NAME@SIZE``), ensembles of up to ``max_members``, flip augmentation (``flips``) and an MLP
    head (``heads``) on the best features, C from ``c_grid``. ``resume``: a run (or out dir)
    whose search to continue — finished candidates are reused, not scored again."""

    budget: str | float = "15m"
    folds: int = 5
    members: tuple[str, ...] = ("efficientnet_lite0@224", "mobilenet_v2@224", "efficientnet_lite1@240",
                                "efficientnet_lite2@260", "efficientnet_lite2@320", "efficientnet_lite2@384")
    max_members: int = 3
    flips: bool = True
    heads: bool = True
    c_grid: tuple[float, ...] = (0.01, 0.1, 1.0)
    resume: str | Path | None = None

    constraints: ClassVar[dict[str, Rule]] = {
        "budget": _budget, "folds": FOLDS, "max_members": AT_LEAST_ONE, "members": _members,
        "c_grid": _c_grid}


OPTIONS: dict[str, type] = {"linear": LinearOptions, "head": HeadOptions, "finetune": FinetuneOptions,
                            "auto": AutoOptions}


def check_mode(mode) -> str:
    mode = mode.value if isinstance(mode, Enum) else mode
    check(mode in OPTIONS, "mode", f"must be one of {', '.join(MODES)}, not {mode!r}")
    return mode


def mode_of(options) -> str:
    """The mode an options object belongs to."""
    return next(m for m, c in OPTIONS.items() if isinstance(options, c))


def _names(cls) -> set[str]:
    return {f.name for f in fields(cls)}


def make_options(mode: str, given: dict, options=None) -> tuple[RunOptions, object]:
    """(RunOptions, the mode's options) from keywords (None values mean "the default") and an
    optional ready-made options object; unknown or misplaced keywords raise :class:`OptionError`."""
    mode = check_mode(mode)
    cls = OPTIONS[mode]
    given = {k: v for k, v in given.items() if v is not None}
    run_kw = {k: given.pop(k) for k in list(given) if k in _names(RunOptions)}
    for k in given:
        if k not in _names(cls):
            owners = [m for m, c in OPTIONS.items() if k in _names(c)]
            if owners:
                raise OptionError(k, f"applies to {{mode}} {' or '.join(owners)}, not {mode}")
            raise OptionError(k, f"is not an option of {{mode}} {mode} (options: "
                                 f"{', '.join(sorted(_names(cls) | _names(RunOptions)))})")
    if options is not None and not isinstance(options, cls):
        raise OptionError("options", f"must be a {cls.__name__} for {{mode}} {mode}, not {type(options).__name__}")
    opts = replace(options, **given) if options is not None else cls(**given)
    return RunOptions(**run_kw).validate(), opts.validate()


def parse_unfreeze(spec: str, n_groups: int) -> tuple[int, bool]:
    """``all`` | ``last:K`` | ``progressive`` -> (groups unfrozen at the start, progressive?)."""
    spec = (spec or "all").strip().lower()
    if spec == "all":
        return n_groups, False
    if spec == "progressive":
        return 1, True
    m = re.fullmatch(r"last:(\d+)", spec)
    if m and int(m.group(1)) >= 1:
        return min(int(m.group(1)), n_groups), False
    raise OptionError("unfreeze", f"must be all, last:K (K >= 1) or progressive, not '{spec}'")

