"""Plain linear models: one ordered sum shared by the local engine and the Spark engine's SQL scorer.

The sum ``intercept + c[j1] * x[j1] + c[j2] * x[j2] + ...`` (zero coefficients left out, left to right,
one rounding per operation) is recomputed here with Python floats (IEEE doubles, the same rounding as
Java's and NumPy's), so bit-for-bit equality does not depend on the code under test. The Spark side of
the same claim is tested against a live Spark in tests/integration/test_score_spark.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from vintage.errors import ConfigError, DataError
from vintage.model.load import LoadedModel, load_model_dir
from vintage.scoring.local import _plan, predict_batch
from vintage.scoring.spark_scorers import ARROW, SQL, choose_scorer


@pytest.fixture(scope="module")
def loaded(models: dict[str, Path]) -> dict[str, LoadedModel]:
    return {kind: load_model_dir(path) for kind, path in models.items()}


def _batch(red: pd.DataFrame) -> pa.RecordBatch:
    return pa.RecordBatch.from_pandas(red.drop(columns="quality"), preserve_index=False)


def _python_sum(model: LoadedModel, row: list[float]) -> float:
    assert model.linear is not None
    total = float(model.linear.intercept)
    for j, c in enumerate(model.linear.coef.tolist()):
        if c != 0.0:
            total = total + c * row[j]
    return total


def test_the_elasticnet_has_zero_and_nonzero_coefficients(loaded):
    linear = loaded["elasticnet"].linear
    assert linear is not None
    terms = linear.terms()
    assert 0 < len(terms) < len(linear.coef)  # the zero-skipping below is exercised
    assert [j for j, _ in terms] == sorted(j for j, c in enumerate(linear.coef) if c != 0.0)


def test_linear_predictions_are_the_ordered_sum_bit_for_bit(loaded, red):
    model = loaded["elasticnet"]
    batch = _batch(red)
    plan = _plan(batch.schema, model.info.columns, "red")
    got = predict_batch(model, plan, batch, 0, "red")
    rows = red[list(model.info.columns)].to_numpy().tolist()
    expected = np.array([_python_sum(model, row) for row in rows])
    assert np.array_equal(got, expected)
    # and the estimator's own predict (a matrix product: another summation order) agrees to 1e-12
    x = red[list(model.info.columns)].to_numpy()
    np.testing.assert_allclose(got, x @ model.linear.coef + model.linear.intercept, rtol=1e-12)


def test_a_bad_value_in_a_zero_coefficient_column_is_still_refused(loaded, red):
    model = loaded["elasticnet"]
    assert model.linear is not None
    unused = next(model.info.columns[j] for j, c in enumerate(model.linear.coef) if c == 0.0)
    frame = red.drop(columns="quality").copy()
    frame.loc[[70, 90], unused] = np.nan
    batch = pa.RecordBatch.from_pandas(frame, preserve_index=False)
    plan = _plan(batch.schema, model.info.columns, "red")
    with pytest.raises(DataError) as err:
        predict_batch(model, plan, batch, 1000, "red.csv")
    assert err.value.headline == (
        f"column {unused!r} of red.csv: missing value (empty, NA or NaN) at row 1071"
        " (and 1 more in this chunk)"
    )


def test_the_first_bad_row_wins_then_the_model_column_order(loaded, red):
    model = loaded["elasticnet"]
    columns = model.info.columns
    frame = red.drop(columns="quality").copy()
    frame.loc[40, columns[-1]] = np.inf  # a later column, same row
    frame.loc[40, columns[1]] = -np.inf
    frame.loc[41, columns[0]] = np.nan
    batch = pa.RecordBatch.from_pandas(frame, preserve_index=False)
    with pytest.raises(DataError) as err:
        predict_batch(model, _plan(batch.schema, columns, "t"), batch, 0, "t")
    assert err.value.headline == f"column {columns[1]!r} of t: infinite value at row 41"


def test_choose_scorer(loaded):
    linear, forest = loaded["elasticnet"], loaded["forest"]
    assert choose_scorer("auto", linear) == SQL
    assert choose_scorer("sql", linear) == SQL
    assert choose_scorer("arrow", linear) == ARROW
    assert choose_scorer("auto", forest) == ARROW
    with pytest.raises(ConfigError, match="needs a plain linear model"):
        choose_scorer("sql", forest)
    with pytest.raises(ConfigError, match="unknown Spark scorer"):
        choose_scorer("python", linear)


def test_the_scoring_servers_predict_is_the_same_sum(loaded, red):
    model = loaded["elasticnet"]
    assert model.predictor == "linear"  # the server's NumPy fast path
    x = np.ascontiguousarray(red[list(model.info.columns)].to_numpy(dtype=np.float64))
    batch = _batch(red)
    engine = predict_batch(model, _plan(batch.schema, model.info.columns, "red"), batch, 0, "red")
    assert np.array_equal(model.predict(x), engine)
    assert np.array_equal(model.predict(x[5:6]), engine[5:6])  # one row, as a request sends it
