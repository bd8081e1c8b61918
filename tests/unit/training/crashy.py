"""A test-only estimator whose ``fit`` can kill its process outright (like a segfault or OOM kill).

Importable as ``unit.training.crashy`` (tests/ is on sys.path via tests/conftest.py). Never fit it with
``crash=True`` in the pytest process itself.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from threadpoolctl import threadpool_info

CLASS_PATH = "unit.training.crashy.CrashyRegressor"


class CrashyRegressor(RegressorMixin, BaseEstimator):
    """Predicts the training mean of ``y`` plus ``offset``; ``fit`` calls ``os._exit(3)`` when ``crash``."""

    def __init__(self, crash: bool = False, offset: float = 0.0) -> None:
        self.crash = crash
        self.offset = offset

    def fit(self, x: Any, y: Any) -> CrashyRegressor:
        if self.crash:
            os._exit(3)
        self.mean_ = float(np.mean(np.asarray(y, dtype="float64")))
        self.fit_pid_ = os.getpid()  # lets tests see which process trained it
        self.native_threads_ = max((p["num_threads"] for p in threadpool_info()), default=0)
        return self

    def predict(self, x: Any) -> np.ndarray:
        return np.full(len(x), self.mean_ + self.offset)
