"""parse_request / encode_predictions: every scoring format, every refusal, parity with MLflow."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vintage.config import WINE_FEATURES
from vintage.data.load import read_table
from vintage.serving.payload import PayloadError, encode_predictions, parse_request

REPO = Path(__file__).resolve().parents[3]
RED = REPO / "src" / "vintage" / "data" / "wine_quality" / "winequality-red.csv"
COLUMNS = WINE_FEATURES
JSON = "application/json"
MAX_ROWS = 1000
LONG = "x" * 10_000  # an offending value far longer than any error may echo
CLIP = 200


# --- helpers ---------------------------------------------------------------------------------------


def dumps(doc: Any) -> bytes:
    """A JSON body the way a Python client sends it (stdlib: NaN, Infinity and big ints allowed)."""
    return json.dumps(doc).encode()


def parse(body: bytes | Any, content_type: str | None = JSON, max_rows: int = MAX_ROWS) -> np.ndarray:
    raw = body if isinstance(body, bytes) else dumps(body)
    return parse_request(raw, content_type, COLUMNS, max_rows)


def refusal(body: bytes | Any, content_type: str | None = JSON, max_rows: int = MAX_ROWS) -> PayloadError:
    with pytest.raises(PayloadError) as exc:
        parse(body, content_type, max_rows)
    return exc.value


def assert_short(err: PayloadError, body: bytes | Any) -> None:
    """The error JSON holds no more than CLIP chars of LONG and never the body itself."""
    out = err.to_json()
    raw = body if isinstance(body, bytes) else dumps(body)
    assert LONG[: CLIP + 1].encode() not in out
    assert raw not in out
    assert len(out) < 3000
    assert orjson.loads(out)["error"]["code"] == err.code


def split_body(frame: pd.DataFrame) -> dict[str, Any]:
    return {"dataframe_split": {"columns": list(frame.columns), "data": frame.to_numpy().tolist()}}


def bare_split(frame: pd.DataFrame) -> dict[str, Any]:
    return {"columns": list(frame.columns), "data": frame.to_numpy().tolist()}


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [dict(zip(frame.columns, row, strict=True)) for row in frame.to_numpy().tolist()]


def csv_body(frame: pd.DataFrame) -> bytes:
    header = ",".join(f'"{c}"' if " " in c else c for c in frame.columns)
    lines = [",".join(repr(v) for v in row) for row in frame.to_numpy().tolist()]
    return "\n".join([header, *lines, ""]).encode()


BUILDERS: dict[str, Callable[[pd.DataFrame], bytes | Any]] = {
    "dataframe_split": split_body,
    "dataframe_split_with_index": lambda f: {
        "dataframe_split": {**split_body(f)["dataframe_split"], "index": list(range(len(f)))}
    },
    "pandas_to_json_split": lambda f: b'{"dataframe_split": ' + f.to_json(orient="split").encode() + b"}",
    "to_dict_split": lambda f: json.dumps({"dataframe_split": f.to_dict(orient="split")}).encode(),
    "dataframe_records": lambda f: {"dataframe_records": records(f)},
    "instances_records": lambda f: {"instances": records(f)},
    "instances_rows": lambda f: {"instances": f[list(COLUMNS)].to_numpy().tolist()},
    "inputs_records": lambda f: {"inputs": records(f)},
    "inputs_rows": lambda f: {"inputs": f[list(COLUMNS)].to_numpy().tolist()},
    "inputs_columnar": lambda f: {"inputs": {c: f[c].tolist() for c in f.columns}},
    "instances_columnar": lambda f: {"instances": {c: f[c].tolist() for c in f.columns}},
    "bare_split": bare_split,
    "bare_split_pandas_orient": lambda f: f.to_json(orient="split").encode(),
    "csv": csv_body,
}
CSV_FORMATS = {"csv"}


def body_for(fmt: str, frame: pd.DataFrame) -> tuple[bytes | Any, str]:
    return BUILDERS[fmt](frame), ("text/csv" if fmt in CSV_FORMATS else JSON)


@pytest.fixture(scope="module")
def wine() -> pd.DataFrame:
    frame = read_table(RED)
    assert tuple(frame.columns[:11]) == COLUMNS
    return frame[list(COLUMNS)].iloc[:25].astype(float)


# --- every format, same rows, same matrix ----------------------------------------------------------


@pytest.mark.parametrize("fmt", sorted(BUILDERS))
def test_every_format_gives_the_same_matrix(fmt: str, wine: pd.DataFrame) -> None:
    body, content_type = body_for(fmt, wine)
    got = parse(body, content_type)
    assert got.dtype == np.float64
    assert got.shape == (25, 11)
    np.testing.assert_array_equal(got, wine.to_numpy())


@pytest.mark.parametrize("fmt", sorted(f for f in BUILDERS if not f.endswith("_rows")))
def test_request_columns_in_another_order_are_reordered(fmt: str, wine: pd.DataFrame) -> None:
    shuffled = wine[list(reversed(COLUMNS))]
    body, content_type = body_for(fmt, shuffled)
    np.testing.assert_array_equal(parse(body, content_type), wine.to_numpy())


def test_one_row_as_an_object_of_scalars(wine: pd.DataFrame) -> None:
    row = {c: float(wine[c].iloc[3]) for c in reversed(COLUMNS)}
    np.testing.assert_array_equal(parse({"inputs": row}), wine.to_numpy()[3:4])


def test_integers_are_floats() -> None:
    got = parse({"instances": [list(range(11)), [2**63 - 1] * 11, [2**64 - 1] * 11, [10**30] * 11]})
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got[0], np.arange(11.0))
    assert got[1, 0] == float(2**63 - 1)
    assert got[2, 0] == float(2**64 - 1)
    assert got[3, 0] == 1e30


def test_the_result_is_c_contiguous_float64(wine: pd.DataFrame) -> None:
    for fmt in ("inputs_columnar", "dataframe_split"):
        body, content_type = body_for(fmt, wine[list(reversed(COLUMNS))])
        got = parse(body, content_type)
        assert got.flags.c_contiguous
        assert got.dtype == np.float64


# --- parity with what MLflow clients send and what MLflow's server parses --------------------------


def test_the_body_an_mlflow_client_builds(wine: pd.DataFrame) -> None:
    from mlflow.models import convert_input_example_to_serving_input

    body = convert_input_example_to_serving_input(wine)
    assert body is not None
    np.testing.assert_array_equal(parse(body.encode()), wine.to_numpy())


@pytest.mark.parametrize(
    "fmt", ["dataframe_split", "to_dict_split", "dataframe_records", "instances_rows", "inputs_columnar"]
)
def test_same_matrix_as_mlflow_scoring_server(fmt: str, wine: pd.DataFrame) -> None:
    from mlflow.pyfunc.scoring_server import infer_and_parse_data

    shuffled = wine[list(reversed(COLUMNS))] if fmt != "instances_rows" else wine
    body, _ = body_for(fmt, shuffled)
    raw = body if isinstance(body, bytes) else dumps(body)
    theirs = infer_and_parse_data(json.loads(raw))
    if isinstance(theirs, dict):
        theirs = pd.DataFrame(theirs)
    if isinstance(theirs, pd.DataFrame):
        theirs = theirs[list(COLUMNS)].to_numpy(dtype=float)
    np.testing.assert_array_equal(parse(raw), np.asarray(theirs, dtype=float))


@pytest.mark.parametrize(
    "pred",
    [
        np.array([5.1, 6.0, 4.333333333333333, 1e16, 0.1 + 0.2, -0.0, 5e-324]),
        np.array([5, 6, 7]),
        np.array([[0.2, 0.8], [0.5, 0.5]]),
        np.array([1.1, 2.2], dtype=np.float32),
        np.array([5.5]),
    ],
)
def test_predictions_parse_to_what_mlflow_returns(pred: np.ndarray) -> None:
    from mlflow.pyfunc.scoring_server import predictions_to_json

    class Sink:
        text = ""

        def write(self, s: str) -> None:
            self.text += s

    sink = Sink()
    predictions_to_json(pred, sink)
    ours = orjson.loads(encode_predictions(pred))
    assert ours == json.loads(sink.text)
    assert list(ours) == ["predictions"]


def test_prediction_floats_round_trip_exactly() -> None:
    pred = np.random.default_rng(0).normal(size=1000) * 10.0 ** np.arange(-500, 500, dtype=float).clip(
        -300, 300
    )
    back = np.array(orjson.loads(encode_predictions(pred))["predictions"])
    np.testing.assert_array_equal(back, pred)


def test_non_finite_predictions_become_null() -> None:
    assert encode_predictions(np.array([1.0, np.nan, np.inf])) == b'{"predictions":[1.0,null,null]}'


# --- content types ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
        "APPLICATION/JSON;charset=UTF-8",
    ],
)
def test_json_content_types(content_type: str | None, wine: pd.DataFrame) -> None:
    np.testing.assert_array_equal(parse(split_body(wine), content_type), wine.to_numpy())


@pytest.mark.parametrize(
    "content_type", ["text/csv", "text/csv; charset=utf-8", "TEXT/CSV", "Text/Csv ; header=present"]
)
def test_csv_content_types(content_type: str, wine: pd.DataFrame) -> None:
    np.testing.assert_array_equal(parse(csv_body(wine), content_type), wine.to_numpy())


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        "text/json",
    ],
)
def test_unsupported_content_type_is_415(content_type: str, wine: pd.DataFrame) -> None:
    err = refusal(split_body(wine), content_type)
    assert (err.status, err.code) == (415, "unsupported_media_type")
    assert content_type.split(";")[0] in err.message


@pytest.mark.parametrize("content_type", [None, "", "  ", "; charset=utf-8"])
@pytest.mark.parametrize("fmt", ["dataframe_split", "csv"])
def test_no_content_type_is_415(content_type: str | None, fmt: str, wine: pd.DataFrame) -> None:
    """A request without a media type is refused like any other, not guessed to be JSON."""
    body, _ = body_for(fmt, wine)
    err = refusal(body, content_type)
    assert (err.status, err.code) == (415, "unsupported_media_type")
    assert "no content type" in err.message
    assert "application/json" in err.message
    assert "text/csv" in err.message


def test_long_content_type_is_clipped(wine: pd.DataFrame) -> None:
    err = refusal(split_body(wine), "text/" + LONG)
    assert err.status == 415
    assert_short(err, split_body(wine))


# --- CSV -------------------------------------------------------------------------------------------


def test_csv_quoted_header_crlf_and_bom(wine: pd.DataFrame) -> None:
    text = csv_body(wine).decode().replace("\n", "\r\n")
    assert '"fixed acidity"' in text
    np.testing.assert_array_equal(parse(("\ufeff" + text).encode(), "text/csv"), wine.to_numpy())


def test_csv_written_by_pandas(wine: pd.DataFrame) -> None:
    body = wine[list(reversed(COLUMNS))].to_csv(index=False).encode()
    np.testing.assert_array_equal(parse(body, "text/csv"), wine.to_numpy())


def test_csv_quoted_numbers_and_blank_lines(wine: pd.DataFrame) -> None:
    header = ",".join(f'"{c}"' for c in COLUMNS)
    row = ",".join(f'"{v!r}"' for v in wine.to_numpy()[0].tolist())
    got = parse(f"{header}\n{row}\n\n{row}\n".encode(), "text/csv")
    np.testing.assert_array_equal(got, wine.to_numpy()[[0, 0]])


def test_csv_with_a_pandas_index_column_is_refused(wine: pd.DataFrame) -> None:
    err = refusal(wine.to_csv().encode(), "text/csv")
    assert (err.status, err.code) == (400, "unknown_columns")


@pytest.mark.parametrize(
    ("cell", "code"),
    [("nan", "not_finite"), ("inf", "not_finite"), ("-Infinity", "not_finite"), ("1e999", "not_finite"),
     ("", "missing_value"), ("  ", "missing_value"), ("abc", "non_numeric"), ("true", "non_numeric"),
     ("1.5.2", "non_numeric"), (LONG, "non_numeric"),
     # Python's float() reads all of these; a CSV number is plain ASCII decimal/scientific notation
     ("1_000", "non_numeric"), ("0x10", "non_numeric"), ("1e1_0", "non_numeric"), ("\u0661", "non_numeric"),
     ("\uff11", "non_numeric"), ("\u00a01", "non_numeric"), ("1 000", "non_numeric"), ("1e", "non_numeric"),
     ("NaN", "not_finite"), ("+inf", "not_finite"), ("infinity", "not_finite"), ("-INF", "not_finite")],
)  # fmt: skip
def test_csv_bad_cells(cell: str, code: str, wine: pd.DataFrame) -> None:
    lines = csv_body(wine).decode().splitlines()
    fields = lines[4].split(",")
    fields[8] = cell  # pH, data row 3
    lines[4] = ",".join(fields)
    body = "\n".join(lines).encode()
    err = refusal(body, "text/csv")
    assert (err.status, err.code) == (400, code)
    assert "'pH'" in err.message
    assert "row 3" in err.message
    assert_short(err, body)


@pytest.mark.parametrize(
    ("cell", "value"),
    [("1", 1.0), (" 2.5 ", 2.5), ("\t-3e2", -300.0), ("+4", 4.0), (".5", 0.5), ("5.", 5.0), ("1E+05", 1e5),
     ("007", 7.0), ("-0", -0.0), ("1.e2", 100.0)],
)  # fmt: skip
def test_csv_plain_numbers(cell: str, value: float, wine: pd.DataFrame) -> None:
    lines = csv_body(wine).decode().splitlines()
    fields = lines[1].split(",")
    fields[0] = cell
    lines[1] = ",".join(fields)
    got = parse("\n".join(lines).encode(), "text/csv")
    assert got[0, 0] == value
    np.testing.assert_array_equal(got[1:], wine.to_numpy()[1:])


def _plain_float(text: str) -> float | None:
    """The test's oracle: float() of a cell made only of the characters of plain numbers, else None."""
    if not text or not set(text) <= set("0123456789+-.eE"):
        return None
    try:
        return float(text)
    except ValueError:
        return None


