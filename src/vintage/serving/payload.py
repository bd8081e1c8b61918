"""Request bodies -> a float matrix in the model's column order; predictions -> JSON bytes.

This is the scoring server's hot path, so it uses only orjson and numpy (no pandas, no MLflow).

Accepted bodies (``application/json``; a request without a content type is refused with 415):

* ``{"dataframe_split": {"columns": [...], "data": [[...], ...], "index": [...]}}`` (index ignored)
* ``{"dataframe_records": [{"col": v, ...}, ...]}``
* ``{"instances": X}`` or ``{"inputs": X}`` where X is a list of records, a list of rows (each row
  holds one value per model column, in model order), an object of column -> list of values, or an
  object of column -> scalar (one row)
* the bare split object ``{"columns": [...], "data": [[...]], "index": [...]}`` (index optional)

and ``text/csv`` with a header line. Request columns may come in any order; missing or unknown
columns are refused (the model's schema is fixed).

Fast path: ``orjson.loads``, one check of the column names, one ``np.array`` over the nested lists,
one finiteness check. Whenever that fails or looks suspicious, a slow diagnostic pass walks the values
in Python, either raising the precise :class:`PayloadError` (which column, which row) or returning
the matrix anyway; so the fast path only decides speed, never the answer.

Decisions:

* Booleans are not numbers (``non_numeric``). ``np.array`` would turn ``true`` into 1.0, so a JSON
  body containing the bytes ``true`` or ``false`` anywhere (column names included) skips the fast
  path; the diagnostic pass then decides exactly.
* Numeric strings (``"7.4"``) in JSON are ``non_numeric`` too (``np.array`` would convert them,
  which is why the fast path infers the dtype and accepts only int/float results).
* ``null`` is a missing value (``missing_value``), reported before any finiteness question.
* NaN/Infinity literals and overflowing numbers (``1e999``), which orjson refuses, are re-parsed with
  the standard library so the answer is ``not_finite`` with the column and row instead of
  ``invalid_json``.
* Top-level keys other than the one format key (``params`` included) are refused.
* A key twice in one object (a record, the one-record or columnar object, the split object, the top
  level) is ``duplicate_key``: orjson, like every JSON parser, would silently keep the last value.
  orjson cannot report duplicates, so the parser counts the keys it got from the objects that matter
  and compares that with the number of ``:`` bytes in the body, an upper bound of the keys written.
  Only when they differ (a duplicate, or a colon inside a string) is the body parsed again with the
  standard library's ``object_pairs_hook`` to find the duplicate and say where it is.
* CSV cells are numbers as CSV writers print them: ``[+-]digits[.digits][e[+-]digits]`` (``.5`` and
  ``5.`` too; ASCII digits; spaces or tabs around). Empty -> ``missing_value``; ``nan``, ``inf``,
  ``infinity`` or an overflow (``1e999``) -> ``not_finite``; anything else -> ``non_numeric``, also
  what Python's ``float()`` (and numpy) would read: ``1_000``, non-ASCII digits, a no-break space
  around. A CSV body that is not UTF-8 is ``bad_format``.
"""

from __future__ import annotations

import csv
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from operator import itemgetter
from typing import Any, Final, NamedTuple, NoReturn

import numpy as np
import numpy.typing as npt
import orjson

from vintage.model.load import SMALL_BATCH_ROWS
from vintage.serving.payload_errors import (
    PayloadError,
)
from vintage.serving.payload_errors import bad as _bad
from vintage.serving.payload_errors import check_count as _check_count
from vintage.serving.payload_errors import clip as _clip
from vintage.serving.payload_errors import empty as _empty
from vintage.serving.payload_errors import kind as _kind
from vintage.serving.payload_errors import names as _names
from vintage.serving.payload_errors import show as _show
from vintage.serving.payload_json import FORMAT_KEYS as _FORMAT_KEYS
from vintage.serving.payload_json import load_json

