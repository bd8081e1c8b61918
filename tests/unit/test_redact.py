"""The redactor: registered secret values (and their encodings) never leave vintage in clear."""

from __future__ import annotations

import base64
import io
import logging
import sys
from urllib.parse import quote, quote_plus

import pytest

from vintage import redact
from vintage.errors import SecretError, VintageError, first_line

# URL-encodes (space, '/', '+', '?', '&', '=', non-ASCII) and base64-encodes with '==' padding and with
# characters that differ between the standard ('+') and url-safe ('-') alphabets.
SECRET = "p@ss w/rd+?&=é~>>?"
RAW = SECRET.encode()

FORMS = {
    "plain": SECRET,
    "quote-all": quote(SECRET, safe=""),
    "quote-plus": quote_plus(SECRET, safe=""),
    "quote-path": quote(SECRET),
    "b64": base64.b64encode(RAW).decode(),
    "b64-unpadded": base64.b64encode(RAW).decode().rstrip("="),
    "b64url": base64.urlsafe_b64encode(RAW).decode(),
    "b64url-unpadded": base64.urlsafe_b64encode(RAW).decode().rstrip("="),
}


def test_the_value_exercises_every_encoding() -> None:
    assert len(set(FORMS.values())) == len(FORMS)  # eight distinct forms
    assert FORMS["b64"].endswith("==")
    assert "+" in FORMS["b64"] and "-" in FORMS["b64url"]
    assert "%20" in FORMS["quote-all"] and "+" in FORMS["quote-plus"] and "/" in FORMS["quote-path"]


def test_encodings() -> None:
    assert redact.encodings(SECRET) == set(FORMS.values())


@pytest.mark.parametrize("form", sorted(FORMS))
def test_every_form_redacted(form: str) -> None:
    text = f"before {FORMS[form]} after"
    assert redact.redact(text) == text  # nothing registered yet
    redact.register(SECRET)
    assert redact.redact(text) == "before [REDACTED] after"


def test_every_occurrence_redacted() -> None:
    redact.register("abcd-1234")
    assert redact.redact("abcd-1234abcd-1234 x abcd-1234") == "[REDACTED][REDACTED] x [REDACTED]"


def test_regex_characters_are_literal() -> None:
    redact.register("a.b*c(d)")
    assert redact.redact("aXbbbcd") == "aXbbbcd"
    assert redact.redact("v=a.b*c(d)") == "v=[REDACTED]"


def test_longest_first() -> None:
    redact.register("abcd")
    redact.register("abcdefgh")
    assert redact.redact("xabcdefghx") == "x[REDACTED]x"
    assert redact.redact("xabcdx") == "x[REDACTED]x"
    # Registration order does not matter.
    redact.clear()
    redact.register("abcdefgh")
    redact.register("abcd")
    assert redact.redact("xabcdefghx") == "x[REDACTED]x"


def test_short_values_ignored() -> None:
    for value in ("", "a", "yes", "123"):
        redact.register(value)
    assert not redact.active()
    assert redact.redact("yes 123 a") == "yes 123 a"
    redact.register("1234")
    assert redact.active()
    assert redact.redact("a1234b yes") == "a[REDACTED]b yes"


def test_short_encodings_ignored() -> None:
    # "abcd": every form has >= 4 characters; a 4-character value's base64 ("YWJjZA") is kept too.
    assert "YWJjZA" in redact.encodings("abcd")
    assert all(len(f) >= redact.MIN_SECRET_CHARS for f in redact.encodings("abcd"))


def test_clear() -> None:
    redact.register(SECRET)
    assert redact.active()
    redact.clear()
    assert not redact.active()
    assert redact.redact(SECRET) == SECRET
    assert redact.redact_data({"k": SECRET}) == {"k": SECRET}


def test_empty_text() -> None:
    redact.register(SECRET)
    assert redact.redact("") == ""


def test_redact_data_nested() -> None:
    redact.register(SECRET)
    data = {
        "url": f"https://u:{quote(SECRET, safe='')}@host",
        SECRET: [1, None, 2.5, True, (f"x{SECRET}", {"deep": [FORMS["b64"]]})],
        "plain": "nothing to hide",
    }
    assert redact.redact_data(data) == {
        "url": "https://u:[REDACTED]@host",
        "[REDACTED]": [1, None, 2.5, True, ("x[REDACTED]", {"deep": ["[REDACTED]"]})],
        "plain": "nothing to hide",
    }
    assert isinstance(redact.redact_data(data)[redact.REDACTED][4], tuple)
    assert data["plain"] == "nothing to hide" and SECRET in data  # input untouched


def test_redact_data_without_secrets_returns_input() -> None:
    data = {"a": ["b"]}
    assert redact.redact_data(data) is data


# ------------------------------------------------------------------------------------------ streams