CELL_TEXT = st.text(alphabet="0123456789+-.eE_xXnaifNIty \t\u0661\uff11\u00a0", max_size=8)


@settings(max_examples=500, deadline=None)
@given(
    cell=CELL_TEXT | st.from_regex(r"[+-]?[0-9]{1,5}(\.[0-9]{0,3})?([eE][+-]?[0-9]{1,4})?", fullmatch=True)
)
def test_fuzz_csv_cell_grammar(cell: str) -> None:
    """A cell is a number exactly when it is a plain number (spaces or tabs around); both CSV paths agree."""
    header = ",".join(f'"{c}"' for c in COLUMNS)
    rest = ",".join(["1.0"] * 10)
    text = cell.strip(" \t")
    expected = _plain_float(text)
    for second in ("1.0," + rest, '"1.0",' + rest):  # the second row's quotes force the diagnostic pass
        body = f"{header}\n{cell},{rest}\n{second}\n".encode()
        if expected is not None and math.isfinite(expected):
            assert parse(body, "text/csv")[0, 0] == expected
            continue
        err = refusal(body, "text/csv")
        if not text:
            assert err.code == "missing_value"
        elif expected is not None or text.lower().lstrip("+-") in ("nan", "inf", "infinity"):
            assert err.code == "not_finite"
        else:
            assert err.code == "non_numeric"
        assert "'fixed acidity', row 0" in err.message


