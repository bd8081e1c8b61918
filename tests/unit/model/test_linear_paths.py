"""The linear fast path's two branches (Python floats for a few rows, NumPy column by column for more) give
every row the same bits as the reference ordered sum, whichever branch and batch it is scored in."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vintage.model.load import SMALL_BATCH_ROWS, LinearParams, _linear_predict

WIDTH = 5
values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),  # the whole range: subnormals, -0.0, 1e308
    st.floats(min_value=-1e3, max_value=1e3, allow_nan=False),
)
coefs = st.lists(st.one_of(st.just(0.0), values), min_size=WIDTH, max_size=WIDTH)


def _reference(params: LinearParams, row: list[float]) -> float:
    total = params.intercept
    for j, c in enumerate(params.coef.tolist()):
        if c != 0.0:
            total = total + c * row[j]
    return total


def _bits(a: np.ndarray) -> list[bytes]:
    return [v.tobytes() for v in np.asarray(a, dtype=np.float64)]


@settings(max_examples=300, deadline=None)
@given(
    coef=coefs,
    intercept=values,
    rows=st.lists(
        st.lists(values, min_size=WIDTH, max_size=WIDTH), min_size=1, max_size=3 * SMALL_BATCH_ROWS
    ),
)
def test_both_branches_give_each_row_the_reference_bits(
    coef: list[float], intercept: float, rows: list[list[float]]
) -> None:
    params = LinearParams("ElasticNet", np.array(coef), intercept)
    predict = _linear_predict(params)
    x = np.array(rows, dtype=np.float64)
    expected = [np.float64(_reference(params, row)) for row in rows]
    with np.errstate(over="ignore", invalid="ignore"):
        whole = predict(x)  # one branch or the other, by len(rows)
        one_by_one = [predict(x[i : i + 1])[0] for i in range(len(rows))]  # always the Python branch
        padded = predict(np.vstack([x] * (SMALL_BATCH_ROWS + 1)))[: len(rows)]  # always NumPy's
    assert _bits(whole) == _bits(np.array(expected))
    assert _bits(np.array(one_by_one)) == _bits(np.array(expected))
    assert _bits(padded) == _bits(np.array(expected))


@pytest.mark.parametrize("n", [1, SMALL_BATCH_ROWS, SMALL_BATCH_ROWS + 1, 100])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_value_is_refused_by_both_branches_even_under_a_zero_coefficient(
    n: int, bad: float
) -> None:
    params = LinearParams("ElasticNet", np.array([1.5, 0.0, -2.0, 0.0, 0.25]), 3.0)
    x = np.ones((n, WIDTH))
    x[n - 1, 1] = bad  # a column the sum never reads
    with pytest.raises(ValueError, match="NaN or infinity"):
        _linear_predict(params)(x)


@pytest.mark.parametrize("n", [1, SMALL_BATCH_ROWS + 1])
def test_an_overflowing_sum_of_finite_values_is_not_an_input_error(n: int) -> None:
    params = LinearParams("ElasticNet", np.array([1.0, 1.0, 0.0, 0.0, 0.0]), 0.0)
    x = np.full((n, WIDTH), 1.5e308)
    with np.errstate(over="ignore"):
        out = _linear_predict(params)(x)
    assert np.isposinf(out).all() and out.shape == (n,)


def test_no_rows_give_no_predictions() -> None:
    params = LinearParams("ElasticNet", np.array([1.0] * WIDTH), 2.0)
    out = _linear_predict(params)(np.empty((0, WIDTH)))
    assert out.shape == (0,) and out.dtype == np.float64
