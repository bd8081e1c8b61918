"""errors.first_line: how a library exception becomes part of a one-line headline."""

from __future__ import annotations

from vintage.errors import ConfigError, VintageError, first_line


def test_first_line_takes_the_first_line_and_cuts_it() -> None:
    assert first_line(ValueError("bad thing\nTraceback details\nmore")) == "bad thing"
    assert first_line(ValueError("x" * 1000), limit=10) == "x" * 10


def test_first_line_of_an_empty_message_is_the_class_name() -> None:
    assert first_line(RuntimeError()) == "RuntimeError"
    assert first_line(KeyError("")) == "''"  # str(KeyError('')) is "''": not empty


def test_exit_codes_by_domain() -> None:
    assert VintageError("x").exit_code == 1
    assert ConfigError("x").exit_code == 2
