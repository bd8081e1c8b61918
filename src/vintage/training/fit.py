"""Fit and evaluate one grid point. Runs in a worker process: scikit-learn only, no MLflow, no I/O.

The train/holdout frames are sent once per worker (``init_worker``), not once per task. The worker also
renders the point's evaluation plots and its coefficients or importances
(:mod:`vintage.evaluation.plots`), so the drawing runs in parallel with the other fits instead of in
the process that logs the runs one after the other.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vintage.config.models import import_estimator
from vintage.errors import first_line
from vintage.evaluation.metrics import evaluation_metrics
from vintage.metrics import METRICS

if TYPE_CHECKING:
    import pandas as pd

    from vintage.training.grid import GridPoint

__all__ = ["METRICS", "FitResult", "fit_point", "init_worker", "score"]


@dataclass
class FitResult:
    """What a worker sends back for one point: metrics and the fitted model, or the error."""

    index: int
    metrics: dict[str, float] = field(default_factory=dict)
    model: Any = None
    effective_params: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    error_detail: str | None = None
    seconds: float = 0.0
    artifacts: dict[str, bytes] = field(default_factory=dict)
    """Evaluation files by name (plots as PNG, coefficients or importances as CSV and PNG)."""
    artifacts_error: str | None = None
    """Why the evaluation files could not be made (the point itself still counts)."""

    @property
    def ok(self) -> bool:
        """True when the point trained and was evaluated."""
        return self.error is None


@dataclass
class _Job:
    train: pd.DataFrame
    test: pd.DataFrame
    features: list[str]
    target: str
    cv: int | None
    seed: int
    group_duplicates: bool = False
    groups: Any = None


_JOB: _Job | None = None


def init_worker(
    train: pd.DataFrame,
    test: pd.DataFrame,
    features: list[str],
    target: str,
    cv: int | None,
    seed: int,
    group_duplicates: bool = False,
) -> None:
    """Process-pool initializer: keep the data in the worker for all its tasks. ``group_duplicates``
    keeps identical training rows in one CV fold (``data.split.group_duplicates``)."""
    global _JOB
    _JOB = _Job(train, test, list(features), target, cv, seed, group_duplicates)


def fit_point(point: GridPoint) -> FitResult:
    """Fit ``point`` on the training part; score the holdout (and K folds when cv is on).

    Never raises for estimator errors: they come back as ``FitResult.error`` so one bad point cannot
    stop the others.
    """
    assert _JOB is not None, "init_worker was not called"
    job = _JOB
    started = time.perf_counter()
    try:
        cls = import_estimator(point.class_path)
        model = cls(**point.params)
        x_train, y_train = job.train[job.features], job.train[job.target]
        model.fit(x_train, y_train)
        y_test = job.test[job.target].to_numpy()
        pred = model.predict(job.test[job.features])
        metrics = score(y_test, pred)
        if job.cv:
            groups = _duplicate_groups(job) if job.group_duplicates else None
            metrics.update(_cross_validate(cls(**point.params), x_train, y_train, job.cv, job.seed, groups))
        params = {k: v for k, v in model.get_params(deep=False).items() if not _is_estimator(v)}
        seconds = time.perf_counter() - started
        result = FitResult(point.index, metrics, model, params, seconds=seconds)
        result.artifacts, result.artifacts_error = evaluation_files(model, job.features, y_test, pred)
        return result
    except Exception as exc:
        headline = f"{exc.__class__.__name__}: {first_line(exc, 500)}"
        return FitResult(
            point.index,
            error=headline[:500],
            error_detail=traceback.format_exc()[-4000:],
            seconds=time.perf_counter() - started,
        )


def score(y_true: Any, y_pred: Any) -> dict[str, float]:
    """Holdout metrics (:func:`vintage.evaluation.metrics.evaluation_metrics`: rmse, mae, r2, acc_0.5,
    acc_1.0). Non-finite predictions are an error, not a metric."""
    import numpy as np

    pred = np.asarray(y_pred, dtype="float64")
    if not np.isfinite(pred).all():
        raise ValueError("the model predicted NaN or infinite values on the holdout")
    return evaluation_metrics(y_true, pred)


def evaluation_files(
    model: Any, features: list[str], y_true: Any, y_pred: Any
) -> tuple[dict[str, bytes], str | None]:
    """The point's evaluation files: the three prediction plots, and the coefficients or feature
    importances as CSV and bar chart when the model has them. A drawing error leaves the files out and
    is returned as text: it never fails the point."""
    from vintage.evaluation import plots

    try:
        files = plots.prediction_plots(y_true, y_pred)
        importance = plots.importance_of(model, features)
        if importance is not None:
            files[importance.csv_name] = importance.to_csv().encode()
            files[importance.png_name] = plots.importance_chart(importance)
    except Exception as exc:
        return {}, f"{exc.__class__.__name__}: {first_line(exc, 300)}"
    return files, None


def _duplicate_groups(job: _Job) -> Any:
    """The training rows' duplicate groups, computed once per worker."""
    if job.groups is None:
        from vintage.data.load import duplicate_groups

        job.groups = duplicate_groups(job.train[[*job.features, job.target]])
    return job.groups


def cv_splitter(folds: int, seed: int, *, grouped: bool) -> Any:
    """The CV folds of ``selection.cv``: ``GroupKFold(shuffle=True)`` over the duplicate groups when
    ``grouped`` (call its ``split`` with ``groups``), else the shuffled ``KFold`` of rows."""
    from sklearn.model_selection import GroupKFold, KFold

    if grouped:
        return GroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    return KFold(n_splits=folds, shuffle=True, random_state=seed)


def _cross_validate(
    model: Any, x: Any, y: Any, folds: int, seed: int, groups: Any = None
) -> dict[str, float]:
    """K-fold CV metrics (``cv_<metric>`` and ``cv_<metric>_std``). With ``groups`` (one id per row),
    ``GroupKFold(shuffle=True)``: rows of one group are never on both sides of a fold; without, the
    shuffled ``KFold`` of rows."""
    import numpy as np
    from sklearn.model_selection import cross_validate

    scoring = {"rmse": "neg_root_mean_squared_error", "mae": "neg_mean_absolute_error", "r2": "r2"}
    cv = cv_splitter(folds, seed, grouped=groups is not None)
    res = cross_validate(model, x, y, cv=cv, groups=groups, scoring=scoring, error_score="raise")
    out: dict[str, float] = {}
    for name in METRICS:
        vals = np.asarray(res[f"test_{name}"], dtype="float64")
        vals = vals if name == "r2" else -vals
        out[f"cv_{name}"] = float(vals.mean())
        out[f"cv_{name}_std"] = float(vals.std())
    return out


def _is_estimator(value: Any) -> bool:
    return hasattr(value, "get_params") and hasattr(value, "fit")
