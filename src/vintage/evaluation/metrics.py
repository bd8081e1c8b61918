"""Metrics beyond rmse/mae/r2, a classifier's metrics, and each metric's better direction.

``acc_0.5`` and ``acc_1.0`` are the share of rows whose prediction lies within 0.5 and within 1.0 of the
true grade: the "accuracy with tolerance T" that Cortez et al. (2009) report for the wine-quality data
(see ``vintage/data/wine_quality/README.md``). A row counts when ``|y - prediction| <= T``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Final

from vintage.metrics import holdout_metrics

ACCURACY_TOLERANCES: Final = (0.5, 1.0)
"""The tolerances ``T`` of the ``acc_T`` metrics."""

# Absolute errors within this of T still count: 5.5 predicted for a 5 is "within 0.5" even when the
# float arithmetic that produced 5.5 left it at 5.500000000000001.
ACCURACY_EPS: Final = 1e-9

_MAXIMIZE: Final = frozenset(
    {"r2", "cv_r2", "accuracy", "cv_accuracy", "balanced_accuracy", "cv_balanced_accuracy"}
)
_NOT_QUALITY: Final = ("fit_seconds",)


def accuracy_key(tolerance: float) -> str:
    """The metric name of accuracy within ``tolerance`` (``acc_0.5``)."""
    return f"acc_{tolerance:g}" if tolerance != int(tolerance) else f"acc_{tolerance:.1f}"


ACCURACY_METRICS: Final = tuple(accuracy_key(t) for t in ACCURACY_TOLERANCES)
"""``("acc_0.5", "acc_1.0")``."""

EVALUATION_METRICS: Final = ("rmse", "mae", "r2", *ACCURACY_METRICS)
"""Every holdout metric a trained point gets, in display order."""


def accuracy_within(y_true: Any, y_pred: Any, tolerance: float) -> float:
    """Share of rows (0..1) whose prediction is within ``tolerance`` of the truth.

    Raises:
        ValueError: no rows, or the arrays differ in length.
    """
    import numpy as np

    y = np.asarray(y_true, dtype="float64").reshape(-1)
    pred = np.asarray(y_pred, dtype="float64").reshape(-1)
    if len(y) == 0 or len(y) != len(pred):
        raise ValueError(f"accuracy needs two arrays of equal, non-zero length ({len(y)} and {len(pred)})")
    return float(np.mean(np.abs(y - pred) <= tolerance + ACCURACY_EPS))


def evaluation_metrics(y_true: Any, y_pred: Any) -> dict[str, float]:
    """``rmse``, ``mae``, ``r2`` (:func:`vintage.metrics.holdout_metrics`) and ``acc_0.5``, ``acc_1.0``."""
    out = holdout_metrics(y_true, y_pred)
    for tolerance, key in zip(ACCURACY_TOLERANCES, ACCURACY_METRICS, strict=True):
        out[key] = accuracy_within(y_true, y_pred, tolerance)
    return out


def accuracy_scorers() -> dict[str, Any]:
    """scikit-learn scorers of ``acc_0.5`` and ``acc_1.0`` (for ``cross_validate``; higher is better)."""
    from sklearn.metrics import make_scorer

    return {
        key: make_scorer(accuracy_within, tolerance=tolerance)
        for tolerance, key in zip(ACCURACY_TOLERANCES, ACCURACY_METRICS, strict=True)
    }


CLASSIFIER_METRICS: Final = ("accuracy", "balanced_accuracy")
"""The selectable metrics of a classifier (besides them it gets ``f1_<class>`` per class)."""


def f1_key(label: Any) -> str:
    """The metric name of one class's F1 score: ``f1_5`` (MLflow-safe characters only)."""
    value = label.item() if hasattr(label, "item") else label
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # a grade read as a double: f1_5, not f1_5.0
    text = str(value)
    return "f1_" + "".join(c if c.isalnum() or c in "._-" else "_" for c in text)


def classification_metrics(y_true: Any, y_pred: Any) -> dict[str, float]:
    """``accuracy``, ``balanced_accuracy`` and ``f1_<class>`` for every class in the truth or the
    predictions (scikit-learn's definitions; a class never predicted and never true has no F1).

    Raises:
        ValueError: no rows, or the arrays differ in length.
    """
    import numpy as np
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    y = np.asarray(y_true).reshape(-1)
    pred = np.asarray(y_pred).reshape(-1)
    if len(y) == 0 or len(y) != len(pred):
        raise ValueError(
            f"classification metrics need two arrays of equal, non-zero length ({len(y)}, {len(pred)})"
        )
    labels = np.unique(np.concatenate([y, pred]))
    out = {
        "accuracy": float(accuracy_score(y, pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
    }
    for label, value in zip(
        labels, f1_score(y, pred, labels=labels, average=None, zero_division=0.0), strict=True
    ):
        out[f1_key(label)] = float(value)
    return out


def higher_is_better(metric: str) -> bool | None:
    """``True`` for r2 and accuracies, ``False`` for errors (rmse, mae and their ``cv_`` means), ``None``
    for what has no better direction (a standard deviation across folds, the fit time)."""
    if metric.endswith("_std") or metric in _NOT_QUALITY:
        return None
    return metric in _MAXIMIZE or metric.startswith(("acc_", "cv_acc_", "f1_"))


def best_values(runs: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Each metric's best finite value over ``runs`` (metric dicts), by :func:`higher_is_better`.

    Metrics without a direction are left out; so is a metric no run has a finite value for.
    """
    best: dict[str, float] = {}
    for metrics in runs:
        for key, value in metrics.items():
            higher = higher_is_better(key)
            if higher is None or not math.isfinite(value):
                continue
            seen = best.get(key)
            if seen is None or (value > seen if higher else value < seen):
                best[key] = float(value)
    return dict(sorted(best.items()))