__all__ = [
    "SMALL_ROWS",
    "Matrix",
    "PayloadError",
    "Rows",
    "encode_predictions",
    "parse_batch",
    "parse_request",
]

Matrix = npt.NDArray[np.float64]
Rows = list[Sequence[float]]
"""A small JSON request's rows as the parser got them (Python floats and ints, every one finite), in the
model's column order: what :func:`parse_batch` gives instead of a :data:`Matrix` for at most
:data:`SMALL_ROWS` rows."""
SMALL_ROWS: Final = SMALL_BATCH_ROWS
"""Up to this many rows a JSON request's numbers stay Python numbers: turning them into a NumPy matrix and
back costs more than the checks and the sum (a NumPy call is ~1 us of overhead; BENCHMARKS.md). The cut-off
of the linear model's Python sum (:data:`vintage.model.load.SMALL_BATCH_ROWS`), so both agree."""


_SPLIT_KEYS = frozenset({"columns", "data", "index"})
_FORMAT_KEY_SET = frozenset(_FORMAT_KEYS)
_ACCEPTED = (
    'Accepted JSON bodies: {"dataframe_split": {"columns": [...], "data": [[...]]}}, '
    '{"dataframe_records": [{...}]}, {"instances": [...]}, {"inputs": [...] or {...}}, '
    'or {"columns": [...], "data": [[...]]}; or a text/csv body with a header line'
)


def parse_request(body: bytes, content_type: str | None, columns: Sequence[str], max_rows: int) -> Matrix:
    """Parse a scoring request into a finite 2-D float64 matrix, columns in ``columns`` order.

    :func:`parse_batch` with its small requests' rows turned into a matrix too; the arguments and errors
    are its own.
    """
    got = parse_batch(body, content_type, columns, max_rows)
    return got if type(got) is np.ndarray else np.array(got, dtype=np.float64).reshape(-1, len(columns))


def parse_batch(
    body: bytes, content_type: str | None, columns: Sequence[str], max_rows: int
) -> Matrix | Rows:
    """Parse a scoring request into a finite 2-D float64 matrix, columns in ``columns`` order, or, for a
    JSON request of at most :data:`SMALL_ROWS` rows holding JSON numbers only, into those rows
    (:data:`Rows`: the same values, checked the same way, as Python numbers).

    Args:
        body: the raw request body.
        content_type: the Content-Type header (``None`` when the request has none: 415).
        columns: the model's input columns, in the order the model expects them.
        max_rows: the most rows one request may carry.

    Raises:
        PayloadError: 400 (malformed, duplicate keys, wrong columns, bad values, empty), 413 (too
            many rows), 415 (no or an unsupported content type).
        ValueError: ``columns`` is empty or repeats a name (a caller bug, not a bad request).
    """
    schema = _schema(tuple(columns))
    if _media_type(content_type) == "text/csv":
        return _from_csv(body, schema, max_rows)
    doc, finite = load_json(body)
    maybe_bool = b"true" in body or b"false" in body
    return _from_document(doc, _Context(schema, max_rows, maybe_bool, finite))


def encode_predictions(pred: npt.NDArray[Any] | list[float]) -> bytes:
    """``{"predictions": [...]}`` as MLflow's scoring server writes it (same numbers once parsed).

    Non-finite floats become ``null`` (MLflow would write the non-JSON ``NaN``/``Infinity``).
    ``tolist()`` beats ``OPT_SERIALIZE_NUMPY`` up to ~10 predictions (0.16 vs 0.20 us for one) and
    gives MLflow's exact numbers for float32 too (orjson would print the shorter float32 repr).
    """
    return orjson.dumps({"predictions": pred if isinstance(pred, list) else pred.tolist()})


# --- schema and context ------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Schema:
    """The model's columns, with what the parsers need precomputed."""

    names: tuple[str, ...]
    names_list: list[str]
    getter: Callable[[Any], Any]  # record -> tuple of its values in model order

    @property
    def n(self) -> int:
        return len(self.names)


