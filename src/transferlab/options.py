"""Options declared once, in the way of scikit-learn's ``_parameter_constraints``.

Every options object (training modes, review, robustness, attacks, dreams, the web app's
settings) is a dataclass deriving from :class:`Options` whose ``constraints`` map each field to a
rule: an :class:`Interval`, a :class:`Choice`, or a callable check. ``validate()`` applies them in
one place and raises :class:`OptionError`, which names the Python keyword (``batch_size``); the
CLI spells it as its flag (``--batch-size``) with :meth:`OptionError.render`. A rule's ``str`` is
its human description, so ``--help`` shows the same range the check enforces.

Written by hand: scikit-learn's own ``Interval``/``StrOptions`` are private API
(``sklearn.utils._param_validation``) and raise messages that name the estimator, not our flags.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from enum import Enum
from typing import Any, ClassVar

from .errors import OptionError

__all__ = ["OptionError"]  # re-exported: options raise it


def check(ok: bool, param: str, problem: str) -> None:
    if not ok:
        raise OptionError(param, problem)


@dataclass(frozen=True)
class Interval:
    """A number in a range. ``closed``: which ends belong to it (both | left | right | neither).
    ``optional``: None is allowed (meaning "the default")."""

    kind: type
    low: float | None = None
    high: float | None = None
    closed: str = "both"
    optional: bool = False
    unit: str = ""

    def __call__(self, param: str, value):
        if value is None and self.optional:
            return None
        try:
            v = self.kind(value)
            ok = math.isfinite(v) and (self.kind is not int or float(value) == v)
        except (TypeError, ValueError, OverflowError):
            ok = False
        check(ok and self._inside(v), param, f"must be {self}, not {value!r}")
        return v

    def contains(self, v) -> bool:
        return self._inside(v)

    def _inside(self, v) -> bool:
        lo_ok = self.low is None or (v >= self.low if self.closed in ("both", "left") else v > self.low)
        hi_ok = self.high is None or (v <= self.high if self.closed in ("both", "right") else v < self.high)
        return lo_ok and hi_ok

    def __str__(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        if self.low is not None and self.high is not None:
            if self.closed == "both" and self.kind is int:
                return f"between {self.low:g} and {self.high:g}{unit}"
            left = "[" if self.closed in ("both", "left") else "("
            right = "]" if self.closed in ("both", "right") else ")"
            return f"in {left}{self.low:g}, {self.high:g}{right}{unit}"
        if self.low is not None:
            return f"{'>=' if self.closed in ('both', 'left') else '>'} {self.low:g}{unit}"
        return f"{'<=' if self.closed in ('both', 'right') else '<'} {self.high:g}{unit}"


@dataclass(frozen=True)
class Choice:
    """One of a fixed set of strings (an Enum's values, or given)."""

    values: tuple[str, ...]
    optional: bool = False

    @classmethod
    def of(cls, enum: type[Enum], optional: bool = False) -> Choice:
        return cls(tuple(e.value for e in enum), optional)

    def __call__(self, param: str, value):
        if value is None and self.optional:
            return None
        value = value.value if isinstance(value, Enum) else value
        check(value in self.values, param, f"must be {self}, not {value!r}")
        return value

    def __str__(self) -> str:
        return f"one of {', '.join(self.values)}"


Rule = Callable[[str, Any], Any]  # (param, value) -> the value to keep; raises OptionError

# Ranges used by more than one options object or by the CLI: defined here, once.
INPUT_SIZE = Interval(int, 32, 1024, optional=True, unit="pixels")
PROBABILITY = Interval(float, 0, 1)
POSITIVE = Interval(float, 0, None, closed="neither")
FRACTION = Interval(float, 0, 1, closed="left")  # [0, 1)
AT_LEAST_ONE = Interval(int, 1)
NON_NEGATIVE = Interval(int, 0)
FOLDS = Interval(int, 2)
PORT = Interval(int, 1, 65535)
UPLOAD_MB = Interval(float, 0, 1024, closed="right", unit="MB")
SIMILARITY = Interval(float, 0, 1, closed="right")


class Options:
    """Base of the options dataclasses: ``constraints`` (field -> rule) checked by :meth:`validate`,
    which returns the object (values normalised by their rules, e.g. Enums to strings)."""

    constraints: ClassVar[dict[str, Rule]] = {}
    error: ClassVar[type[OptionError]] = OptionError  # a subclass, for errors of one component

    def validate(self):
        for name, rule in type(self).constraints.items():
            try:
                object.__setattr__(self, name, rule(name, getattr(self, name)))  # frozen dataclasses too
            except OptionError as e:
                raise type(self).error(e.param, e.problem) from None
        return self

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in fields(cls)}  # type: ignore[arg-type]
