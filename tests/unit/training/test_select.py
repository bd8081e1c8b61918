"""select_best: direction, ties, failed runs, threshold."""

from __future__ import annotations

import math

import pytest

from vintage.config import SelectionSpec
from vintage.errors import SelectionError, TrainingError
from vintage.training.runner import PointRun


def run(index: int, status: str = "FINISHED", **metrics: float) -> PointRun:
    return PointRun(
        index=index,
        run_id=f"run{index}",
        name=f"ElasticNet alpha=0.{index}",
        estimator="sklearn.linear_model.ElasticNet",
        params={"alpha": index / 10},
        status=status,
        metrics=dict(metrics),
    )


def select(runs: list[PointRun], **selection: object) -> PointRun:
    from vintage.training import select_best

    return select_best(runs, SelectionSpec.model_validate(selection))


def test_picks_minimum_rmse() -> None:
    runs = [run(0, rmse=0.79), run(1, rmse=0.71), run(2, rmse=0.74)]

    assert select(runs, metric="rmse").index == 1


def test_picks_minimum_mae() -> None:
    runs = [run(0, rmse=0.7, mae=0.6), run(1, rmse=0.8, mae=0.5)]

    assert select(runs, metric="mae").index == 1


def test_picks_maximum_r2() -> None:
    runs = [run(0, r2=0.11), run(1, r2=0.28), run(2, r2=0.21)]

    assert select(runs, metric="r2").index == 1


def test_explicit_direction_overrides_metric_default() -> None:
    runs = [run(0, rmse=0.79), run(1, rmse=0.71)]

    assert select(runs, metric="rmse", direction="maximize").index == 0


def test_uses_cv_metric_when_cv_is_set() -> None:
    runs = [run(0, rmse=0.70, cv_rmse=0.80), run(1, rmse=0.75, cv_rmse=0.72)]

    assert select(runs, metric="rmse").index == 0
    assert select(runs, metric="rmse", cv=5).index == 1


def test_tie_goes_to_lower_index() -> None:
    runs = [run(0, rmse=0.9), run(1, rmse=0.7), run(2, rmse=0.7), run(3, rmse=0.7)]

    assert select(runs).index == 1


def test_tie_goes_to_lower_index_when_maximizing() -> None:
    runs = [run(0, r2=0.3), run(1, r2=0.3)]

    assert select(runs, metric="r2").index == 0


def test_tie_goes_to_lower_index_whatever_the_list_order() -> None:
    runs = [run(2, rmse=0.7), run(1, rmse=0.7), run(0, rmse=0.9)]

    assert select(runs).index == 1


def test_skips_failed_runs() -> None:
    runs = [run(0, "FAILED", rmse=0.1), run(1, rmse=0.75), run(2, "FAILED")]

    assert select(runs).index == 1


def test_skips_runs_without_a_finite_metric() -> None:
    runs = [run(0, rmse=math.nan), run(1, r2=0.5), run(2, rmse=0.78)]

    assert select(runs).index == 2


def test_threshold_met_returns_best() -> None:
    runs = [run(0, rmse=0.79), run(1, rmse=0.85)]

    assert select(runs, threshold=0.8).index == 0


def test_threshold_not_met_raises_selection_error_with_best_value() -> None:
    runs = [run(0, rmse=0.83), run(1, rmse=0.8123), run(2, rmse=0.9)]

    with pytest.raises(SelectionError) as exc:
        select(runs, threshold=0.8)

    err = exc.value
    assert isinstance(err, TrainingError)
    assert err.exit_code == 1
    assert "rmse < 0.8" in err.headline
    assert "0.8123" in err.headline
    assert runs[1].name in err.headline
    assert "nothing was registered" in err.headline


def test_threshold_is_strict() -> None:
    with pytest.raises(SelectionError):
        select([run(0, rmse=0.8)], threshold=0.8)


def test_threshold_not_met_when_maximizing_mentions_greater_than() -> None:
    with pytest.raises(SelectionError) as exc:
        select([run(0, r2=0.21), run(1, r2=0.28)], metric="r2", threshold=0.5)

    assert "r2 > 0.5" in exc.value.headline
    assert "0.2800" in exc.value.headline


def test_no_finished_runs_raises_selection_error() -> None:
    with pytest.raises(SelectionError) as exc:
        select([run(0, "FAILED"), run(1, "FAILED", rmse=0.5)])

    assert "'rmse'" in exc.value.headline


def test_empty_run_list_raises_selection_error() -> None:
    with pytest.raises(SelectionError):
        select([])


def test_cv_selection_without_cv_metrics_raises_selection_error() -> None:
    with pytest.raises(SelectionError) as exc:
        select([run(0, rmse=0.7)], cv=3)

    assert "'cv_rmse'" in exc.value.headline


# --- choose by CV, gate by holdout --------------------------------------------------------------


def test_cv_choice_is_gated_on_its_holdout_figure_not_its_cv_figure() -> None:
    # the CV figure misses 0.8, the holdout one meets it: registered
    runs = [run(0, rmse=0.79, cv_rmse=0.81), run(1, rmse=0.9, cv_rmse=0.83)]

    assert select(runs, cv=5, threshold=0.8).index == 0


def test_cv_choice_missing_the_threshold_on_the_holdout_raises_and_does_not_fall_back() -> None:
    # run 0 is chosen by CV; its holdout misses 0.8. Run 1 would pass, but choosing it would be choosing
    # on the holdout: nothing is registered.
    runs = [run(0, rmse=0.8123, cv_rmse=0.70), run(1, rmse=0.75, cv_rmse=0.72)]

    with pytest.raises(SelectionError) as exc:
        select(runs, cv=5, threshold=0.8)

    err = exc.value
    assert "misses the threshold rmse < 0.8 on the holdout" in err.headline
    assert runs[0].name in err.headline and "cv_rmse 0.7000" in err.headline
    assert "holdout rmse 0.8123" in err.headline and "nothing was registered" in err.headline
    assert "\n" not in err.headline and err.hint and "selection.threshold" in err.hint


def test_cv_choice_without_a_holdout_figure_is_not_registered() -> None:
    with pytest.raises(SelectionError) as exc:
        select([run(0, cv_rmse=0.6)], cv=5, threshold=0.8)

    assert "holdout rmse nan" in exc.value.headline


def test_cv_choice_without_threshold_needs_no_holdout_check() -> None:
    runs = [run(0, rmse=0.95, cv_rmse=0.70), run(1, rmse=0.60, cv_rmse=0.72)]

    assert select(runs, cv=5).index == 0