class _Context(NamedTuple):
    """Per-request parsing state."""

    schema: _Schema
    max_rows: int
    maybe_bool: bool  # the body may hold a JSON boolean: skip the fast path
    finite: bool  # orjson read the body: every number is finite, and a small request may stay Python rows


@lru_cache(maxsize=64)
def _schema(names: tuple[str, ...]) -> _Schema:
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"model columns must be distinct and non-empty: {names!r}")
    if len(names) == 1:
        only = names[0]
        return _Schema(names, list(names), lambda record: (record[only],))
    return _Schema(names, list(names), itemgetter(*names))


def _media_type(content_type: str | None) -> str:
    """``application/json`` or ``text/csv`` (parameters and case ignored), else 415."""
    media = content_type.partition(";")[0].strip().lower() if content_type else ""
    if media in ("application/json", "text/csv"):
        return media
    if not media:
        raise PayloadError(
            415,
            "unsupported_media_type",
            "the request has no content type: send the header Content-Type: application/json or text/csv",
        )
    raise PayloadError(
        415,
        "unsupported_media_type",
        f"unsupported content type {_show(content_type)}: send application/json or text/csv",
    )


# --- JSON ----------------------------------------------------------------------------------------


def _from_document(doc: Any, ctx: _Context) -> Matrix | Rows:
    """Dispatch on the top-level shape of the parsed JSON."""
    if not isinstance(doc, dict):
        _bad(f"the body must be a JSON object, got {_kind(doc)}. {_ACCEPTED}")
    if len(doc) == 1 and (key := next(iter(doc))) in _FORMAT_KEY_SET:
        value = doc[key]
        if key == "dataframe_split":
            return _from_split(value, ctx, key)
        if key == "dataframe_records":
            if not isinstance(value, list):
                _bad(f"dataframe_records must be a list of records (objects), got {_kind(value)}")
            return _from_records(value, ctx, key)
        return _from_tensor_input(value, ctx, key)
    found = [key for key in _FORMAT_KEYS if key in doc]
    if not found and "data" in doc and "columns" in doc:
        return _from_split(doc, ctx, "the split object")
    if len(found) > 1:
        _bad(f"the body has several format keys ({', '.join(found)}); send exactly one. {_ACCEPTED}")
    if found:
        extra = sorted(k for k in doc if k not in found)
        _bad(f"unexpected top-level keys next to {found[0]}: {_names(extra)}. {_ACCEPTED}")
    _bad(f"unknown request format (top-level keys: {_names(sorted(doc))}). {_ACCEPTED}")


def _from_split(obj: Any, ctx: _Context, where: str) -> Matrix | Rows:
    """``{"columns": [...], "data": [[...]], "index": [...]}``."""
    if not isinstance(obj, dict):
        _bad(f'{where} must be an object {{"columns": [...], "data": [[...]]}}, got {_kind(obj)}')
    if not _SPLIT_KEYS.issuperset(obj):
        extra = sorted(k for k in obj if k not in _SPLIT_KEYS)
        _bad(f"{where} has unexpected keys {_names(extra)}; expected columns, data and optionally index")
    names, data = obj.get("columns"), obj.get("data")
    if not isinstance(names, list) or not isinstance(data, list):
        _bad(f"{where} needs 'columns' (a list of names) and 'data' (a list of rows)")
    perm = _column_order(names, ctx.schema)
    _check_count(len(data), ctx.max_rows)
    return _from_rows(data, names, perm, ctx, where)


def _from_tensor_input(value: Any, ctx: _Context, where: str) -> Matrix | Rows:
    """``instances``/``inputs``: records, rows in model order, columns, or one row as an object."""
    if isinstance(value, dict):
        return _from_columns(value, ctx, where)
    if not isinstance(value, list):
        _bad(f"{where} must be a list of rows or records, or an object of columns; got {_kind(value)}")
    if not value:
        _empty()
    if isinstance(value[0], dict):
        return _from_records(value, ctx, where)
    if isinstance(value[0], list):
        _check_count(len(value), ctx.max_rows)
        return _from_rows(value, ctx.schema.names_list, None, ctx, where)
    _bad(f"{where} must be a list of rows (lists) or records (objects); item 0 is {_kind(value[0])}")


