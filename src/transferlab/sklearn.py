"""transferlab as a scikit-learn estimator: image paths in, labels out.

    from sklearn.model_selection import GridSearchCV, cross_val_score
    from transferlab.sklearn import TransferClassifier

    cross_val_score(TransferClassifier(), paths, labels, cv=3)
    grid = {"backbone": ["efficientnet_lite0", "mobilenet_v2"], "C": [0.1, 1.0]}
    GridSearchCV(TransferClassifier(), grid, cv=3).fit(paths, labels).best_params_

:class:`TransferClassifier` is the linear mode of ``transferlab train`` without a run folder: a
frozen pretrained backbone's pooled features into the probe (:func:`transferlab.probe.logreg`,
StandardScaler + LogisticRegression). ``X`` is a 1-D sequence of image paths (str or Path; a
one-column 2-D array is flattened), ``y`` any hashable labels.

Features are shared across folds and grid points at two levels, because a grid search refits one
estimator on overlapping subsets of the same photos many times and only the probe differs:

1. the on-disk feature cache (:func:`~transferlab.features.extract_view` with ``cache=True``),
   per backbone view, precision and file identity (path, size, mtime, inode, ctime). It outlives
   the process, is shared with ``transferlab train`` and with joblib workers (``n_jobs``), and
   means a photo goes through a backbone once, ever.
2. :data:`MEMO`, an in-process LRU of feature rows keyed by (backbone key + precision, file key),
   where the backbone key covers name, weights and input size. A fold's fit and predict, every C
   of a grid and the final refit find their rows here, without opening a shard (a shard holds up
   to 1,024 photos' features and is read whole). It is bounded by ``MEMO.max_bytes`` (default
   512 MiB, about 100,000 rows of Lite0's 1,280 floats; key overhead not counted); evicted rows
   come back from the disk cache. Each process has its own: joblib workers share level 1 only.
   ``MEMO.clear()`` frees it.

No ``n_features_in_``: scikit-learn defines it as the number of columns of a 2-D ``X``, and ``X``
here is 1-D, as raw documents are for ``CountVectorizer``, which sets none either (its checks
skip estimators without a ``two_d_array`` tag). ``feature_dim_`` is the width of the backbone's
features that the probe saw. The scikit-learn checks that apply to image paths are listed, with
those skipped and why, in ``tests/test_sklearn.py``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from os import PathLike, fspath
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d

from .errors import DataError, ImageError
from .features import extract_view, file_keys
from .models.classifier import Backbone
from .models.registry import DEFAULT_BACKBONE, create_backbone
from .options import INPUT_SIZE, NON_NEGATIVE, POSITIVE, Options, Rule, check
from .probe import fit_logreg
from .runtime.device import default_device, precision_tag

MIB = 2**20


class FeatureMemo:
    """Feature rows by (view, file key), least recently used evicted first past ``max_bytes``."""

    def __init__(self, max_bytes: int = 512 * MIB):
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._rows: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, view: str, keys: Sequence[str]) -> list[np.ndarray | None]:
        """The row of each key, None where the memo has none."""
        out = []
        for k in keys:
            row = self._rows.get((view, k))
            if row is not None:
                self._rows.move_to_end((view, k))
            out.append(row)
        return out

    def put(self, view: str, keys: Sequence[str], rows: np.ndarray) -> None:
        for k, row in zip(keys, rows, strict=True):
            if (view, k) not in self._rows:
                # a copy of its own: a view into the batch would keep the whole batch alive
                self._rows[(view, k)] = row = np.array(row, copy=True)
                self.nbytes += row.nbytes
        while self.nbytes > self.max_bytes and self._rows:
            self.nbytes -= self._rows.popitem(last=False)[1].nbytes

    def clear(self) -> None:
        self._rows.clear()
        self.nbytes = 0


MEMO = FeatureMemo()


def view_features(backbone: str, input_size: int | None, paths: list[str], progress=False) -> np.ndarray:
    """[n, d] pooled features of ``paths`` in order: :data:`MEMO`'s rows, the rest through
    :func:`extract_view` (the disk cache, then the network). An unreadable image is an
    :class:`ImageError`: scikit-learn needs one row per input, so none is dropped silently."""
    bb = _backbone(backbone, input_size)
    view = f"{bb.key}-{precision_tag(default_device())}"
    keys = file_keys(paths)
    rows = MEMO.get(view, keys)
    todo = [i for i, row in enumerate(rows) if row is None]
    if todo:
        f = extract_view(bb, [paths[i] for i in todo], cache=True, progress=progress,
                         description=f"features ({bb.name})")
        if f.skipped:
            raise ImageError(_unreadable(f.skipped, len(paths)))
        MEMO.put(view, [keys[i] for i in todo], f.features)
        for i, row in zip(todo, f.features, strict=True):
            rows[i] = row
    return np.stack(rows)


@lru_cache(maxsize=2)
def _backbone(name: str, input_size: int | None) -> Backbone:
    """The backbone of a view, kept for the next call: this module only runs it (never trains or
    converts it), so folds and later predicts share one built network and its feature runner
    instead of each copying the weights again (about a second each). Two: a grid's pair."""
    return create_backbone(name, input_size=input_size)


