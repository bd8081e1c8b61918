"""A test-only ElasticNet that answers NaN for a request of exactly 10 rows — the size of the pipeline's
smoke test — and behaves normally otherwise (training, holdout metrics, warm-up all pass)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.linear_model import ElasticNet

CLASS_PATH = "support.smoke_breaker.NanOnTenRows"


class NanOnTenRows(ElasticNet):
    """ElasticNet whose ``predict`` returns NaN for exactly 10 rows."""

    def predict(self, X: Any) -> np.ndarray:  # noqa: N803 - scikit-learn's argument name
        out = super().predict(X)
        return np.full(len(out), np.nan) if len(out) == 10 else out