def _from_rows(
    rows: list[Any], names: list[str], perm: npt.NDArray[np.intp] | None, ctx: _Context, where: str
) -> Matrix | Rows:
    """Rows of values in ``names`` order; ``perm`` reorders them to the model's order."""
    if not rows:
        _empty()
    if ctx.finite and not ctx.maybe_bool and len(rows) <= SMALL_ROWS and _small(rows, len(names)):
        if perm is None:
            return rows
        order = perm.tolist()
        return [[row[i] for i in order] for row in rows]
    fast = None if ctx.maybe_bool else _numeric(rows, len(names), ctx.finite)
    if fast is None:
        fast = _diagnose_rows(rows, names, where)
    return fast if perm is None else fast.take(perm, axis=1)


def _from_records(records: list[Any], ctx: _Context, where: str) -> Matrix | Rows:
    """A list of ``{"column": value}`` objects."""
    if not records:
        _empty()
    _check_count(len(records), ctx.max_rows)
    schema = ctx.schema
    if not ctx.maybe_bool:
        try:
            rows = list(map(schema.getter, records))
        except (KeyError, TypeError):
            rows = None
        # every record has every column; equal total length means no record has extra ones
        if rows is not None and sum(map(len, records)) == schema.n * len(records):
            if ctx.finite and len(rows) <= SMALL_ROWS and _small(rows, schema.n):
                return rows
            fast = _numeric(rows, schema.n, ctx.finite)
            if fast is not None:
                return fast
    return _diagnose_records(records, schema, where)


def _from_columns(obj: dict[str, Any], ctx: _Context, where: str) -> Matrix | Rows:
    """``{"column": [values...]}`` (columnar) or ``{"column": value}`` (one row)."""
    schema = ctx.schema
    _permutation(schema, tuple(obj))  # validates the names (cached per distinct order)
    values = list(schema.getter(obj))
    if not isinstance(values[0], list):  # one row
        _check_count(1, ctx.max_rows)
        return _from_rows([values], schema.names_list, None, ctx, where)
    if not values[0]:
        _empty()
    _check_count(len(values[0]), ctx.max_rows)
    if not ctx.maybe_bool:
        fast = _numeric(values, len(values[0]))
        if fast is not None and fast.shape[0] == schema.n:
            return np.ascontiguousarray(fast.T)
    return _diagnose_columns(values, schema, where)


# --- the fast conversion -------------------------------------------------------------------------


def _small(rows: list[Any], width: int) -> bool:
    """Whether ``rows`` (of a body orjson read, with no ``true`` or ``false`` in it: so every value is a
    number, a string, null, a list or an object, and every float is finite) are lists or tuples of
    ``width`` numbers each: the checks :func:`_numeric`'s dtype makes, in Python. Adding the values up is
    the type check: anything but a number (or a bool, ruled out) makes ``sum`` raise TypeError, at a third
    of the cost of looking at each value's type. Anything else (a string, null, a nested list, a short
    row) goes the NumPy way, which names it."""
    if not (_ROW_TYPES.issuperset(map(type, rows)) and all(len(row) == width for row in rows)):
        return False
    try:
        sum(map(sum, rows))
    except TypeError:
        return False
    return True


_ROW_TYPES = frozenset({list, tuple})