def test_csv_ragged_row_and_not_utf8(wine: pd.DataFrame) -> None:
    body = csv_body(wine) + b"1,2,3\n"
    err = refusal(body, "text/csv")
    assert (err.code, err.status) == ("bad_format", 400)
    assert "row 25" in err.message
    err = refusal(b"a,b\n\xff\xfe,1\n", "text/csv")
    assert (err.code, err.status) == ("bad_format", 400)


@pytest.mark.parametrize(
    "body", [b"", b"\n\n", ",".join(COLUMNS).encode(), ",".join(COLUMNS).encode() + b"\n\n"]
)
def test_csv_without_rows_is_empty(body: bytes) -> None:
    assert refusal(body, "text/csv").code == "empty"


def test_csv_unreadable_quoting_is_bad_format() -> None:
    body = ('"' + "a" * 200_000 + '"\n1\n').encode()
    err = refusal(body, "text/csv")
    assert err.code == "bad_format"
    assert_short(err, body)


# --- refusals: codes, statuses, what the message names ---------------------------------------------


def test_invalid_json_and_not_utf8(wine: pd.DataFrame) -> None:
    for body in (b"{", b"", b"dataframe_split", b'{"a": 1} trailing', b"\xff\xfe{}", b"{'a': 1}"):
        err = refusal(body)
        assert (err.status, err.code) == (400, "invalid_json"), body
    body = b'{"dataframe_split": ' + LONG.encode()
    err = refusal(body)
    assert err.code == "invalid_json"
    assert_short(err, body)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ([1, 2, 3], "JSON object"),
        ("text", "JSON object"),
        (None, "JSON object"),
        ({}, "dataframe_split"),
        ({"data": [[1]]}, "dataframe_records"),
        (
            {"dataframe_split": {"columns": list(COLUMNS), "data": [[1.0] * 11]}, "instances": [[1.0] * 11]},
            "several",
        ),
        ({"dataframe_split": {"columns": list(COLUMNS), "data": [[1.0] * 11]}, "params": {}}, "'params'"),
        ({"dataframe_split": [[1.0] * 11]}, "dataframe_split must be an object"),
        ({"dataframe_split": {"data": [[1.0] * 11]}}, "'columns'"),
        ({"dataframe_split": {"columns": list(COLUMNS), "data": "x"}}, "'data'"),
        ({"dataframe_split": {"columns": list(COLUMNS), "data": [[1.0] * 11], "dtype": "x"}}, "'dtype'"),
        ({"dataframe_split": {"columns": list(COLUMNS), "data": [1.0] * 11}}, "row 0"),
        (
            {"dataframe_split": {"columns": list(COLUMNS), "data": [[1.0] * 11, [1.0] * 10]}},
            "row 1 has 10 values",
        ),
        ({"dataframe_split": {"columns": [*COLUMNS[:10], 7], "data": [[1.0] * 11]}}, "strings"),
        ({"dataframe_split": {"columns": [*COLUMNS[:10], ["pH"]], "data": [[1.0] * 11]}}, "strings"),
        ({"dataframe_split": {"columns": [*COLUMNS, "pH"], "data": [[1.0] * 12]}}, "duplicate"),
        ({"dataframe_records": {"pH": 1}}, "list of records"),
        ({"dataframe_records": [[1.0] * 11]}, "record 0"),
        ({"dataframe_records": [dict.fromkeys(COLUMNS, 1.0), 5]}, "record 1"),
        ({"instances": 5}, "list of rows"),
        ({"instances": ["a", "b"]}, "item 0"),
        ({"inputs": [[1.0] * 11, [1.0] * 12]}, "row 1 has 12 values"),
        ({"inputs": [[1.0] * 11, {"pH": 1}]}, "row 1"),
        ({"inputs": {**{c: [1.0, 2.0] for c in COLUMNS}, "pH": [1.0]}}, "different lengths"),
        ({"inputs": {**{c: [1.0, 2.0] for c in COLUMNS}, "pH": 1.0}}, "'pH' must be a list"),
        ({"columns": list(COLUMNS), "data": [[1.0] * 11], "extra": 1}, "'extra'"),
    ],
)
def test_bad_format(body: Any, says: str) -> None:
    err = refusal(body)
    assert (err.status, err.code) == (400, "bad_format")
    assert says in err.message


