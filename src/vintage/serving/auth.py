"""API keys: ``Authorization: Bearer <key>``, primary + secondary, compared in constant time, reloadable.

Keys come from a key file or from a secret scope:

- the key file holds one key per line (the first is the primary, the second the secondary; blank lines and
  ``#`` comments are ignored);
- a secret scope (``production/serving`` for the production environment) holds the keys ``primary`` and,
  optionally, ``secondary``; the server reads them as ``serve:<environment>``, so it can read only its own
  environment's scopes, and every read is in the audit trail.

Keys rotate without a restart: rewrite the file (or ``vintage secrets put`` a new value), then send SIGHUP or
call ``POST /admin/reload-keys``; the old key stops working at once.
"""

from __future__ import annotations

import hmac
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vintage.errors import ConfigError, ServingError

MIN_KEY_CHARS = 16
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
OPEN_FLAG = "--allow-unauthenticated-network-access"
PRIMARY, SECONDARY = "primary", "secondary"


@dataclass(frozen=True)
class ScopeKeys:
    """API keys kept in a secret scope (keys ``primary`` and optional ``secondary``).

    Attributes:
        scope: e.g. ``production/serving``.
        environment: the served environment; the server reads secrets as ``serve:<environment>``.
        state_dir: the project's state directory (local store, audit trail).
        secrets: the ``secrets`` settings of vintage.yaml (providers), as a plain mapping.
    """

    scope: str
    environment: str | None
    state_dir: str
    secrets: dict[str, object] = field(default_factory=dict)

    def to_json(self) -> str:
        """Serialised for the worker processes (holds no secret)."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ScopeKeys:
        """Inverse of :meth:`to_json`."""
        return cls(**json.loads(text))

    def read(self) -> list[str]:
        """The keys, primary first.

        Raises:
            ServingError / SecretError: the primary key is missing, or the scope may not be read.
        """
        from vintage.config.models import SecretsSpec
        from vintage.errors import SecretError
        from vintage.secrets.access import SecretReader

        reader = SecretReader.from_spec(
            SecretsSpec.model_validate(self.secrets),
            Path(self.state_dir),
            reader=f"serve:{self.environment or '-'}",
            environment=self.environment,
        )
        try:
            keys = [reader.get(f"{self.scope}/{PRIMARY}")]
        except SecretError as exc:
            if type(exc) is not SecretError:
                raise  # access denied: say so as it is
            raise ServingError(
                f"no API key in scope {self.scope} (key {PRIMARY!r}): {exc.headline}",
                hint=f"create one: vintage secrets put --scope {self.scope} --key {PRIMARY} --generate",
            ) from exc
        try:
            keys.append(reader.get(f"{self.scope}/{SECONDARY}"))
        except SecretError as exc:
            if type(exc) is not SecretError:
                raise
        return keys


class ApiKeys:
    """The keys the server accepts; empty = no authentication."""

    def __init__(self, keys: list[str] | None = None, source: Path | ScopeKeys | None = None) -> None:
        self._keys: tuple[bytes, ...] = tuple(k.encode() for k in (keys or []))
        self._source = source

    @classmethod
    def from_file(cls, path: Path) -> ApiKeys:
        """Read keys from ``path`` (mode must not be readable by others)."""
        keys = cls(source=path)
        keys.reload()
        return keys

    @classmethod
    def from_scope(cls, source: ScopeKeys) -> ApiKeys:
        """Read keys from a secret scope."""
        keys = cls(source=source)
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
        if isinstance(self._source, ScopeKeys):
            self._keys = tuple(k.encode() for k in self._check(self._source.read()))
            return len(self._keys)
        try:
            info = self._source.stat()
            text = self._source.read_text(encoding="utf-8")
        except OSError as exc:
            raise ServingError(f"cannot read the API key file {self._source.name}: {exc.strerror}") from exc
        if os.name == "posix" and not _private(info):
            raise ServingError(
                f"API key file {self._source.name} is readable by other users",
                hint=f"chmod 600 {self._source.name}",
            )
        keys = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
        if not keys:
            raise ServingError(f"API key file {self._source.name} holds no key")
        self._keys = tuple(k.encode() for k in self._check(keys[:2]))
        return len(self._keys)

    @staticmethod
    def _check(keys: list[str]) -> list[str]:
        if any(len(k) < MIN_KEY_CHARS for k in keys):
            raise ServingError(f"API keys must have at least {MIN_KEY_CHARS} characters")
        return keys

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


def check_exposure(host: str, has_keys: bool, allowed: bool) -> None:
    """A server without API keys listens on loopback only, unless explicitly allowed.

    Raises:
        ConfigError: a non-loopback ``host`` without keys and without the explicit flag.
    """
    if has_keys or allowed or host in LOOPBACK_HOSTS or host.startswith("127."):
        return
    raise ConfigError(
        f"refusing to serve on {host} without API keys: anyone who can reach that address could score",
        hint=f"give --api-key-file or --api-key-scope, bind 127.0.0.1, or pass {OPEN_FLAG} if this is meant",
    )


def _private(info: os.stat_result) -> bool:
    """A key file no other user may read or change: nothing for others, and at most read for the group
    when that group is the server's own (not root's): how Kubernetes hands a Secret to a pod's group
    (``fsGroup``: the file is root's, mode 0440, group the pod's)."""
    mode = info.st_mode
    if mode & 0o037:
        return False
    return not mode & 0o040 or (info.st_gid == os.getegid() != 0)