def _numeric(nested: list[Any], width: int, finite: bool = False) -> Matrix | None:
    """``nested`` as a finite float matrix ``width`` wide, or None when anything is off.

    The dtype is inferred (not forced to float64) so that strings, None and objects show up as a
    non-numeric dtype instead of being converted or turned into NaN. ``finite``: the parser vouches that
    every float is finite (orjson), so they are not checked again.
    """
    try:
        arr = np.array(nested)
    except (ValueError, TypeError, OverflowError):
        return None
    if arr.dtype.kind not in "fiu" or arr.ndim != 2 or arr.shape[1] != width:
        return None
    out = arr.astype(np.float64, copy=False)
    if arr.dtype.kind == "f" and not finite and not np.isfinite(out).all():
        return None
    return out


def _column_order(names: list[Any], schema: _Schema) -> npt.NDArray[np.intp] | None:
    """Index permutation request order -> model order (None if already in model order)."""
    if names == schema.names_list:
        return None
    try:
        return _permutation(schema, tuple(names))
    except TypeError:  # an unhashable name (a list or an object): _check_names refuses it
        _check_names(names, schema)
        raise


@lru_cache(maxsize=256)
def _permutation(schema: _Schema, request: tuple[str, ...]) -> npt.NDArray[np.intp]:
    """Validate a request's column names once per distinct order (refusals are not cached)."""
    _check_names(list(request), schema)
    position = {name: i for i, name in enumerate(request)}
    return np.array([position[name] for name in schema.names], dtype=np.intp)


def _check_names(names: list[Any], schema: _Schema) -> None:
    """Request column names: strings, distinct, exactly the model's columns."""
    for name in names:
        if not isinstance(name, str):
            _bad(f"column names must be strings, got {_show(name)}")
    if len(set(names)) != len(names):
        dupes = sorted(name for name, count in Counter(names).items() if count > 1)
        _bad(f"duplicate column names: {_names(dupes)}")
    _check_present(set(names), schema, "")


def _check_present(given: set[str], schema: _Schema, where: str) -> None:
    """Raise missing_columns / unknown_columns unless ``given`` is exactly the model's columns."""
    missing = sorted(set(schema.names) - given)
    unknown = sorted(given - set(schema.names))
    if missing:
        details = [f"unknown columns: {_names(unknown)}"] if unknown else []
        raise PayloadError(
            400, "missing_columns", f"missing columns{where}: {_names(missing)}", details + _expected(schema)
        )
    if unknown:
        raise PayloadError(
            400, "unknown_columns", f"unknown columns{where}: {_names(unknown)}", _expected(schema)
        )


# --- the slow, diagnostic pass -------------------------------------------------------------------


def _diagnose_rows(rows: list[Any], names: list[str], where: str) -> Matrix:
    """Check each row's shape, then each value; return the matrix if nothing is wrong."""
    width = len(names)
    for r, row in enumerate(rows):
        if not isinstance(row, list):
            _bad(f"{where}: row {r} must be a list of {width} values, got {_kind(row)}")
        if len(row) != width:
            _bad(
                f"{where}: row {r} has {len(row)} values, expected {width} (one per column: {_names(names)})"
            )
    out = np.empty((len(rows), width))
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            out[r, c] = _number(value, names[c], r)
    return out


def _diagnose_records(records: list[Any], schema: _Schema, where: str) -> Matrix:
    """Check that every item is an object with exactly the model's columns, then each value."""
    for r, record in enumerate(records):
        if not isinstance(record, dict):
            _bad(f"{where}: record {r} must be an object of column -> value, got {_kind(record)}")
        _check_present(set(record), schema, f" in record {r}")
    out = np.empty((len(records), schema.n))
    for r, record in enumerate(records):
        for c, name in enumerate(schema.names):
            out[r, c] = _number(record[name], name, r)
    return out


def _diagnose_columns(values: list[Any], schema: _Schema, where: str) -> Matrix:
    """Check that every column holds a list of the same length, then each value."""
    length = len(values[0])
    for name, column in zip(schema.names, values, strict=True):
        if not isinstance(column, list):
            _bad(
                f"{where}: column {_show(name)} must be a list of values like the others, got {_kind(column)}"
            )
        if len(column) != length:
            _bad(
                f"{where}: columns have different lengths: {_show(schema.names[0])} has {length} values, "
                f"{_show(name)} has {len(column)}"
            )
    out = np.empty((length, schema.n))
    for r in range(length):
        for c, name in enumerate(schema.names):
            out[r, c] = _number(values[c][r], name, r)
    return out