def _unreadable(skipped: list[tuple[str, str]], n: int) -> str:
    shown = "; ".join(f"{p} ({why})" for p, why in skipped[:3])
    more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
    return (f"cannot read {len(skipped)} of {n} images: {shown}{more}. "
            "Every input needs a feature row: fix or remove these files first")


def _paths(X) -> list[str]:
    """X as a list of path strings: a 1-D sequence (or one column) of str / os.PathLike."""
    if isinstance(X, str | bytes | PathLike):
        raise DataError("X is a single path; give a sequence of image paths (a list or a 1-D array)")
    arr = np.asarray(X, dtype=object)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise DataError(f"X must be a 1-D sequence of image paths, not an array of shape {arr.shape}")
    if not len(arr):
        raise DataError("X holds no image paths")
    for i, p in enumerate(arr):
        if not isinstance(p, str | PathLike):
            raise DataError(f"X must hold image paths (str or Path); X[{i}] is {type(p).__name__} {p!r}")
    return [fspath(p) for p in arr]


def _labels(y, n: int) -> np.ndarray:
    """y as a 1-D array of class labels, one per path (a continuous target is scikit-learn's
    ValueError, as for every classifier)."""
    if y is None:
        raise DataError("fit needs labels y, one per image path")
    y = column_or_1d(y, warn=True)
    if len(y) != n:
        raise DataError(f"X has {n} image paths but y has {len(y)} labels")
    check_classification_targets(y)
    return y


def _backbone_name(param: str, value) -> str:
    check(isinstance(value, str) and bool(value.strip()), param, f"must be a backbone name, not {value!r}")
    return value


def _progress(param: str, value):
    check(value is None or isinstance(value, bool) or callable(value), param,
          f"must be True, False or a bar factory, not {value!r}")
    return value


@dataclass
class _Params(Options):
    """The estimator's parameters as fit validates them (once, there: scikit-learn's convention,
    so that ``set_params`` and ``clone`` never fail and a grid may hold any value until fit)."""

    constraints: ClassVar[dict[str, Rule]] = {"backbone": _backbone_name, "C": POSITIVE, "input_size": INPUT_SIZE,
                                              "seed": NON_NEGATIVE, "progress": _progress}

    backbone: Any
    C: Any
    input_size: Any
    seed: Any
    progress: Any


class TransferClassifier(ClassifierMixin, BaseEstimator):
    """A pretrained backbone's pooled features + the probe, on image paths.

    ``backbone``: a registered name (``efficientnet_lite0``, ``mobilenet_v2``...) or a view
    (``efficientnet_lite2@320``); ``C``: the probe's inverse L2 regularisation; ``input_size``:
    run the backbone at another square size; ``seed``: the solver's; ``progress``: a bar while
    features are extracted (True, False or a bar factory, see :mod:`transferlab.progress`).

    Fitted attributes: ``classes_`` (sorted labels), ``probe_`` (the fitted StandardScaler +
    LogisticRegression pipeline over features), ``feature_dim_``, and ``backbone_`` /
    ``input_size_``, the view the probe was fitted on (predict uses it, not later ``set_params``).
    """

    def __init__(self, backbone: str = DEFAULT_BACKBONE, C: float = 1.0, input_size: int | None = None,
                 seed: int = 0, progress=False):
        self.backbone = backbone
        self.C = C
        self.input_size = input_size
        self.seed = seed
        self.progress = progress

    def __sklearn_tags__(self):
        """Inputs are strings (paths), never a numeric 2-D array, like ``CountVectorizer``'s."""
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        return tags

    def fit(self, X, y):
        """Extract (or look up) the features of ``X`` and fit the probe on them."""
        p = _Params(self.backbone, self.C, self.input_size, self.seed, self.progress).validate()
        paths = _paths(X)
        y = _labels(y, len(paths))
        classes, codes = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise DataError(f"y has one class ({classes[0]!r}); a classifier needs at least two")
        x = view_features(p.backbone, p.input_size, paths, p.progress)
        self.probe_ = fit_logreg(x, codes, p.C, p.seed)
        self.classes_ = classes
        self.feature_dim_ = int(x.shape[1])
        self.backbone_, self.input_size_ = p.backbone, p.input_size
        return self

    def _features(self, X) -> np.ndarray:
        check_is_fitted(self)
        return view_features(self.backbone_, self.input_size_, _paths(X), self.progress)

    def decision_function(self, X) -> np.ndarray:
        """The probe's scores: [n] for two classes (positive = ``classes_[1]``), else [n, k]."""
        x = self._features(X)  # first: it checks that the estimator is fitted
        return self.probe_.decision_function(x)

    def predict_proba(self, X) -> np.ndarray:
        """[n, k] class probabilities, columns in ``classes_`` order."""
        x = self._features(X)  # first: it checks that the estimator is fitted
        return self.probe_.predict_proba(x)

    def predict(self, X) -> np.ndarray:
        """One label of ``classes_`` per path."""
        x = self._features(X)  # first: it checks that the estimator is fitted
        return self.classes_[self.probe_.predict(x)]
