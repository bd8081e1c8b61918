"""API keys: ``Authorization: Bearer <key>``, primary + secondary, compared in constant time, reloadable.

The key file holds one key per line (the first is the primary, the second the secondary; blank lines and
``#`` comments are ignored). Keys rotate without a restart: rewrite the file, then send SIGHUP or call
``POST /admin/reload-keys``; the old key stops working at once.
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path

from vintage.errors import ServingError

MIN_KEY_CHARS = 16


class ApiKeys:
    """The keys the server accepts; empty = no authentication."""

    def __init__(self, keys: list[str] | None = None, source: Path | None = None) -> None:
        self._keys: tuple[bytes, ...] = tuple(k.encode() for k in (keys or []))
        self._source = source

    @classmethod
    def from_file(cls, path: Path) -> ApiKeys:
        """Read keys from ``path`` (mode must not be readable by others)."""
        keys = cls(source=path)
        keys.reload()
        return keys

    @property
    def required(self) -> bool:
        """True when requests must present a key."""
        return bool(self._keys)

    def reload(self) -> int:
        """Re-read the key file; returns the number of keys. A bad file keeps the old keys.

        Raises:
            ServingError: the file is missing, unreadable, world-readable, empty or holds a short key.
        """
        if self._source is None:
            return len(self._keys)
        try:
            mode = self._source.stat().st_mode
            text = self._source.read_text(encoding="utf-8")
        except OSError as exc:
            raise ServingError(f"cannot read the API key file {self._source.name}: {exc.strerror}") from exc
        if mode & 0o077 and os.name == "posix":
            raise ServingError(
                f"API key file {self._source.name} is readable by other users",
                hint=f"chmod 600 {self._source.name}",
            )
        keys = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
        if not keys:
            raise ServingError(f"API key file {self._source.name} holds no key")
        if any(len(k) < MIN_KEY_CHARS for k in keys):
            raise ServingError(f"API keys must have at least {MIN_KEY_CHARS} characters")
        self._keys = tuple(k.encode() for k in keys[:2])
        return len(self._keys)

    def check(self, authorization: bytes | None) -> bool:
        """True when the ``Authorization`` header value carries an accepted key (or none is required)."""
        if not self._keys:
            return True
        if not authorization or authorization[:7].lower() != b"bearer ":
            return False
        presented = authorization[7:].strip()
        ok = False
        for key in self._keys:  # compare against every key, so timing does not tell which one matched
            ok |= hmac.compare_digest(presented, key)
        return ok
