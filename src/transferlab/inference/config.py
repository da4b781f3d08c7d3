"""``RunConfig``: the typed ``config.json`` of a run directory, and the only code that reads or
writes that file.

A run directory is the unit of exchange (``config.json`` + ``model.safetensors`` + metrics and
figures), so the file outlives the version that wrote it. It carries ``schema_version``:
transferlab refuses a run written with a newer schema rather than misreading it, and reads every
older one (0.1.0 wrote no version: that is schema 1). The per-mode training record (``train``)
and the data summary (``data``) stay open dicts, because each trainer records its own settings;
everything a consumer needs from them is a property here, so nobody else reads the file by key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path

from .._io import write_json
from ..errors import RunError

SCHEMA_VERSION = 1
CONFIG, WEIGHTS, METRICS = "config.json", "model.safetensors", "metrics.json"


@dataclass
class BackboneRef:
    """Which pretrained network a run stands on: its name, and the digest of the weights it was
    trained with (checked on load, so a run never runs silently on other weights)."""

    name: str
    weights_digest: str | None = None
    source: str | None = None
    weights_path: str | None = None  # --weights PATH given at training time

    def to_dict(self) -> dict:
        d = {"name": self.name, "weights_digest": self.weights_digest, "source": self.source}
        return {**d, **({"weights_path": self.weights_path} if self.weights_path else {})}


@dataclass
class RunConfig:
    """A run's config. ``head`` is the head spec (:func:`transferlab.models.heads.build_head`),
    ``preprocessing`` the backbone's :class:`~transferlab.data.geometry.DataConfig` as a dict."""

    classes: list[str]
    backbone: BackboneRef
    head: dict
    mode: str | None = None
    preprocessing: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    predict: dict | None = None  # {"threshold": p}: the "unsure" cut-off chosen on validation data
    data: dict = field(default_factory=dict)
    environment: dict = field(default_factory=dict)
    calibration: dict | None = None  # {"temperature": T, ...} fitted on held-out data
    transferlab_version: str | None = None
    schema_version: int = SCHEMA_VERSION

    # ------------------------------------------------------------------ reading and writing
    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> RunConfig:
        """Validate a parsed config; :class:`~transferlab.errors.RunError` names what is wrong."""
        if not isinstance(d, dict):
            raise RunError(f"unreadable {source}: not a JSON object")
        version = d.get("schema_version", 1)
        if not isinstance(version, int) or version < 1:
            raise RunError(f"unreadable {source}: schema_version must be a whole number >= 1, not {version!r}")
        if version > SCHEMA_VERSION:
            raise RunError(f"{source} was written by a newer transferlab ({d.get('transferlab_version', '?')}, "
                           f"schema {version}; this one reads up to {SCHEMA_VERSION}): upgrade transferlab")
        try:
            bb, classes, head = d["backbone"], [str(c) for c in d["classes"]], dict(d["head"])
            ref = BackboneRef(name=str(bb["name"]), weights_digest=bb.get("weights_digest"),
                              source=bb.get("source"), weights_path=bb.get("weights_path"))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise RunError(f"unreadable {source}: missing or malformed {e}") from None
        known = {f.name for f in fields(cls)} - {"backbone", "classes", "head", "schema_version"}
        rest = {k: d[k] for k in known if k in d}
        for key in ("preprocessing", "train", "data", "environment"):
            if rest.get(key) is None:
                rest.pop(key, None)
            elif not isinstance(rest[key], dict):
                raise RunError(f"unreadable {source}: '{key}' must be an object")
        cfg = cls(classes=classes, backbone=ref, head=head, schema_version=version, **rest)
        cfg.input_size  # noqa: B018 - validates preprocessing.input_size
        cfg.temperature  # noqa: B018 - validates calibration.temperature
        return cfg

    @classmethod
    def read(cls, run_dir: str | Path) -> RunConfig:
        path = Path(run_dir) / CONFIG
        try:
            d = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise RunError(f"unreadable {path}: {e}") from None
        return cls.from_dict(d, str(path))

    def to_dict(self) -> dict:
        return {"schema_version": self.schema_version, "transferlab_version": self.transferlab_version,
                "mode": self.mode, "classes": list(self.classes), "backbone": self.backbone.to_dict(),
                "preprocessing": self.preprocessing, "head": self.head, "train": self.train,
                "predict": self.predict, "data": self.data, "environment": self.environment,
                "calibration": self.calibration}

    def write(self, run_dir: str | Path) -> Path:
        """``run_dir/config.json``, atomically and durably."""
        return write_json(Path(run_dir) / CONFIG, self.to_dict())

    def __getitem__(self, key: str):
        """``config["train"]``: the dict view 0.1.0 code reads (transferlab itself asks the
        properties below)."""
        return self.to_dict()[key]

    def get(self, key: str, default=None):
        return self.to_dict().get(key, default)

    # ------------------------------------------------------------------ what consumers ask
    @property
    def input_size(self) -> int | None:
        """The input size the run was trained at (None: the backbone's default)."""
        try:
            return int(self.preprocessing.get("input_size") or 0) or None
        except (TypeError, ValueError):
            raise RunError(f"unreadable config: bad preprocessing.input_size "
                           f"{self.preprocessing.get('input_size')!r}") from None

    @property
    def threshold(self) -> float | None:
        """Top-1 probability below which predictions are "unsure" (None: every answer is given)."""
        t = (self.predict or {}).get("threshold")
        return float(t) if t is not None else None

    @property
    def temperature(self) -> float | None:
        """The calibration temperature to divide logits by (None: uncalibrated)."""
        t = (self.calibration or {}).get("temperature")
        if t is None:
            return None
        try:
            t = float(t)
        except (TypeError, ValueError):
            t = -1.0
        if not 0 < t < float("inf"):
            raise RunError("unreadable config: calibration temperature must be a number > 0")
        return t

    @property
    def seed(self) -> int:
        return int(self.train.get("seed", 0))

    @property
    def val_fraction(self) -> float:
        return float(self.train.get("val_fraction", 0.2))

    @property
    def c(self) -> float | None:
        """The probe's regularisation C (linear runs)."""
        c = self.train.get("C")
        return float(c) if c is not None else None

    @property
    def auto(self) -> dict | None:
        """The ``auto`` search's record (leaderboard, why the winner was chosen)."""
        return self.train.get("auto")

    @property
    def interrupted(self) -> bool:
        return bool(self.train.get("interrupted"))

    @property
    def best_epoch(self) -> int | None:
        return self.train.get("best_epoch")

    @property
    def empty_classes(self) -> list[str]:
        return list(self.data.get("empty_classes") or [])

    @property
    def data_root(self) -> str | None:
        return self.data.get("root")

    @property
    def data_format(self) -> str:
        return self.data.get("format") or "auto"

    @property
    def data_split(self) -> str | None:
        return self.data.get("split")