def test_bad_format_lists_the_accepted_formats() -> None:
    err = refusal({"rows": [[1.0] * 11]})
    for fmt in ("dataframe_split", "dataframe_records", "instances", "inputs", "text/csv"):
        assert fmt in err.message


def _without(frame: pd.DataFrame, *drop: str) -> pd.DataFrame:
    return frame.drop(columns=list(drop))


@pytest.mark.parametrize(
    "fmt", ["dataframe_split", "dataframe_records", "inputs_columnar", "bare_split", "csv"]
)
def test_missing_columns_named_and_sorted(fmt: str, wine: pd.DataFrame) -> None:
    body, content_type = body_for(fmt, _without(wine, "pH", "alcohol", "chlorides"))
    err = refusal(body, content_type)
    assert (err.status, err.code) == (400, "missing_columns")
    assert "'alcohol', 'chlorides', 'pH'" in err.message


@pytest.mark.parametrize(
    "fmt", ["dataframe_split", "dataframe_records", "inputs_columnar", "bare_split", "csv"]
)
def test_unknown_columns_named(fmt: str, wine: pd.DataFrame) -> None:
    body, content_type = body_for(fmt, wine.assign(quality=5.0, colour=1.0))
    err = refusal(body, content_type)
    assert (err.status, err.code) == (400, "unknown_columns")
    assert "'colour', 'quality'" in err.message


