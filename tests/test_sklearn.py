"""transferlab.sklearn.TransferClassifier on real photos: accuracy, clone, cross_val_score,
GridSearchCV (features extracted once per backbone), Pipeline, bad input, and the checks of
``sklearn.utils.estimator_checks`` that apply to image paths.

scikit-learn's own checks feed numeric arrays (``make_blobs``, iris), which are not image paths;
``check_estimator`` itself runs none of them for an estimator whose tags say it takes strings and
no 2-D array. So each check is in exactly one of three lists (``test_every_check_is_accounted_for``
fails when a new scikit-learn adds a check nobody has classified):

- ``API_CHECKS`` need no data and run as they are;
- ``ADAPTED`` are the same property tested here on image paths (the value names the test);
- ``SKIPPED`` do not apply, with the reason.
"""

from __future__ import annotations

import pickle
from collections import Counter
from functools import partial
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import DataConversionWarning, NotFittedError
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils import estimator_checks as ec
from sklearn.utils.validation import check_is_fitted

import transferlab.sklearn as tsk
from transferlab.errors import DataError, ImageError, OptionError, UnknownBackbone
from transferlab.sklearn import TransferClassifier

API_CHECKS = ["check_estimator_cloneable", "check_estimator_tags_renamed", "check_valid_tag_types",
              "check_estimator_repr", "check_no_attributes_set_in_init", "check_mixin_order",
              "check_do_not_raise_errors_in_init_or_set_params", "check_parameters_default_constructible",
              "check_get_params_invariance", "check_set_params", "check_estimators_unfitted"]
ADAPTED = {
    "check_estimators_fit_returns_self": "test_fit_is_idempotent_and_returns_self",
    "check_fit_idempotent": "test_fit_is_idempotent_and_returns_self",
    "check_fit_check_is_fitted": "test_fit_is_idempotent_and_returns_self",
    "check_estimators_overwrite_params": "test_fit_leaves_parameters_and_predict_leaves_state",
    "check_dont_overwrite_parameters": "test_fit_leaves_parameters_and_predict_leaves_state",
    "check_dict_unchanged": "test_fit_leaves_parameters_and_predict_leaves_state",
    "check_methods_subset_invariance": "test_rows_independent_of_batch_and_order",
    "check_methods_sample_order_invariance": "test_rows_independent_of_batch_and_order",
    "check_classifier_data_not_an_array": "test_rows_independent_of_batch_and_order",
    "check_estimators_pickle": "test_pickle_round_trip",
    "check_classifiers_train": "test_fit_predict_petimages",
    "check_decision_proba_consistency": "test_fit_predict_petimages",
    "check_classifiers_classes": "test_multiclass_oxford_breeds",
    "check_pipeline_consistency": "test_pipeline_with_the_estimator_last",
    "check_supervised_y_2d": "test_column_y_warns_and_fits_the_same",
    "check_fit_score_takes_y": "test_bad_inputs_fail_in_fit_before_any_work",
    "check_requires_y_none": "test_bad_inputs_fail_in_fit_before_any_work",
    "check_classifiers_one_label": "test_bad_inputs_fail_in_fit_before_any_work",
    "check_classifiers_regression_target": "test_bad_inputs_fail_in_fit_before_any_work",
    "check_estimators_empty_data_messages": "test_bad_inputs_fail_in_fit_before_any_work",
    "check_fit1d": "test_bad_inputs_fail_in_fit_before_any_work",
}
NUMERIC = "feeds a numeric array, which is no image path"
SKIPPED = {
    "check_estimators_dtypes": NUMERIC + " (dtypes of numbers)",
    "check_complex_data": NUMERIC + " (complex numbers)",
    "check_dtype_object": NUMERIC + " (numbers as objects; paths are objects here)",
    "check_estimators_nan_inf": NUMERIC + " (NaN/inf have no path equivalent)",
    "check_readonly_memmap_input": NUMERIC + " (a memmap of floats)",
    "check_fit2d_1sample": NUMERIC, "check_fit2d_1feature": NUMERIC, "check_fit2d_predict1d": NUMERIC,
    "check_positive_only_tag_during_fit": NUMERIC, "check_f_contiguous_array_estimator": NUMERIC + " (memory layout)",
    "check_array_api_input": "no array API namespaces: paths are not arrays of numbers",
    "check_n_features_in": "no n_features_in_: X is 1-D (see transferlab.sklearn's docstring)",
    "check_n_features_in_after_fitting": "no n_features_in_: X is 1-D (see transferlab.sklearn's docstring)",
    "check_estimator_sparse_tag": "no sparse input: a path is not a matrix entry",
    "check_estimator_sparse_array": "no sparse input: a path is not a matrix entry",
    "check_estimator_sparse_matrix": "no sparse input: a path is not a matrix entry",
    "check_supervised_y_no_nan": NUMERIC + " (and y=NaN is already a ValueError of sklearn's)",
    "check_classifier_multioutput": "single-output classifier",
    "check_non_transformer_estimators_n_iter": "no max_iter parameter",
    "check_class_weight_classifiers": "no class_weight parameter",
    "check_class_weight_balanced_linear_classifier": "no class_weight parameter",
    "check_sample_weights_pandas_series": "no sample_weight", "check_sample_weights_not_an_array": "no sample_weight",
    "check_sample_weights_list": "no sample_weight", "check_sample_weights_shape": "no sample_weight",
    "check_sample_weights_not_overwritten": "no sample_weight",
    "check_all_zero_sample_weights_error": "no sample_weight",
    "check_classifiers_one_label_sample_weights": "no sample_weight",
    "check_sample_weight_equivalence_on_dense_data": "no sample_weight",
    "check_estimators_partial_fit_n_features": "no partial_fit",
}

