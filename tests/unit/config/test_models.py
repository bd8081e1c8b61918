"""The spec models on their own: selection defaults, estimator import checks, data defaults."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from vintage.config import DataSpec, EstimatorSpec, SelectionSpec, Spec
from vintage.config.models import estimator_param_names, import_estimator


@pytest.mark.parametrize(
    ("metric", "direction"), [("rmse", "minimize"), ("mae", "minimize"), ("r2", "maximize")]
)
def test_direction_defaults_per_metric(metric: str, direction: str) -> None:
    assert SelectionSpec(metric=metric).direction == direction


def test_explicit_direction_is_kept() -> None:
    assert SelectionSpec(metric="rmse", direction="maximize").direction == "maximize"


@pytest.mark.parametrize("metric", ["rmse", "mae", "r2"])
def test_selection_key_is_metric_without_cv(metric: str) -> None:
    assert SelectionSpec(metric=metric).selection_key == metric


@pytest.mark.parametrize("metric", ["rmse", "mae", "r2"])
def test_selection_key_is_cv_metric_with_cv(metric: str) -> None:
    assert SelectionSpec(metric=metric, cv=5).selection_key == f"cv_{metric}"


def test_meets_threshold_is_strict_for_minimize() -> None:
    sel = SelectionSpec(metric="rmse", threshold=0.8)

    assert sel.meets_threshold(0.79)
    assert not sel.meets_threshold(0.8)
    assert not sel.meets_threshold(0.81)


def test_meets_threshold_is_strict_for_maximize() -> None:
    sel = SelectionSpec(metric="r2", threshold=0.3)

    assert sel.meets_threshold(0.31)
    assert not sel.meets_threshold(0.3)
    assert not sel.meets_threshold(0.29)


def test_meets_threshold_without_threshold_always_true() -> None:
    assert SelectionSpec().meets_threshold(1e9)


def test_data_spec_defaults_to_packaged_red_when_no_source() -> None:
    assert DataSpec().dataset == "red"


def test_data_spec_with_path_has_no_dataset(tmp_path: Path) -> None:
    spec = DataSpec(path=tmp_path / "w.csv")

    assert spec.dataset is None
    assert spec.source_label == "w.csv"


def test_estimator_label_is_name_or_class_name() -> None:
    plain = EstimatorSpec.model_validate({"class": "sklearn.linear_model.Ridge"})
    named = EstimatorSpec.model_validate({"class": "sklearn.linear_model.Ridge", "name": "ridge-a"})

    assert plain.label == "Ridge"
    assert named.label == "ridge-a"


def test_spec_is_frozen() -> None:
    spec = Spec()

    with pytest.raises(ValidationError):
        spec.experiment = "other"  # type: ignore[misc]


def test_import_estimator_returns_the_class() -> None:
    from sklearn.linear_model import ElasticNet

    assert import_estimator("sklearn.linear_model.ElasticNet") is ElasticNet


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("ElasticNet", "is not an import path"),
        ("nosuch_pkg_xyz.Foo", "cannot import module 'nosuch_pkg_xyz'"),
        ("sklearn.linear_model.Nope", "has no attribute 'Nope'"),
        ("sklearn.linear_model.enet_path", "is not a scikit-learn style estimator class"),
    ],
)
def test_import_estimator_rejects_bad_paths_with_value_error(path: str, expected: str) -> None:
    with pytest.raises(ValueError, match=re.escape(expected)):
        import_estimator(path)


def test_estimator_param_names_are_constructor_arguments() -> None:
    from sklearn.linear_model import ElasticNet
    from sklearn.neighbors import KNeighborsRegressor

    assert {"alpha", "l1_ratio", "random_state"} <= estimator_param_names(ElasticNet)
    names = estimator_param_names(KNeighborsRegressor)
    assert "n_neighbors" in names
    assert "random_state" not in names


@pytest.mark.parametrize(
    "ref",
    [
        "${secret:production/serving__primary}",
        "${secret:ci__x/key}",
        "${secret:ci/token_}",
        "${secret:ci-/token}",
        "${secret:ci/to..ken}",
    ],
)
def test_secret_reference_with_a_doubled_separator_is_refused_on_load(ref: str) -> None:
    from vintage.config.models import check_secret_refs

    with pytest.raises(ValueError, match="doubled or trailing"):
        check_secret_refs({"x": [ref]}, "params")


def test_well_formed_secret_references_pass() -> None:
    from vintage.config.models import check_secret_refs

    check_secret_refs("${secret:production/serving/primary} and ${secret:ci/client_secret.v2}", "params")