def test_missing_and_unknown_together_reports_missing_with_the_unknown_as_detail(wine: pd.DataFrame) -> None:
    err = refusal(split_body(wine.rename(columns={"pH": "ph"})))
    assert err.code == "missing_columns"
    assert "'pH'" in err.message
    assert any("'ph'" in d for d in err.details)


def test_missing_column_in_one_record(wine: pd.DataFrame) -> None:
    recs = records(wine)
    del recs[7]["density"]
    err = refusal({"dataframe_records": recs})
    assert err.code == "missing_columns"
    assert "'density'" in err.message
    assert "record 7" in err.message


def test_a_column_order_is_checked_on_every_request(wine: pd.DataFrame) -> None:
    """Validated orders are cached; a refused order must be refused again, a good one still reordered."""
    good = split_body(wine[list(reversed(COLUMNS))])
    bad = split_body(wine.rename(columns={"pH": "ph"})[list(reversed([*COLUMNS[:8], "ph", *COLUMNS[9:]]))])
    for _ in range(3):
        np.testing.assert_array_equal(parse(good), wine.to_numpy())
        assert refusal(bad).code == "missing_columns"


def test_long_unknown_column_name_is_clipped(wine: pd.DataFrame) -> None:
    for body in (
        split_body(wine.assign(**{LONG: 1.0})),
        {"dataframe_records": [{**records(wine)[0], LONG: 1}]},
    ):
        err = refusal(body)
        assert err.code == "unknown_columns"
        assert_short(err, body)
    body = {LONG: 1}
    assert_short(refusal(body), body)


BAD_VALUES = [
    ("text", "non_numeric"),
    ("7.4", "non_numeric"),
    (LONG, "non_numeric"),
    (True, "non_numeric"),
    (False, "non_numeric"),
    ([1.0], "non_numeric"),
    ([LONG], "non_numeric"),
    ({"v": 1.0}, "non_numeric"),
    (None, "missing_value"),
    (float("nan"), "not_finite"),
    (float("inf"), "not_finite"),
    (float("-inf"), "not_finite"),
    (10**400, "not_finite"),
]
VALUE_FORMATS = [
    "dataframe_split",
    "dataframe_records",
    "instances_rows",
    "instances_records",
    "inputs_columnar",
    "bare_split",
]


@pytest.mark.parametrize("fmt", VALUE_FORMATS)
@pytest.mark.parametrize(("value", "code"), BAD_VALUES, ids=[f"{c}-{str(v)[:8]}" for v, c in BAD_VALUES])
def test_bad_value_named_by_column_and_row(fmt: str, value: Any, code: str, wine: pd.DataFrame) -> None:
    frame = wine.astype(object)
    frame.iat[4, COLUMNS.index("sulphates")] = value
    body, content_type = body_for(fmt, frame)
    err = refusal(body, content_type)
    assert (err.status, err.code) == (400, code)
    assert "'sulphates'" in err.message
    assert "row 4" in err.message
    assert_short(err, body)


def test_the_first_offending_value_is_reported(wine: pd.DataFrame) -> None:
    frame = wine.astype(object)
    frame.iat[9, 0] = "late"
    frame.iat[2, 5] = None
    err = refusal(split_body(frame))
    assert err.code == "missing_value"
    assert "'free sulfur dioxide', row 2" in err.message


@pytest.mark.parametrize(
    "literal",
    [b"1e999", b"-1e400", b"NaN", b"Infinity", b"-Infinity", b"1" + b"0" * 400, b"1" + b"0" * 400 + b".5"],
)
def test_numbers_orjson_refuses_are_not_finite(literal: bytes) -> None:
    body = b'{"instances": [[' + b", ".join([b"1.0"] * 6 + [literal] + [b"1.0"] * 4) + b"]]}"
    err = refusal(body)
    assert (err.status, err.code) == (400, "not_finite")
    assert "'total sulfur dioxide', row 0" in err.message


class Obj(list[tuple[str, Any]]):
    """A JSON object written as its (key, value) pairs, so that a key can appear twice."""