PETS = ("Cat", "Dog")


def _pets(root: Path, ids) -> tuple[list[str], np.ndarray]:
    paths = [str(root / c / f"{i}.jpg") for c in PETS for i in ids]
    return paths, np.array([c for c in PETS for _ in ids])


@pytest.fixture(scope="module")
def pets(petimages):
    """40 training photos (ids 0-19 of each class) and 40 test photos (ids 1000-1019)."""
    return _pets(petimages, range(20)), _pets(petimages, range(1000, 1020))


@pytest.fixture(scope="module")
def fitted(pets):
    (xt, yt), _ = pets
    return TransferClassifier().fit(xt, yt)


class Extractions:
    """The real extract_view, wrapped: which paths each backbone was asked for, and how many
    images went through its network (``Features.extracted``)."""

    def __init__(self):
        self.paths: dict[str, Counter] = {}
        self.extracted: Counter = Counter()
        self._real = tsk.extract_view

    def __call__(self, backbone, paths, **kw):
        f = self._real(backbone, paths, **kw)
        self.paths.setdefault(backbone.name, Counter()).update(map(str, paths))
        self.extracted[backbone.name] += f.extracted
        return f


@pytest.fixture
def extractions(monkeypatch):
    tsk.MEMO.clear()
    rec = Extractions()
    monkeypatch.setattr(tsk, "extract_view", rec)
    return rec


def test_fit_predict_petimages(fitted, pets):
    _, (xv, yv) = pets
    assert list(fitted.classes_) == ["Cat", "Dog"] and fitted.feature_dim_ == 1280
    assert not hasattr(fitted, "n_features_in_")
    pred, proba, z = fitted.predict(xv), fitted.predict_proba(xv), fitted.decision_function(xv)
    assert (pred == yv).mean() >= 0.9 and fitted.score(xv, yv) == (pred == yv).mean()
    assert proba.shape == (40, 2) and np.allclose(proba.sum(1), 1)
    assert z.shape == (40,) and (fitted.classes_[(z > 0).astype(int)] == pred).all()
    assert (np.argsort(z) == np.argsort(proba[:, 1])).all()  # decision and proba rank alike


def test_multiclass_oxford_breeds(oxford):
    """Three breeds as string labels: classes_ sorted, one column per class, real accuracy."""
    breeds = ["Bombay", "Persian", "pug"]
    files = {b: sorted((oxford / "images").glob(f"{b}_*.jpg"), key=lambda p: int(p.stem.split("_")[-1]))
             for b in breeds}
    xt = [str(p) for b in breeds for p in files[b][:8]]
    xv = [str(p) for b in breeds for p in files[b][8:13]]
    yt, yv = np.repeat(breeds, 8), np.repeat(breeds, 5)
    m = TransferClassifier().fit(xt, yt)
    assert list(m.classes_) == sorted(breeds)
    assert m.predict_proba(xv).shape == (15, 3) and m.decision_function(xv).shape == (15, 3)
    assert m.score(xv, yv) >= 0.8


