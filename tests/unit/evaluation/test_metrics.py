"""acc_0.5 / acc_1.0 by hand, and each metric's best value over a grid."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vintage.evaluation.metrics import (
    ACCURACY_METRICS,
    accuracy_within,
    best_values,
    evaluation_metrics,
    higher_is_better,
)


def test_accuracy_within_counts_rows_by_hand() -> None:
    y = [5, 6, 7, 5, 4]
    pred = [5.4, 6.6, 7.0, 3.9, 4.5]  # errors 0.4, 0.6, 0.0, 1.1, 0.5
    assert accuracy_within(y, pred, 0.5) == pytest.approx(3 / 5)  # 0.4, 0.0 and 0.5 (inclusive)
    assert accuracy_within(y, pred, 1.0) == pytest.approx(4 / 5)  # all but 1.1


def test_an_error_of_the_tolerance_counts_despite_float_rounding() -> None:
    rounded_up = float(np.nextafter(5.5, 6.0))  # what a sum meant to be 5.5 can come out as
    assert abs(5.0 - rounded_up) > 0.5
    assert accuracy_within([5.0], [rounded_up], 0.5) == 1.0
    assert accuracy_within([5.0], [5.5 + 1e-6], 0.5) == 0.0


def test_evaluation_metrics_add_the_papers_accuracies_to_rmse_mae_r2() -> None:
    y = np.array([3.0, 5.0, 6.0, 8.0])
    pred = np.array([3.2, 5.9, 6.0, 6.5])  # errors 0.2, 0.9, 0.0, 1.5
    got = evaluation_metrics(y, pred)
    assert (
        list(got) == ["rmse", "mae", "r2", *ACCURACY_METRICS] == ["rmse", "mae", "r2", "acc_0.5", "acc_1.0"]
    )
    assert got["acc_0.5"] == pytest.approx(0.5)
    assert got["acc_1.0"] == pytest.approx(0.75)
    assert got["mae"] == pytest.approx((0.2 + 0.9 + 0.0 + 1.5) / 4)
    assert got["rmse"] == pytest.approx(math.sqrt((0.04 + 0.81 + 0 + 2.25) / 4))


def test_accuracy_refuses_arrays_that_do_not_match() -> None:
    with pytest.raises(ValueError, match="equal, non-zero length"):
        accuracy_within([1.0, 2.0], [1.0], 0.5)
    with pytest.raises(ValueError, match="equal, non-zero length"):
        accuracy_within([], [], 0.5)


def test_directions() -> None:
    assert higher_is_better("r2") and higher_is_better("acc_0.5") and higher_is_better("cv_r2")
    assert higher_is_better("rmse") is False and higher_is_better("cv_mae") is False
    assert higher_is_better("cv_rmse_std") is None and higher_is_better("fit_seconds") is None


def test_best_values_take_each_metric_from_whichever_run_is_best_at_it() -> None:
    runs = [
        {"rmse": 0.70, "r2": 0.30, "acc_0.5": 0.55, "fit_seconds": 0.1, "cv_rmse_std": 0.01},
        {"rmse": 0.65, "r2": 0.28, "acc_0.5": 0.60, "fit_seconds": 3.0},
        {"rmse": math.nan, "r2": 0.35},
    ]
    assert best_values(runs) == {"acc_0.5": 0.60, "r2": 0.35, "rmse": 0.65}
    assert best_values([]) == {}