def raw(value: Any, colon: str = ": ") -> bytes:
    """JSON text of ``value``; ``Obj`` pairs are written as given, duplicates included."""

    def text(v: Any) -> str:
        if isinstance(v, Obj):
            return "{" + ", ".join(f"{json.dumps(k)}{colon}{text(x)}" for k, x in v) + "}"
        if isinstance(v, list):
            return "[" + ", ".join(text(x) for x in v) + "]"
        return json.dumps(v)

    return text(value).encode()


def record_pairs(frame: pd.DataFrame) -> list[Obj]:
    return [Obj(zip(frame.columns, row, strict=True)) for row in frame.to_numpy().tolist()]


def _twice(recs: list[Obj], index: int, key: str, value: Any = 99.0) -> list[Obj]:
    recs[index].append((key, value))
    return recs


@pytest.mark.parametrize(
    ("make", "where"),
    [
        (
            lambda w: Obj([("dataframe_records", _twice(record_pairs(w), 3, "pH"))]),
            "'dataframe_records', record 3",
        ),
        (lambda w: Obj([("instances", _twice(record_pairs(w), 0, "pH"))]), "'instances', record 0"),
        (lambda w: Obj([("inputs", _twice(record_pairs(w), 24, "pH"))]), "'inputs', record 24"),
        (lambda w: Obj([("inputs", _twice(record_pairs(w.iloc[:1]), 0, "pH"))]), "'inputs', record 0"),
        (
            lambda w: Obj([("instances", Obj([*record_pairs(w.iloc[:1])[0], ("pH", 1.0)]))]),
            "'instances', record 0",
        ),
        (
            lambda w: Obj([("inputs", Obj([(c, w[c].tolist()) for c in [*COLUMNS, "pH"]]))]),
            "the 'inputs' object",
        ),
        (
            lambda w: Obj(
                [("dataframe_split", Obj([*split_body(w)["dataframe_split"].items(), ("columns", [])]))]
            ),
            "the 'dataframe_split' object",
        ),
        (lambda w: Obj([*bare_split(w).items(), ("data", [[1.0] * 11])]), "the top-level object"),
        (lambda w: Obj([("instances", record_pairs(w)), ("instances", [])]), "the top-level object"),
    ],
)
@pytest.mark.parametrize("colon", [": ", ":", " : ", "\n:\t"])
def test_a_key_twice_is_a_duplicate_key_error(
    make: Callable[[pd.DataFrame], Obj], where: str, colon: str, wine: pd.DataFrame
) -> None:
    """orjson keeps the last value of a repeated key; the parser must refuse instead, and say where."""
    body = raw(make(wine), colon)
    err = refusal(body)
    assert (err.status, err.code) == (400, "duplicate_key")
    assert where in err.message
    key = "'pH'" if "record" in where or "inputs" in where else ("'columns'" if "split" in where else "")
    assert key in err.message
    assert_short(err, body)


def test_duplicate_key_reports_the_first_record_and_clips_the_key(wine: pd.DataFrame) -> None:
    recs = record_pairs(wine)
    _twice(recs, 2, LONG)
    _twice(recs, 2, LONG)
    _twice(recs, 7, "pH")
    body = raw(Obj([("dataframe_records", recs)]))
    err = refusal(body)
    assert err.code == "duplicate_key"
    assert "record 2" in err.message
    assert_short(err, body)


def test_colons_and_duplicates_where_no_format_reads_them(wine: pd.DataFrame) -> None:
    """A colon inside a string takes the slower duplicate check; the answer is the same."""
    columns = ("a:b", "c", "::")
    rows = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    for doc in (
        Obj([("dataframe_records", [Obj(zip(columns, row, strict=True)) for row in rows])]),
        Obj(
            [
                (
                    "dataframe_split",
                    Obj([("columns", list(columns)), ("data", rows), ("index", ["x:1", "y:2"])]),
                )
            ]
        ),
        Obj([("inputs", Obj([(c, [r[i] for r in rows]) for i, c in enumerate(columns)]))]),
    ):
        assert parse_request(raw(doc), JSON, columns, 10).tolist() == rows
    # an index is ignored, whatever it holds
    ignored = Obj(
        [("columns", list(COLUMNS)), ("data", [[1.0] * 11]), ("index", [Obj([("a", 1), ("a", 2)])])]
    )
    assert parse(raw(ignored)).shape == (1, 11)
    # a value that is an object is not a number, with or without a repeated key
    recs = record_pairs(wine.iloc[:2])
    recs[1][8] = ("pH", Obj([("x", 1), ("x", 2)]))
    err = refusal(raw(Obj([("dataframe_records", recs)])))
    assert err.code == "non_numeric"
    assert "'pH', row 1" in err.message


def test_nesting_too_deep_for_the_duplicate_check_is_invalid_json() -> None:
    """orjson reads 1,024 levels, the standard library fewer: a body that needs the exact check is refused."""
    deep = b"[" * 1000 + b"]" * 1000
    body = (
        b'{"columns": ' + dumps(list(COLUMNS)) + b', "data": [' + dumps([1.0] * 11) + b'], "index": ['
        + deep + b', {"a:": 1}]}'
    )  # fmt: skip
    err = refusal(body)
    assert (err.status, err.code) == (400, "invalid_json")
    assert "nested too deeply" in err.message


