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

from vintage.config.estimators import loggable_params
from vintage.errors import first_line
from vintage.evaluation.metrics import (
    ACCURACY_METRICS,
    CLASSIFIER_METRICS,
    accuracy_scorers,
    classification_metrics,
    evaluation_metrics,
)
from vintage.metrics import METRICS
from vintage.training.code import referenced_modules

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
    example_output: Any = None
    """The model's predictions for the first :data:`EXAMPLE_ROWS` holdout rows (the logged input example),
    so the process that logs the model infers its signature without predicting again."""
    modules: dict[str, str] | None = None
    """Every module a class or function inside the model comes from
    (:func:`vintage.training.code.referenced_modules`), found here rather than in the logging process."""
    model_bytes: bytes | None = None
    """The fitted model serialised here, in the format it is saved in (``training.model_format`` pickle or
    cloudpickle), instead of :attr:`model`: the process that logs it writes these bytes as the model file,
    so a large forest is pickled once, not pickled, sent, unpickled and pickled again."""

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
    serialize: str | None = None
    groups: Any = None


_JOB: _Job | None = None
EXAMPLE_ROWS = 5
"""Rows of the holdout logged as the model's input example."""


def init_worker(
    train: pd.DataFrame,
    test: pd.DataFrame,
    features: list[str],
    target: str,
    cv: int | None,
    seed: int,
    group_duplicates: bool = False,
    serialize: str | None = None,
) -> None:
    """Process-pool initializer: keep the data in the worker for all its tasks. ``group_duplicates``
    keeps identical training rows in one CV fold (``data.split.group_duplicates``); ``serialize``
    (``pickle`` or ``cloudpickle``) sends each fitted model back as :attr:`FitResult.model_bytes`."""
    global _JOB
    _JOB = _Job(train, test, list(features), target, cv, seed, group_duplicates, serialize)


def fit_point(point: GridPoint) -> FitResult:
    """Fit ``point`` on the training part; score the holdout (and K folds when cv is on).

    Never raises for estimator errors: they come back as ``FitResult.error`` so one bad point cannot
    stop the others.
    """
    assert _JOB is not None, "init_worker was not called"
    job = _JOB
    started = time.perf_counter()
    try:
        model = point.build()
        x_train, y_train = job.train[job.features], job.train[job.target]
        model.fit(x_train, y_train)
        y_test = job.test[job.target].to_numpy()
        pred = model.predict(job.test[job.features])
        classifier = is_classifier(model)
        metrics = score(y_test, pred, classifier=classifier)
        if job.cv:
            cross_validate = _cross_validate_classifier if classifier else _cross_validate
            groups = _duplicate_groups(job) if job.group_duplicates else None
            metrics.update(cross_validate(point.build(), x_train, y_train, job.cv, job.seed, groups))
        params = loggable_params(model)
        seconds = time.perf_counter() - started
        result = FitResult(point.index, metrics, model, params, seconds=seconds)
        result.artifacts, result.artifacts_error = evaluation_files(model, job.features, y_test, pred)
        result.example_output = pred[:EXAMPLE_ROWS]
        result.modules = referenced_modules(model)
        if job.serialize:
            result.model_bytes, result.model = serialize_model(model, job.serialize), None
        return result
    except Exception as exc:
        headline = f"{exc.__class__.__name__}: {first_line(exc, 500)}"
        return FitResult(
            point.index,
            error=headline[:500],
            error_detail=traceback.format_exc()[-4000:],
            seconds=time.perf_counter() - started,
        )


SERIALIZED_FORMATS = ("pickle", "cloudpickle")
"""``training.model_format`` values whose model file a worker can write as bytes (skops checks the file
by loading it, in the process that logs it)."""


def serialize_model(model: Any, model_format: str) -> bytes:
    """The model file's bytes, as ``mlflow.sklearn`` writes them for ``model_format`` (pickle or
    cloudpickle, Python's default protocol)."""
    import pickle

    if model_format == "cloudpickle":
        import cloudpickle

        return bytes(cloudpickle.dumps(model, protocol=pickle.DEFAULT_PROTOCOL))
    if model_format == "pickle":
        return pickle.dumps(model, protocol=pickle.DEFAULT_PROTOCOL)
    raise ValueError(f"a worker cannot serialise the {model_format} format")


def is_classifier(model: Any) -> bool:
    """True for a scikit-learn classifier (a Pipeline ending in one too): it is scored as one."""
    from sklearn.base import is_classifier as sklearn_is_classifier

    return bool(sklearn_is_classifier(model))


def score(y_true: Any, y_pred: Any, *, classifier: bool = False) -> dict[str, float]:
    """Holdout metrics: a regressor's (:func:`vintage.evaluation.metrics.evaluation_metrics`: rmse, mae,
    r2, acc_0.5, acc_1.0; non-finite predictions are an error, not a metric), or a classifier's
    (:func:`~vintage.evaluation.metrics.classification_metrics`: accuracy, balanced_accuracy, f1_<class>)."""
    import numpy as np

    if classifier:
        return classification_metrics(y_true, y_pred)
    pred = np.asarray(y_pred, dtype="float64")
    if not np.isfinite(pred).all():
        raise ValueError("the model predicted NaN or infinite values on the holdout")
    return evaluation_metrics(y_true, pred)


def evaluation_files(
    model: Any, features: list[str], y_true: Any, y_pred: Any
) -> tuple[dict[str, bytes], str | None]:
    """The point's evaluation files: the three prediction plots (a classifier: its confusion matrix), and
    the coefficients or feature
    importances as CSV and bar chart when the model has them. A drawing error leaves the files out and
    is returned as text: it never fails the point."""
    from vintage.evaluation import plots

    try:
        if is_classifier(model):
            files = plots.confusion_matrix_plot(y_true, y_pred)
        else:
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
    scoring.update(accuracy_scorers())
    cv = cv_splitter(folds, seed, grouped=groups is not None)
    res = cross_validate(model, x, y, cv=cv, groups=groups, scoring=scoring, error_score="raise")
    out: dict[str, float] = {}
    for name in (*METRICS, *ACCURACY_METRICS):
        vals = np.asarray(res[f"test_{name}"], dtype="float64")
        vals = vals if name == "r2" or name in ACCURACY_METRICS else -vals
        out[f"cv_{name}"] = float(vals.mean())
        out[f"cv_{name}_std"] = float(vals.std())
    return out


def _cross_validate_classifier(
    model: Any, x: Any, y: Any, folds: int, seed: int, groups: Any = None
) -> dict[str, float]:
    """K-fold (stratified, shuffled) accuracy and balanced accuracy of a classifier: ``cv_accuracy``,
    ``cv_balanced_accuracy`` and their ``_std``. With ``groups``, ``StratifiedGroupKFold``: rows of one
    duplicate group are never on both sides of a fold."""
    import numpy as np
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, cross_validate

    cv = (
        StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        if groups is not None
        else StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    )
    res = cross_validate(
        model, x, y, cv=cv, groups=groups, scoring=list(CLASSIFIER_METRICS), error_score="raise"
    )
    out: dict[str, float] = {}
    for name in CLASSIFIER_METRICS:
        vals = np.asarray(res[f"test_{name}"], dtype="float64")
        out[f"cv_{name}"] = float(vals.mean())
        out[f"cv_{name}_std"] = float(vals.std())
    return out
