"""A test-only ElasticNet from a module that imports pandas at its top.

tests/support is project code, so the module ships with the model (its ``code/`` folder) and loads wherever
pandas is installed; the model image carries no pandas, so there the model cannot load: the image build's
load check and the container target's start both fail on it.
"""

from __future__ import annotations

import pandas  # noqa: F401 - the point of this module: a package the model image does not hold
from sklearn.linear_model import ElasticNet

CLASS_PATH = "support.pandas_estimator.PandasElasticNet"


class PandasElasticNet(ElasticNet):
    """ElasticNet whose module needs pandas."""