@pytest.mark.parametrize("literal", [b"1_000", b"0x10", b"+1", b".5", b"01", b"nan", b"inf", b"1e", b'"1"'])
def test_json_numbers_are_json_numbers(literal: bytes) -> None:
    """JSON bodies have no CSV-like leniency: what is not a JSON number never becomes one."""
    body = b'{"instances": [[' + b", ".join([b"1.0"] * 8 + [literal] + [b"1.0"] * 2) + b"]]}"
    err = refusal(body)
    assert err.code == ("non_numeric" if literal.startswith(b'"') else "invalid_json")


def test_booleans_are_never_numbers_whichever_path(wine: pd.DataFrame) -> None:
    """A body holding JSON true/false takes the diagnostic pass; a column named "true" must still work."""
    columns = ("true", "false", "x")
    data = [[1.0, 2.0, 3.0]]
    assert (
        parse_request(
            dumps({"dataframe_split": {"columns": list(columns), "data": data}}), JSON, columns, 10
        ).tolist()
        == data
    )
    for row in ([True, 2.0, 3.0], [1.0, 2.0, False], [1, 1, True]):
        with pytest.raises(PayloadError) as exc:
            parse_request(dumps({"instances": [row]}), JSON, columns, 10)
        assert exc.value.code == "non_numeric"


def test_empty(wine: pd.DataFrame) -> None:
    for body in (
        {"dataframe_split": {"columns": list(COLUMNS), "data": []}},
        {"dataframe_records": []},
        {"instances": []},
        {"inputs": {c: [] for c in COLUMNS}},
        {"columns": list(COLUMNS), "data": []},
    ):
        err = refusal(body)
        assert (err.status, err.code) == (400, "empty"), body


@pytest.mark.parametrize("fmt", sorted(BUILDERS))
def test_max_rows_boundary(fmt: str, wine: pd.DataFrame) -> None:
    body, content_type = body_for(fmt, wine)
    assert parse(body, content_type, max_rows=25).shape == (25, 11)
    err = refusal(body, content_type, max_rows=24)
    assert (err.status, err.code) == (413, "too_many_rows")
    assert "25" in err.message
    assert "24" in err.message


def test_one_row_object_counts_as_one_row(wine: pd.DataFrame) -> None:
    row = {c: 1.0 for c in COLUMNS}
    assert parse({"inputs": row}, max_rows=1).shape == (1, 11)
    assert refusal({"inputs": row}, max_rows=0).status == 413


def test_error_json_shape() -> None:
    err = PayloadError(400, "bad_format", "msg", ["one", "two"])
    assert orjson.loads(err.to_json()) == {
        "error": {"code": "bad_format", "message": "msg", "details": ["one", "two"]}
    }
    assert orjson.loads(PayloadError(415, "x", "m").to_json())["error"]["details"] == []
    assert (err.status, err.code, err.message, err.details) == (400, "bad_format", "msg", ["one", "two"])


def test_lone_surrogates_in_the_body_do_not_break_the_error_json() -> None:
    body = b'{"dataframe_split": {"columns": ["\\ud800"], "data": [[NaN]]}}'  # stdlib path: NaN forces it
    err = refusal(body)
    assert err.code == "missing_columns"
    orjson.loads(err.to_json())


def test_the_module_imports_neither_pandas_nor_mlflow() -> None:
    code = "import sys, vintage.serving.payload; print(sorted({'pandas', 'mlflow'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --- properties ------------------------------------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False)
cell = st.one_of(finite, st.integers(-(2**63), 2**64 - 1))
matrices = st.lists(st.lists(cell, min_size=11, max_size=11), min_size=1, max_size=50)
# pandas' to_json keeps 10 significant digits by default: not for arbitrary floats
EXACT_FORMATS = sorted(f for f in BUILDERS if not f.startswith(("pandas_to_json", "bare_split_pandas")))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=matrices, order=st.permutations(COLUMNS), fmt=st.sampled_from(EXACT_FORMATS))
def test_any_finite_matrix_round_trips_in_every_format(
    rows: list[list[float]], order: list[str], fmt: str
) -> None:
    expected = np.array([[float(v) for v in row] for row in rows])
    frame = pd.DataFrame(rows, columns=list(COLUMNS), dtype=object)  # keeps Python ints as ints
    body, content_type = body_for(fmt, frame[list(order)])
    got = parse(body, content_type, max_rows=50)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, expected)


