"""Keep secret values out of everything vintage writes.

Every value read from a secret provider is registered here. :func:`redact` replaces it, and its base64
(standard and url-safe, with and without padding) and URL-encoded forms, with ``[REDACTED]``. vintage runs
its CLI output, error messages, log records, pipeline step output and everything it logs to MLflow through
it.

Values shorter than :data:`MIN_SECRET_CHARS` are never secrets (the providers refuse them), so redaction
cannot eat ordinary text such as ``1`` or ``yes``.

The registry is process-wide: a secret read anywhere in the process is redacted everywhere in it.
"""

from __future__ import annotations

import base64
import io
import logging
import re
import threading
from typing import Any, TextIO
from urllib.parse import quote, quote_plus

REDACTED = "[REDACTED]"
MIN_SECRET_CHARS = 4

_lock = threading.Lock()
_values: set[str] = set()
_pattern: re.Pattern[str] | None = None


def encodings(value: str) -> set[str]:
    """The forms of ``value`` that are redacted: itself, base64 (std/url-safe, padded or not), URL-quoted."""
    raw = value.encode()
    forms = {value, quote(value, safe=""), quote_plus(value, safe=""), quote(value)}
    for enc in (base64.b64encode(raw), base64.urlsafe_b64encode(raw)):
        text = enc.decode()
        forms.update({text, text.rstrip("=")})
    return {f for f in forms if len(f) >= MIN_SECRET_CHARS}


def register(value: str) -> None:
    """Redact ``value`` (and its encodings) from now on. Values under MIN_SECRET_CHARS are ignored."""
    global _pattern
    if len(value) < MIN_SECRET_CHARS:
        return
    with _lock:
        new = encodings(value) - _values
        if not new:
            return
        _values.update(new)
        # Longest first, so a value that contains another one is replaced whole.
        alternatives = sorted(_values, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(v) for v in alternatives))


def redact(text: str) -> str:
    """``text`` with every registered secret form replaced by ``[REDACTED]``."""
    pattern = _pattern
    if pattern is None or not text:
        return text
    return pattern.sub(REDACTED, text)


def redact_data(value: Any) -> Any:
    """Redact every string inside nested dicts / lists / tuples (keys included)."""
    if _pattern is None:
        return value
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact_data(k): redact_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_data(v) for v in value)
    return value


def active() -> bool:
    """True once at least one secret was registered."""
    return _pattern is not None


def clear() -> None:
    """Forget every registered value (tests only)."""
    global _pattern
    with _lock:
        _values.clear()
        _pattern = None


class RedactingFilter(logging.Filter):
    """Logging filter that redacts the formatted message (and drops args so they cannot leak)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _pattern is not None:
            message = record.getMessage()
            record.msg = redact(message)
            record.args = None
            if record.exc_info and record.exc_info[1] is not None:
                # Format the traceback now, redacted, so handlers never format the raw one.
                import traceback

                record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)))
                record.exc_info = None
        return True


def install_logging_filter() -> None:
    """Attach :class:`RedactingFilter` to every handler of the root logger (idempotent)."""
    root = logging.getLogger()
    for handler in root.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


class RedactingStream(io.TextIOBase):
    """A text stream that redacts whatever is written through it before passing it on.

    Text is passed through line by line, so a secret split across two ``write`` calls of one line is
    still caught; a partial line is held until a newline or :meth:`flush`.
    """

    def __init__(self, target: TextIO) -> None:
        super().__init__()
        self._target = target
        self._pending = ""

    def write(self, text: str) -> int:
        self._pending += text
        if "\n" in self._pending:
            complete, _, self._pending = self._pending.rpartition("\n")
            self._target.write(redact(complete + "\n"))
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self._target.write(redact(self._pending))
            self._pending = ""
        self._target.flush()

    def isatty(self) -> bool:
        return self._target.isatty()

    def fileno(self) -> int:
        return self._target.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._target, "encoding", None) or "utf-8"  # io.StringIO's encoding is None

    def writable(self) -> bool:
        return True