def test_stream_value_split_across_writes() -> None:
    redact.register("abcdefgh")
    target = io.StringIO()
    stream = redact.RedactingStream(target)
    assert stream.write("token=abcd") == len("token=abcd")
    assert target.getvalue() == ""  # the partial line is held
    stream.write("efgh rest\nnext ")
    assert target.getvalue() == "token=[REDACTED] rest\n"
    stream.write("abcd")
    stream.write("efgh\n")
    assert target.getvalue() == "token=[REDACTED] rest\nnext [REDACTED]\n"


def test_stream_flush_partial_line() -> None:
    redact.register("abcdefgh")
    target = io.StringIO()
    stream = redact.RedactingStream(target)
    stream.write("tail abcd")
    stream.write("efgh")
    assert target.getvalue() == ""
    stream.flush()
    assert target.getvalue() == "tail [REDACTED]"
    stream.flush()  # nothing pending: nothing written twice
    assert target.getvalue() == "tail [REDACTED]"


def test_stream_many_lines_and_print() -> None:
    redact.register(SECRET)
    target = io.StringIO()
    stream = redact.RedactingStream(target)
    print(f"a {SECRET}\nb {FORMS['b64url-unpadded']}", file=stream)
    print("c", FORMS["quote-plus"], end="", file=stream)
    stream.close()  # closing flushes what is pending
    assert target.getvalue() == "a [REDACTED]\nb [REDACTED]\nc [REDACTED]"
    assert SECRET not in target.getvalue()


def test_stream_properties() -> None:
    target = io.StringIO()
    stream = redact.RedactingStream(target)
    assert stream.writable()
    assert not stream.isatty()
    assert stream.encoding == "utf-8"
    stream.write("no secrets\n")
    assert target.getvalue() == "no secrets\n"


# ------------------------------------------------------------------------------------------ logging


@pytest.fixture
def log() -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(redact.RedactingFilter())
    logger = logging.getLogger("vintage.tests.redact")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, out


def test_filter_message_with_args(log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = log
    redact.register(SECRET)
    logger.info("connecting with %s and %r", SECRET, {"token": FORMS["b64"]})
    assert out.getvalue() == "INFO connecting with [REDACTED] and {'token': '[REDACTED]'}\n"


def test_filter_exception_traceback(log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = log
    redact.register(SECRET)
    try:
        raise ValueError(f"bad credentials {SECRET}")
    except ValueError:
        logger.exception("login failed for %s", FORMS["quote-all"])
    text = out.getvalue()
    assert "login failed for [REDACTED]" in text
    assert "Traceback" in text
    assert "ValueError: bad credentials [REDACTED]" in text
    for form in FORMS.values():
        assert form not in text


def test_filter_rewrites_the_record() -> None:
    """Handlers that format records themselves must find nothing raw left on the record."""
    redact.register(SECRET)
    try:
        raise RuntimeError(SECRET)
    except RuntimeError:
        exc_info = sys.exc_info()
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "v=%s", (SECRET,), exc_info)
    assert redact.RedactingFilter().filter(record)
    assert record.msg == "v=[REDACTED]"
    assert record.args is None
    assert record.exc_info is None
    assert record.exc_text is not None
    assert "RuntimeError: [REDACTED]" in record.exc_text
    assert SECRET not in record.exc_text


def test_filter_without_secrets_keeps_record(log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = log
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "a %s", ("b",), None)
    assert redact.RedactingFilter().filter(record)
    assert record.args == ("b",)
    logger.info("plain %s", "text")
    assert out.getvalue() == "INFO plain text\n"


def test_install_logging_filter(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [handler])
    redact.install_logging_filter()
    redact.install_logging_filter()
    assert sum(isinstance(f, redact.RedactingFilter) for f in handler.filters) == 1
    redact.register(SECRET)
    logging.getLogger("vintage.tests.install").warning("value %s", SECRET)
    assert out.getvalue() == "value [REDACTED]\n"


# ------------------------------------------------------------------------------------------- errors


def test_vintage_error_redacted() -> None:
    redact.register(SECRET)
    exc = SecretError(
        f"cannot use {SECRET}", hint=f"try {FORMS['b64']}", details=[f"row {FORMS['quote-plus']}", "ok"]
    )
    assert exc.headline == "cannot use [REDACTED]"
    assert str(exc) == "cannot use [REDACTED]"
    assert exc.args == ("cannot use [REDACTED]",)
    assert exc.hint == "try [REDACTED]"
    assert exc.details == ["row [REDACTED]", "ok"]
    assert VintageError("no hint").hint is None


def test_first_line_redacted() -> None:
    redact.register(SECRET)
    assert first_line(RuntimeError(f"{SECRET} leaked\nsecond line")) == "[REDACTED] leaked"
    assert first_line(RuntimeError(f"url=https://x/?t={FORMS['quote-all']}")) == "url=https://x/?t=[REDACTED]"
    assert first_line(RuntimeError("")) == "RuntimeError"
