"""A small JSON request's rows stay Python numbers (parse_batch): the same values, the same refusals and the
same predictions, bit for bit, as the NumPy matrix parse_request gives."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vintage.config import WINE_FEATURES
from vintage.model.load import LinearParams, LoadedModel, ModelInfo, _estimator_predict, _linear_predict
from vintage.serving.payload import SMALL_ROWS, PayloadError, parse_batch, parse_request

COLUMNS = list(WINE_FEATURES)
JSON = "application/json"
W = len(COLUMNS)


def _body(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def _split(rows: list[list[Any]], columns: list[str] = COLUMNS) -> bytes:
    return _body({"dataframe_split": {"columns": columns, "data": rows}})


def _model(linear: bool) -> LoadedModel:
    info = ModelInfo("m", "1", None, None, "sklearn", "cloudpickle", tuple(COLUMNS), ("double",) * W, None)
    params = LinearParams("ElasticNet", np.linspace(-1.5, 2.0, W) * (np.arange(W) % 3 != 1), 3.25)
    if linear:
        return LoadedModel(info, _linear_predict(params), None, params)

    class Squares:  # a non-linear model: its predict takes a matrix
        def predict(self, x: np.ndarray) -> np.ndarray:
            return (x**2).sum(axis=1) - x[:, 0]

    return LoadedModel(info, _estimator_predict(Squares()), None, None)


ROW = [7.4, 0.7, 0, 1.9, 0.076, 11, 34, 0.9978, 3.51, 0.56, 9.4]  # ints too, as clients send them


@pytest.mark.parametrize(
    "body",
    [
        _split([ROW]),
        _split([ROW] * SMALL_ROWS),
        _split([list(reversed(ROW))], list(reversed(COLUMNS))),  # columns in another order
        _body({"dataframe_records": [dict(zip(COLUMNS, ROW, strict=True))] * 3}),
        _body({"inputs": [ROW, ROW]}),
        _body({"instances": [dict(zip(COLUMNS, ROW, strict=True))]}),
    ],
)
def test_small_requests_come_back_as_rows_with_the_matrix_values(body: bytes) -> None:
    rows = parse_batch(body, JSON, COLUMNS, 1000)
    assert isinstance(rows, list)
    matrix = parse_request(body, JSON, COLUMNS, 1000)
    assert matrix.dtype == np.float64 and matrix.shape == (len(rows), W)
    np.testing.assert_array_equal(np.array(rows, dtype=np.float64), matrix)
    assert list(rows[0]) == ROW  # in the model's column order whatever the request's


@pytest.mark.parametrize(
    "body",
    [
        _split([ROW] * (SMALL_ROWS + 1)),  # more rows: NumPy
        _body({"inputs": {c: [v] for c, v in zip(COLUMNS, ROW, strict=True)}}),  # columnar
    ],
)
def test_other_requests_come_back_as_a_matrix(body: bytes) -> None:
    got = parse_batch(body, JSON, COLUMNS, 1000)
    assert isinstance(got, np.ndarray) and got.dtype == np.float64


def test_a_body_only_the_standard_library_reads_is_checked_for_non_finite_values() -> None:
    body = b'{"inputs": [[NaN, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]]}'  # orjson refuses NaN: the fallback reads it
    with pytest.raises(PayloadError) as exc:
        parse_batch(body, JSON, COLUMNS, 1000)
    assert exc.value.status == 400


@pytest.mark.parametrize("value", ["7.4", True, None, [1.0], {"a": 1}])
def test_a_small_request_with_a_non_number_is_refused_as_a_large_one_is(value: Any) -> None:
    messages = []
    for n in (1, SMALL_ROWS + 1):
        bad = [list(ROW) for _ in range(n)]
        bad[0][3] = value
        with pytest.raises(PayloadError) as exc:
            parse_batch(_split(bad), JSON, COLUMNS, 1000)
        assert exc.value.status == 400
        messages.append(exc.value.message)
    assert messages[0] == messages[1]
    assert "residual sugar" in messages[0]


def test_a_short_row_is_refused() -> None:
    with pytest.raises(PayloadError) as exc:
        parse_batch(_split([ROW[:-1]]), JSON, COLUMNS, 1000)
    assert exc.value.status == 400


numbers = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
)


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(st.lists(numbers, min_size=W, max_size=W), min_size=1, max_size=SMALL_ROWS))
@pytest.mark.parametrize("linear", [True, False])
def test_predictions_of_the_rows_equal_the_matrix_predictions_bit_for_bit(
    linear: bool, rows: list[list[float]]
) -> None:
    body = _split(rows)
    small = parse_batch(body, JSON, COLUMNS, 1000)
    assert isinstance(small, list)
    model = _model(linear)
    with np.errstate(over="ignore", invalid="ignore"):
        from_rows = np.asarray(model.predict_rows(small), dtype=np.float64)
        from_matrix = model.predict(parse_request(body, JSON, COLUMNS, 1000))
    assert [v.tobytes() for v in from_rows] == [v.tobytes() for v in from_matrix]


def test_predict_rows_checks_the_row_length() -> None:
    with pytest.raises(ValueError, match="rows of 11 values"):
        _model(True).predict_rows([ROW[:5]])