def test_clone_round_trip(fitted, pets):
    (xt, yt), (xv, _) = pets
    c = clone(fitted)
    assert c.get_params() == fitted.get_params() and not hasattr(c, "classes_")
    with pytest.raises(NotFittedError):
        c.predict(xv)
    c.set_params(C=0.1)
    assert c.get_params()["C"] == 0.1 and clone(c).C == 0.1
    assert not np.allclose(c.fit(xt, yt).predict_proba(xv), fitted.predict_proba(xv))  # C is used


def test_fit_is_idempotent_and_returns_self(fitted, pets):
    (xt, yt), (xv, _) = pets
    c = clone(fitted)
    with pytest.raises(NotFittedError):
        check_is_fitted(c)
    assert c.fit(xt, yt) is c
    check_is_fitted(c)
    first = c.predict_proba(xv)
    np.testing.assert_array_equal(c.fit(xt, yt).predict_proba(xv), first)
    np.testing.assert_allclose(first, fitted.predict_proba(xv), rtol=1e-6)


def test_fit_leaves_parameters_and_predict_leaves_state(pets):
    (xt, yt), (xv, _) = pets
    m = TransferClassifier(C=2.0, seed=3)
    params, before = joblib.hash(m.get_params()), dict(vars(m))
    m.fit(xt, yt)
    assert joblib.hash(m.get_params()) == params
    new = set(vars(m)) - set(before)
    assert new and all(a.endswith("_") for a in new), new
    state = joblib.hash(vars(m))
    for method in (m.predict, m.predict_proba, m.decision_function):
        method(xv)
        assert joblib.hash(vars(m)) == state, method.__name__


def test_rows_independent_of_batch_and_order(fitted, pets):
    _, (xv, _) = pets
    whole = fitted.predict_proba(xv)
    np.testing.assert_allclose(fitted.predict_proba(xv[5:12]), whole[5:12], rtol=1e-6, atol=1e-8)
    order = np.random.default_rng(0).permutation(len(xv))
    as_paths = np.array([Path(xv[i]) for i in order], dtype=object)  # Path objects, ndarray, column
    np.testing.assert_allclose(fitted.predict_proba(as_paths[:, None]), whole[order], rtol=1e-6)


def test_pickle_round_trip(fitted, pets):
    """joblib workers and sklearn persistence pickle estimators: the fitted state is plain."""
    _, (xv, _) = pets
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(fitted)).predict_proba(xv), fitted.predict_proba(xv))


def test_column_y_warns_and_fits_the_same(fitted, pets):
    (xt, yt), (xv, _) = pets
    with pytest.warns(DataConversionWarning):
        m = clone(fitted).fit(xt, yt[:, None])
    np.testing.assert_allclose(m.predict_proba(xv), fitted.predict_proba(xv), rtol=1e-6)


def test_cross_val_score_reads_each_photo_once(pets, extractions):
    (xt, yt), (xv, yv) = pets
    x, y = xt + xv[:10] + xv[20:30], np.concatenate([yt, yv[:10], yv[20:30]])  # 30 cats, 30 dogs
    scores = cross_val_score(TransferClassifier(), x, y, cv=3)
    assert len(scores) == 3 and scores.min() >= 0.8 and scores.mean() >= 0.9
    assert extractions.paths["efficientnet_lite0"] == Counter(x)  # folds 2 and 3: all from the memo


def test_grid_search_extracts_once_per_backbone(petimages, extractions, tmp_path, monkeypatch):
    """2 backbones x 2 C x 3 folds + the refit = 26 fits; with an empty disk cache each photo
    goes through each backbone's network exactly once."""
    monkeypatch.setenv("TRANSFERLAB_CACHE", str(tmp_path / "cache"))
    x, y = _pets(petimages, range(2000, 2015))
    grid = GridSearchCV(TransferClassifier(), {"backbone": ["efficientnet_lite0", "mobilenet_v2"], "C": [0.1, 1.0]},
                        cv=3).fit(x, y)
    assert len(grid.cv_results_["params"]) == 4 and min(grid.cv_results_["mean_test_score"]) >= 0.8
    for name in ("efficientnet_lite0", "mobilenet_v2"):
        assert extractions.paths[name] == Counter(x) and extractions.extracted[name] == len(x), name
    assert grid.best_estimator_.backbone_ == grid.best_params_["backbone"]


