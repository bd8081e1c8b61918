"""fit_point / init_worker in this process: metrics, determinism, cross-validation, estimator errors."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from vintage.config import DataSpec
from vintage.data import Dataset, load_dataset
from vintage.training.fit import FitResult, fit_point, init_worker, score
from vintage.training.grid import GridPoint

ENET = "sklearn.linear_model.ElasticNet"
KNN = "sklearn.neighbors.KNeighborsRegressor"
TUTORIAL = GridPoint(0, "ElasticNet", ENET, {"alpha": 0.5, "l1_ratio": 0.5, "random_state": 42}, {})


@pytest.fixture(scope="module")
def red() -> Dataset:
    return load_dataset(DataSpec(dataset="red"))


@pytest.fixture(scope="module")
def red_split(red: Dataset) -> tuple[pd.DataFrame, pd.DataFrame]:
    return red.split(0.25, 40, group_duplicates=False)


def init(red: Dataset, split: tuple[pd.DataFrame, pd.DataFrame], cv: int | None = None) -> None:
    train, test = split
    init_worker(train, test, list(red.features), red.target, cv, 40)


def test_tutorial_elasticnet_rmse_on_red_holdout(red: Dataset, red_split: Any) -> None:
    init(red, red_split)

    result = fit_point(TUTORIAL)

    assert result.ok, result.error
    assert result.index == 0
    # The MLflow wine tutorial's published figure for alpha=0.5, l1_ratio=0.5 (seed 40, test 25 %).
    assert result.metrics["rmse"] == pytest.approx(0.7932, abs=5e-4)
    assert set(result.metrics) == {"rmse", "mae", "r2", "acc_0.5", "acc_1.0"}


def test_metrics_match_sklearn_on_the_returned_model(red: Dataset, red_split: Any) -> None:
    from sklearn.metrics import mean_absolute_error, r2_score

    init(red, red_split)
    _, test = red_split

    result = fit_point(TUTORIAL)

    pred = result.model.predict(test[list(red.features)])
    rmse = math.sqrt(float(np.mean((test["quality"].to_numpy() - pred) ** 2)))
    assert result.metrics["rmse"] == pytest.approx(rmse, rel=1e-12)
    assert result.metrics["mae"] == pytest.approx(mean_absolute_error(test["quality"], pred), rel=1e-12)
    assert result.metrics["r2"] == pytest.approx(r2_score(test["quality"], pred), rel=1e-12)


def test_same_inputs_give_identical_metrics(red: Dataset, red_split: Any) -> None:
    init(red, red_split)
    first = fit_point(TUTORIAL)
    init(red, red_split)
    second = fit_point(TUTORIAL)

    assert first.metrics == second.metrics


def test_other_params_give_other_metrics(red: Dataset, red_split: Any) -> None:
    init(red, red_split)
    other = GridPoint(1, "ElasticNet", ENET, {"alpha": 0.1, "l1_ratio": 0.1, "random_state": 42}, {})

    assert fit_point(other).metrics["rmse"] < fit_point(TUTORIAL).metrics["rmse"]


def test_effective_params_are_the_full_constructor_params(red: Dataset, red_split: Any) -> None:
    init(red, red_split)

    result = fit_point(TUTORIAL)

    assert result.effective_params["alpha"] == 0.5
    assert result.effective_params["l1_ratio"] == 0.5
    assert result.effective_params["random_state"] == 42
    assert "max_iter" in result.effective_params  # defaults included, not just the spec's params
    assert result.seconds > 0


def test_cv_adds_cross_validated_metrics_and_std(red: Dataset, red_split: Any) -> None:
    init(red, red_split, cv=3)

    result = fit_point(TUTORIAL)

    assert result.ok, result.error
    assert set(result.metrics) == {
        "rmse",
        "mae",
        "r2",
        "acc_0.5",
        "acc_1.0",
        "cv_rmse",
        "cv_mae",
        "cv_r2",
        "cv_rmse_std",
        "cv_mae_std",
        "cv_r2_std",
        "cv_acc_0.5",
        "cv_acc_1.0",
        "cv_acc_0.5_std",
        "cv_acc_1.0_std",
    }
    for name in ("rmse", "mae"):
        assert result.metrics[f"cv_{name}"] > 0  # errors are reported positive, not sklearn's negated scores
    assert all(result.metrics[f"cv_{n}_std"] >= 0 for n in ("rmse", "mae", "r2"))
    assert result.metrics["cv_rmse"] != result.metrics["rmse"]


def test_cv_accuracy_is_the_mean_of_each_folds_share_within_the_tolerance(
    red: Dataset, red_split: Any
) -> None:
    from sklearn.linear_model import ElasticNet
    from sklearn.model_selection import KFold

    from vintage.evaluation.metrics import accuracy_within

    init(red, red_split, cv=3)
    result = fit_point(TUTORIAL)
    train = red_split[0]
    x, y = train[list(red.features)], train[red.target]
    by_hand = []
    for fit_rows, test_rows in KFold(n_splits=3, shuffle=True, random_state=40).split(x):
        model = ElasticNet(**TUTORIAL.params).fit(x.iloc[fit_rows], y.iloc[fit_rows])
        by_hand.append(accuracy_within(y.iloc[test_rows], model.predict(x.iloc[test_rows]), 0.5))

    assert result.metrics["cv_acc_0.5"] == pytest.approx(float(np.mean(by_hand)), abs=1e-12)
    assert 0 < result.metrics["cv_acc_0.5"] < result.metrics["cv_acc_1.0"] <= 1


def test_cv_does_not_change_holdout_metrics(red: Dataset, red_split: Any) -> None:
    init(red, red_split)
    plain = fit_point(TUTORIAL)
    init(red, red_split, cv=3)
    with_cv = fit_point(TUTORIAL)

    assert {k: with_cv.metrics[k] for k in plain.metrics} == plain.metrics


def test_cv_metrics_are_deterministic(red: Dataset, red_split: Any) -> None:
    init(red, red_split, cv=3)
    first = fit_point(TUTORIAL)
    second = fit_point(TUTORIAL)

    assert first.metrics == second.metrics


def test_estimator_error_comes_back_as_failed_result(red: Dataset, red_split: Any) -> None:
    init(red, red_split)
    n_train = len(red_split[0])
    point = GridPoint(3, "knn", KNN, {"n_neighbors": n_train + 1}, {})

    result = fit_point(point)

    assert isinstance(result, FitResult)
    assert not result.ok
    assert result.index == 3
    assert result.error is not None
    assert result.error.startswith("ValueError: ")
    assert "n_neighbors" in result.error
    assert result.error_detail is not None
    assert "Traceback" in result.error_detail
    assert result.metrics == {}
    assert result.model is None


def test_bad_parameter_value_comes_back_as_failed_result(red: Dataset, red_split: Any) -> None:
    init(red, red_split)

    result = fit_point(GridPoint(0, "ElasticNet", ENET, {"alpha": -1.0}, {}))

    assert not result.ok
    assert result.error is not None
    assert "alpha" in result.error


def test_score_rejects_non_finite_predictions() -> None:
    with pytest.raises(ValueError, match="NaN or infinite"):
        score(np.array([1.0, 2.0]), np.array([1.0, np.nan]))


def test_score_of_perfect_prediction() -> None:
    y = np.array([3.0, 5.0, 7.0])

    assert score(y, y) == {"rmse": 0.0, "mae": 0.0, "r2": 1.0, "acc_0.5": 1.0, "acc_1.0": 1.0}


def test_a_classifier_gets_classification_metrics_and_a_confusion_matrix(
    red: Dataset, red_split: Any
) -> None:
    from sklearn.metrics import accuracy_score

    from vintage.evaluation.plots import CONFUSION_MATRIX, PREDICTED_VS_ACTUAL

    tree = GridPoint(
        0, "tree", "sklearn.tree.DecisionTreeClassifier", {"max_depth": 4, "random_state": 1}, {}
    )
    init(red, red_split, cv=3)
    _, test = red_split

    result = fit_point(tree)

    assert result.ok, result.error
    pred = result.model.predict(test[list(red.features)])
    assert result.metrics["accuracy"] == pytest.approx(accuracy_score(test["quality"], pred), rel=1e-12)
    assert "rmse" not in result.metrics and "acc_0.5" not in result.metrics
    assert {"balanced_accuracy", "f1_5", "f1_6", "cv_accuracy", "cv_balanced_accuracy_std"} <= set(
        result.metrics
    )
    assert CONFUSION_MATRIX in result.artifacts and PREDICTED_VS_ACTUAL not in result.artifacts
    assert "feature_importances.csv" in result.artifacts