@settings(max_examples=100, deadline=None)
@given(rows=st.lists(st.lists(finite, min_size=3, max_size=3), min_size=1, max_size=20))
def test_diagnostic_pass_agrees_with_fast_path(rows: list[list[float]]) -> None:
    """Column names containing "true" force the slow pass; it must return the same matrix."""
    slow_cols = ("true", "b", "c")
    fast_cols = ("a", "b", "c")
    for fmt in ("dataframe_split", "dataframe_records", "inputs_columnar"):
        results = []
        for cols in (slow_cols, fast_cols):
            frame = pd.DataFrame(rows, columns=list(cols))
            body = BUILDERS[fmt](frame)
            results.append(parse_request(dumps(body), JSON, cols, 20))
        np.testing.assert_array_equal(results[0], results[1])
        np.testing.assert_array_equal(results[0], np.array(rows))


KEYS = st.sampled_from(
    [
        "dataframe_split",
        "dataframe_records",
        "instances",
        "inputs",
        "columns",
        "data",
        "index",
        "params",
        *COLUMNS,
    ]
)
scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=12) | st.dictionaries(KEYS | st.text(max_size=10), children, max_size=12)
    ),
    max_leaves=40,
)
# cells of well-shaped bodies: mostly numbers, sometimes anything a JSON value can be
cells = st.one_of(finite, finite, finite, scalars, st.lists(scalars, max_size=2))
split_rows = st.lists(st.lists(cells, min_size=10, max_size=12), max_size=4)
any_columns = st.permutations(COLUMNS) | st.lists(KEYS | scalars, max_size=12)
shaped = st.one_of(
    st.fixed_dictionaries(
        {"dataframe_split": st.fixed_dictionaries({"columns": any_columns, "data": split_rows})}
    ),
    st.fixed_dictionaries({"dataframe_records": st.lists(st.dictionaries(KEYS, cells), max_size=3)}),
    st.fixed_dictionaries({"inputs": st.dictionaries(KEYS, st.lists(cells, max_size=3) | cells)}),
    # every column present: these reach the fast paths
    st.fixed_dictionaries(
        {"instances": st.lists(st.fixed_dictionaries(dict.fromkeys(COLUMNS, cells)), max_size=3)}
    ),
    st.fixed_dictionaries(
        {"inputs": st.fixed_dictionaries(dict.fromkeys(COLUMNS, st.lists(cells, min_size=2, max_size=2)))}
    ),
)


def _check_outcome(body: bytes, content_type: str | None) -> None:
    try:
        got = parse_request(body, content_type, COLUMNS, 5)
    except PayloadError as err:
        assert err.status in {400, 413, 415}
        out = orjson.loads(err.to_json())
        assert out["error"]["code"] == err.code
        assert len(err.to_json()) < 3000
        return
    assert isinstance(got, np.ndarray)
    assert got.dtype == np.float64
    assert got.ndim == 2
    assert got.shape[1] == len(COLUMNS)
    assert 1 <= got.shape[0] <= 5
    assert np.isfinite(got).all()


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=json_values | shaped)
def test_fuzz_any_json_value_is_a_matrix_or_a_payload_error(doc: Any) -> None:
    _check_outcome(dumps(doc), JSON)


@settings(max_examples=1000, deadline=None)
@given(
    body=st.binary(max_size=200)
    | st.text(alphabet=',"\n\r 0123456789.eEnaif-+xtru', max_size=200).map(str.encode),
    content_type=st.sampled_from([None, JSON, "text/csv", "text/plain", "TEXT/CSV; charset=utf-8"]),
)
def test_fuzz_any_bytes_are_a_matrix_or_a_payload_error(body: bytes, content_type: str | None) -> None:
    _check_outcome(body, content_type)


CSV_CELLS = st.sampled_from(["1.5", "2", "-3e2", " 4 ", '"5"', "", "nan", "x"])


@settings(max_examples=300, deadline=None)
@given(rows=st.lists(st.lists(CSV_CELLS, min_size=11, max_size=11), min_size=1, max_size=4))
def test_fuzz_csv_cells(rows: list[list[str]]) -> None:
    body = "\n".join([",".join(f'"{c}"' for c in COLUMNS), *(",".join(r) for r in rows)]).encode()
    _check_outcome(body, "text/csv")


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(st.lists(finite, min_size=11, max_size=11), min_size=1, max_size=8),
    data=st.data(),
    key=st.sampled_from(["dataframe_records", "instances", "inputs"]),
    colon=st.sampled_from([":", ": ", " :", " : "]),
)
def test_fuzz_duplicate_keys_in_records(
    rows: list[list[float]], data: st.DataObject, key: str, colon: str
) -> None:
    """Any record with any column twice, wherever the copy sits in the record, is refused and located."""
    recs = [Obj(zip(COLUMNS, row, strict=True)) for row in rows]
    index = data.draw(st.integers(0, len(recs) - 1))
    column = data.draw(st.sampled_from(COLUMNS))
    value = data.draw(finite)
    position = data.draw(st.integers(0, 11))
    recs[index].insert(position, (column, value))
    err = refusal(raw(Obj([(key, recs)]), colon))
    assert (err.status, err.code) == (400, "duplicate_key")
    assert f"{column!r}" in err.message
    assert f"record {index}" in err.message
    # without the copy, the same text parses to the rows
    del recs[index][position]
    np.testing.assert_array_equal(parse(raw(Obj([(key, recs)]), colon)), np.array(rows))
