"""One set of metric formulas: the same numbers as scikit-learn's, from arrays or from sums."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error

from vintage.metrics import METRICS, from_sums, holdout_metrics
from vintage.training.fit import score


def test_holdout_metrics_equal_scikit_learns() -> None:
    rng = np.random.default_rng(7)
    y = rng.normal(5.6, 0.8, 400)
    pred = y + rng.normal(0, 0.3, 400)
    got = holdout_metrics(y, pred)
    assert tuple(got) == METRICS
    assert got["rmse"] == pytest.approx(root_mean_squared_error(y, pred), rel=1e-12)
    assert got["mae"] == pytest.approx(mean_absolute_error(y, pred), rel=1e-12)
    assert got["r2"] == pytest.approx(r2_score(y, pred), rel=1e-12)
    assert {k: v for k, v in score(y, pred).items() if k in METRICS} == got  # training's holdout metrics


def test_from_sums_gives_what_the_arrays_give() -> None:
    y = np.array([3.0, 5.0, 6.0, 8.0])
    pred = np.array([2.5, 5.5, 6.0, 9.0])
    err = y - pred
    sums = from_sums(4, float(np.sum(err**2)), float(np.sum(np.abs(err))), float(np.var(y) * 4))
    assert sums == pytest.approx(holdout_metrics(y, pred), rel=1e-12)


def test_a_constant_target_gets_r2_like_scikit_learn() -> None:
    y = np.array([6.0, 6.0, 6.0])
    assert holdout_metrics(y, y)["r2"] == r2_score(y, y) == 1.0
    assert holdout_metrics(y, y + 1)["r2"] == r2_score(y, y + 1) == 0.0
