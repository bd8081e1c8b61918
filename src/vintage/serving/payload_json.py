"""Reading JSON scoring bodies strictly: a key named twice in an object that a format reads is a 400.

Split out of :mod:`vintage.serving.payload`, which turns the document into a matrix.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

import orjson

from vintage.serving.payload_errors import PayloadError
from vintage.serving.payload_errors import clip as _clip
from vintage.serving.payload_errors import show as _show

FORMAT_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
RECORD_KEYS = ("dataframe_records", "instances", "inputs")  # may hold a list of records
_FORMAT_KEYS, _RECORD_KEYS = FORMAT_KEYS, RECORD_KEYS


def load_json(body: bytes) -> tuple[Any, bool]:
    """The body as a JSON document, refused with 400 ``duplicate_key`` when an object a format reads names
    a key twice (orjson, like every JSON parser, would keep the last value silently); and whether orjson
    read it (then every number in it is finite: orjson refuses NaN, Infinity and 1e999, which only the
    standard library's parser, the fallback, turns into non-finite floats).

    The check costs one byte count on the hot path: the number of ``:`` in the body is never lower than
    the number of keys written, so when it equals the keys orjson kept no key can repeat; otherwise the
    body is parsed again keeping every pair (a string holding a colon also takes that path).

    Raises:
        PayloadError: 400 ``invalid_json`` or ``duplicate_key``.
    """
    doc, by_orjson = _parse(body)
    if body.count(b":") != _keys(doc):
        _check_duplicates(body)
    return doc, by_orjson


def _parse(body: bytes) -> tuple[Any, bool]:
    """orjson, then the standard library for what only it reads (NaN, Infinity, 1e999); and whether
    orjson read it."""
    try:
        return orjson.loads(body), True
    except orjson.JSONDecodeError as exc:
        first = str(exc)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise PayloadError(400, "invalid_json", "the request body is not valid UTF-8") from None
    try:
        return json.loads(text), False
    except (ValueError, RecursionError):
        raise PayloadError(
            400, "invalid_json", f"the request body is not valid JSON: {_clip(first)}"
        ) from None


def _keys(doc: Any) -> int:
    """How many keys orjson kept in the objects the formats read: the top level, the objects it holds
    and the records of a record list. Any other object is refused or ignored (an ``index``), and
    leaving its keys out only sends the body to the exact check."""
    if type(doc) is not dict:
        return 0
    n = len(doc)
    for name, value in doc.items():
        if type(value) is dict:
            n += len(value)
        elif name in _RECORD_KEYS and type(value) is list and value and type(value[0]) is dict:
            try:
                # a list starting with a record that holds other things (strings, lists) is refused as
                # bad_format whatever this counts for them
                n += sum(map(len, value))
            except TypeError:  # a number or null among the records (refused): leave it to the exact check
                return 0
    return n


class _Duplicated(dict[str, Any]):
    """A JSON object that named ``key`` more than once (the last value kept, as orjson does)."""

    key: str


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    seen: set[str] = set()
    marked = _Duplicated(obj)
    for key, _ in pairs:
        if key in seen:
            marked.key = key
            return marked
        seen.add(key)
    raise AssertionError("unreachable: fewer keys than pairs means a key repeats")  # pragma: no cover


def _check_duplicates(body: bytes) -> None:
    """Parse ``body`` (valid JSON) again, keeping duplicates; refuse one where a format reads it."""
    try:
        doc = json.loads(body.decode("utf-8"), object_pairs_hook=_pairs)
    except (ValueError, RecursionError):  # orjson read it: only nesting deeper than Python's limit
        raise PayloadError(400, "invalid_json", "the request body is nested too deeply") from None
    if isinstance(doc, _Duplicated):
        _duplicate(doc.key, "in the top-level object")
    if not isinstance(doc, dict):
        return
    for name in _FORMAT_KEYS:  # the objects the formats read; any other object is refused or ignored
        value = doc.get(name)
        where = _show(name)
        if isinstance(value, _Duplicated):
            one_record = name in _RECORD_KEYS and not any(isinstance(v, list) for v in value.values())
            _duplicate(value.key, f"in {where}, record 0" if one_record else f"in the {where} object")
        if name in _RECORD_KEYS and isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, _Duplicated):
                    _duplicate(item.key, f"in {where}, record {i}")


def _duplicate(key: str, where: str) -> NoReturn:
    raise PayloadError(
        400,
        "duplicate_key",
        f"duplicate key {_show(key)} {where}: name each key once per object "
        "(a JSON parser would silently keep only the last value)",
    )