def _under(root: Path, names) -> list[str]:
    return [str(root / n) for n in names]


def test_pipeline_with_the_estimator_last(petimages, pets):
    """Relative names from a CSV resolved by a first step; nested parameters reach the estimator."""
    (xt, yt), (xv, yv) = pets
    rel = [str(Path(p).relative_to(petimages)) for p in xt]
    pipe = make_pipeline(FunctionTransformer(partial(_under, petimages)), TransferClassifier())
    pipe.set_params(transferclassifier__C=0.5).fit(rel, yt)
    assert pipe[-1].C == 0.5 and clone(pipe).get_params()["transferclassifier__C"] == 0.5
    assert pipe.score([str(Path(p).relative_to(petimages)) for p in xv], yv) >= 0.9


def test_unreadable_image_is_named_in_fit_and_predict(fitted, pets, tmp_path):
    (xt, yt), (xv, _) = pets
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    with pytest.raises(ImageError, match=r"broken\.jpg"):
        clone(fitted).fit([*xt[:-1], str(broken)], yt)
    with pytest.raises(ImageError, match=r"1 of 3 images: .*missing\.jpg"):
        fitted.predict([xv[0], str(tmp_path / "missing.jpg"), xv[1]])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.jpg"]  # nothing written beside


def test_bad_inputs_fail_in_fit_before_any_work(pets, extractions):
    (xt, yt), _ = pets
    for bad in ({"C": -1}, {"C": "big"}, {"input_size": 7}, {"seed": -2}, {"backbone": ""}, {"progress": 3}):
        m = TransferClassifier(**bad)  # __init__ and set_params never validate (sklearn convention)
        with pytest.raises(OptionError, match=next(iter(bad))):
            m.fit(xt, yt)
    with pytest.raises(UnknownBackbone):
        TransferClassifier(backbone="no_such_net").fit(xt, yt)
    cases = [(np.zeros((40, 3)), yt, "1-D sequence"), (np.arange(40.0), yt, "image paths"), (xt[0], yt, "single"),
             ([], [], "no image paths"), (xt, yt[:-1], "39 labels"), (xt, None, "needs labels"),
             (xt, np.full(40, "Cat"), "one class")]
    for x, y, msg in cases:
        with pytest.raises(DataError, match=msg):
            TransferClassifier().fit(x, y)
    with pytest.raises(ValueError, match="continuous"):
        TransferClassifier().fit(xt, np.linspace(0, 1, 40))
    assert not extractions.paths  # all refused before a single image was read


@pytest.mark.parametrize("name", API_CHECKS)
def test_sklearn_api_check(name):
    getattr(ec, name)("TransferClassifier", TransferClassifier())


class _AsIfNumeric(TransferClassifier):
    """The estimator with a 2-D-array tag, only so that ``check_estimator`` lists (and tries)
    every check it has for a classifier; the numeric ones fail fast in input validation."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True
        return tags


def test_every_check_is_accounted_for(extractions):
    with pytest.warns(ec.SkipTestWarning, match="Can't test estimator"):  # beyond being cloneable
        own = ec.check_estimator(TransferClassifier(), on_fail=None)
    assert [(r["check_name"], r["status"]) for r in own] == [("check_estimator_cloneable", "passed")]
    results = ec.check_estimator(_AsIfNumeric(), on_fail=None, on_skip=None)
    names = {r["check_name"].split("(")[0] for r in results}
    unlisted = names - set(API_CHECKS) - set(ADAPTED) - set(SKIPPED)
    assert not unlisted, f"classify these checks in tests/test_sklearn.py: {sorted(unlisted)}"
    assert not set(API_CHECKS) & set(ADAPTED) | set(API_CHECKS) & set(SKIPPED) | set(ADAPTED) & set(SKIPPED)
    assert {r["check_name"] for r in results if r["status"] == "passed"} >= set(API_CHECKS)
    assert all(callable(globals().get(test)) for test in ADAPTED.values())
    assert not extractions.paths
