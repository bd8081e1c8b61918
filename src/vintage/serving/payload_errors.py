"""Errors of the payload parser, and the short, safe excerpts of offending values they show."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NoReturn

import orjson

SHOW_CHARS = 60  # longest excerpt of an offending value or name; well under the 200-char promise
LIST_NAMES = 10  # at most this many column names in one message


class PayloadError(Exception):
    """A request the server refuses: HTTP status, machine code, message, details.

    Every offending value that appears in ``message`` or ``details`` is cut to at most
    :data:`SHOW_CHARS` characters; the request body itself is never echoed.
    """

    def __init__(self, status: int, code: str, message: str, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = printable(message)
        self.details = [printable(d) for d in details or []]

    def to_json(self) -> bytes:
        """The error as the response body: ``{"error": {"code", "message", "details"}}``."""
        return orjson.dumps({"error": {"code": self.code, "message": self.message, "details": self.details}})


def bad(message: str) -> NoReturn:
    """Refuse a body of the wrong shape (400 bad_format)."""
    raise PayloadError(400, "bad_format", message)


def empty() -> NoReturn:
    """Refuse a body without rows (400 empty)."""
    raise PayloadError(400, "empty", "the request holds no rows")


def check_count(rows: int, max_rows: int) -> None:
    """Refuse more rows than the limit (413 too_many_rows)."""
    if rows > max_rows:
        raise PayloadError(413, "too_many_rows", f"{rows} rows in one request; the limit is {max_rows}")


def show(value: Any) -> str:
    """A short, safe excerpt of an offending value (never its full text, never deep recursion)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return f"a list of {count(len(value), 'item')}"
    if isinstance(value, dict):
        return f"an object with {count(len(value), 'key')}"
    return clip(repr(value))


def count(n: int, noun: str) -> str:
    """``1 item`` / ``2 items``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def clip(text: str, limit: int = SHOW_CHARS) -> str:
    """At most ``limit`` characters."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def names(names: Sequence[Any], limit: int = LIST_NAMES) -> str:
    """A short list of names (``a, b and 3 more``)."""
    shown = ", ".join(show(n) for n in names[:limit])
    more = len(names) - limit
    return f"{shown} and {more} more" if more > 0 else shown


def kind(value: Any) -> str:
    """What a value is, for a message (``a string ('x')``, ``null``)."""
    if value is None:
        return "null"
    if isinstance(value, bool | int | float):
        return f"a number ({show(value)})" if not isinstance(value, bool) else show(value)
    if isinstance(value, str):
        return f"a string ({show(value)})"
    return show(value)


def printable(text: str) -> str:
    """Text orjson can encode (lone surrogates from a JSON body become escapes)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