def _number(value: Any, column: str, row: int) -> float:
    """One JSON value as a finite float, or the PayloadError that says what is wrong with it."""
    kind = type(value)
    if kind is float or kind is int:
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if math.isfinite(number):
            return number
        _cell_error("not_finite", "value is not finite", value, column, row)
    if value is None:
        _cell_error("missing_value", "missing value", None, column, row)
    _cell_error("non_numeric", "value is not a number", value, column, row)


def _cell_error(code: str, what: str, value: Any, column: str, row: int) -> NoReturn:
    shown = "" if value is None else f": {_show(value)}"
    raise PayloadError(400, code, f"{what} in column {_show(column)}, row {row}{shown}")


# --- CSV -----------------------------------------------------------------------------------------


def _from_csv(body: bytes, schema: _Schema, max_rows: int) -> Matrix:
    """A header line of column names, then one line per row; comma separated, quotes allowed."""
    try:
        text = body.decode("utf-8").lstrip("\ufeff").strip()
    except UnicodeDecodeError:
        _bad("the CSV body is not valid UTF-8")
    lines = text.splitlines()
    if len(lines) < 2:
        _empty()
    header = lines[0]
    names = [n.strip() for n in (_csv_rows([header])[0] if '"' in header else header.split(","))]
    perm = _column_order(names, schema)
    data = lines[1:]
    _check_count(len(data), max_rows)
    # only the bytes of plain numbers: numpy (Python's float) would also read 1_000, nan, non-ASCII digits
    plain = not text[len(header) :].encode().translate(None, _CSV_PLAIN)
    fast = _csv_numeric(data, len(names)) if plain else None
    if fast is None:
        fast = _diagnose_csv(data, names)
    return fast if perm is None else fast.take(perm, axis=1)


def _csv_numeric(lines: list[str], width: int) -> Matrix | None:
    try:
        arr = np.array([line.split(",") for line in lines], dtype=np.float64)
    except (ValueError, TypeError):
        return None
    if arr.ndim != 2 or arr.shape[1] != width or not np.isfinite(arr).all():
        return None
    return arr


def _diagnose_csv(lines: list[str], names: list[str]) -> Matrix:
    rows = [row for row in _csv_rows(lines) if row]
    if not rows:
        _empty()
    for r, row in enumerate(rows):
        if len(row) != len(names):
            _bad(f"CSV row {r} has {len(row)} fields, expected {len(names)} (one per header column)")
    out = np.empty((len(rows), len(names)))
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            out[r, c] = _csv_number(cell, names[c], r)
    return out


def _csv_rows(lines: list[str]) -> list[list[str]]:
    try:
        return list(csv.reader(lines))
    except csv.Error as exc:
        _bad(f"the CSV body cannot be read: {_clip(str(exc))}")


_CSV_PLAIN = b"0123456789+-.eE, \t\r\n"  # what plain CSV number lines are made of
_CSV_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_CSV_NOT_FINITE = frozenset(sign + word for sign in ("", "+", "-") for word in ("nan", "inf", "infinity"))


def _csv_number(cell: str, column: str, row: int) -> float:
    text = cell.strip(" \t")
    if not text:
        _cell_error("missing_value", "missing value", None, column, row)
    if _CSV_NUMBER.fullmatch(text):
        number = float(text)
        if math.isfinite(number):
            return number
    elif text.lower() not in _CSV_NOT_FINITE:
        _cell_error("non_numeric", "value is not a number", cell, column, row)
    _cell_error("not_finite", "value is not finite", cell, column, row)


def _expected(schema: _Schema) -> list[str]:
    return [f"the model expects: {_names(sorted(schema.names), limit=len(schema.names))}"]
