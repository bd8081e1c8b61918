"""A test-only estimator that takes a credential as a parameter, like one calling a feature service.

``fail=True`` makes ``fit`` raise an error quoting the credential (and log it), the way a careless client
library would; the redaction tests check that none of it reaches vintage's output, logs or MLflow store.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin

CLASS_PATH = "support.secret_estimator.TokenRegressor"


class TokenRegressor(RegressorMixin, BaseEstimator):
    """Predicts the training mean; ``fit`` raises with the token in the message when ``fail``."""

    def __init__(self, token: str = "", fail: bool = False) -> None:
        self.token = token
        self.fail = fail

    def fit(self, x: Any, y: Any) -> TokenRegressor:
        if "${secret:" in self.token:
            raise ValueError("the estimator was given an unresolved secret reference")
        logging.getLogger("feature-service").warning("connecting with token %s", self.token)
        if self.fail:
            raise ConnectionError(f"feature service refused token {self.token}")
        self.mean_ = float(np.mean(np.asarray(y, dtype="float64")))
        return self

    def predict(self, x: Any) -> np.ndarray:
        return np.full(len(x), self.mean_)
