"""The regression metrics of vintage, in one place: ``rmse``, ``mae`` and ``r2``.

Training (each grid point's holdout metrics), the champion gate (candidate and champion on the same
holdout, with pandas or with Spark aggregates) and anything else that scores a model use these formulas,
so a metric means the same wherever it is computed. ``r2`` follows scikit-learn when the holdout target
is constant (no variance): 1.0 for a perfect prediction, else 0.0.
"""

from __future__ import annotations

import math
from typing import Any, Final

METRICS: Final = ("rmse", "mae", "r2")
"""The metrics every holdout gets, in display order."""


def from_sums(n: float, sse: float, sae: float, sst: float) -> dict[str, float]:
    """The metrics from the sums over ``n`` rows (what a distributed aggregation returns).

    Args:
        n: rows.
        sse: sum of squared errors, ``sum((y - pred) ** 2)``.
        sae: sum of absolute errors, ``sum(abs(y - pred))``.
        sst: total sum of squares, ``sum((y - mean(y)) ** 2)``.
    """
    r2 = (1.0 - sse / sst) if sst else (1.0 if sse == 0 else 0.0)
    return {"rmse": math.sqrt(sse / n), "mae": sae / n, "r2": r2}


def holdout_metrics(y_true: Any, y_pred: Any) -> dict[str, float]:
    """``rmse``, ``mae`` and ``r2`` of predictions ``y_pred`` against ``y_true`` (array-likes)."""
    import numpy as np

    y = np.asarray(y_true, dtype="float64").reshape(-1)
    pred = np.asarray(y_pred, dtype="float64").reshape(-1)
    err = y - pred
    return from_sums(
        len(y),
        float(np.sum(err**2)),
        float(np.sum(np.abs(err))),
        float(np.sum((y - np.mean(y)) ** 2)),
    )
