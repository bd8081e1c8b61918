"""Scope and key names, environment binding and ``${secret:scope/key}`` references.

A scope is ``NAME`` (shared: readable by every stage) or ``ENVIRONMENT/NAME`` (bound to an environment:
readable only by that environment's stages and servers, e.g. ``production/serving``). Names follow the
Databricks rules, slightly tightened so they map one to one onto Databricks scopes and environment
variable names:

- a scope segment: a letter or digit, then letters, digits, ``_`` or ``-``; at most 64 characters;
- a key: a letter or digit, then letters, digits, ``_``, ``-`` or ``.``; at most 128 characters;
- names starting with ``vintage`` or ``_`` are reserved;
- ``_``, ``-`` and ``.`` never come twice in a row nor at the end of a segment or key. Environment variables
  join the parts with ``__`` and turn ``-`` and ``.`` into ``_`` (``VINTAGE_SECRET__<ENV>__<SCOPE>__<KEY>``):
  without this rule the shared scope ``production`` with key ``serving__primary`` would read the variable of
  ``production/serving/primary``, another environment's secret. With it, ``__`` in a variable name is always
  a boundary between parts, so a variable belongs to exactly one scope, key and environment.

Names already stored under the old rules can still be read, listed and deleted with ``vintage secrets`` (the
``existing=True`` checks below), so they can be renamed; nothing else accepts them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vintage.errors import ConfigError

_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_DOUBLED = re.compile(r"[_.-]{2}|[_.-]$")  # "__" would read as a boundary between parts
RESERVED_PREFIXES = ("vintage", "_")
MAX_VALUE_BYTES = 128 * 1024  # Databricks' limit per secret

REF_PATTERN = re.compile(r"\$\{secret:([^}]*)\}")


@dataclass(frozen=True, order=True)
class Scope:
    """A validated scope name."""

    name: str

    @property
    def environment(self) -> str | None:
        """The environment the scope is bound to (``None`` = shared)."""
        env, sep, _ = self.name.partition("/")
        return env if sep else None

    @property
    def short(self) -> str:
        """The name without its environment."""
        return self.name.rpartition("/")[2]

    def __str__(self) -> str:
        return self.name


def _reserved(name: str) -> bool:
    return name.lower().startswith(RESERVED_PREFIXES)


RENAME_HINT = (
    "use one separator at a time, e.g. serving_primary; to rename a stored secret: `vintage secrets get -s "
    "SCOPE -k OLD > FILE`, `vintage secrets put -s SCOPE -k NEW --from-file FILE`, `vintage secrets delete "
    "-s SCOPE -k OLD`"
)


def _doubled(what: str) -> ConfigError:
    return ConfigError(
        f"{what} has '_', '-' or '.' twice in a row or at the end: environment variables join names with "
        "'__' and read '-' and '.' as '_', so it could name another scope's variable",
        hint=RENAME_HINT,
    )


def check_scope(name: str, *, existing: bool = False) -> Scope:
    """Validate a scope name (``NAME`` or ``ENVIRONMENT/NAME``).

    ``existing``: a name already in a store, being read, listed or deleted: the separator rule (no ``__``)
    is not applied, so a scope named under the old rules can still be emptied and removed.

    Raises:
        ConfigError: the name is malformed or reserved (the message says which rule it breaks).
    """
    parts = name.split("/")
    if len(parts) > 2:
        raise ConfigError(
            f"scope name {name!r} has more than one '/'",
            hint="use NAME (shared) or ENVIRONMENT/NAME, e.g. production/serving",
        )
    for part in parts:
        if not _SEGMENT.fullmatch(part):  # fullmatch: "$" would accept a trailing newline
            raise ConfigError(
                f"invalid scope name {name!r}: each part must start with a letter or digit and hold only "
                "letters, digits, '_' or '-' (at most 64 characters)",
                hint="e.g. azureml, staging/azureml, production/serving",
            )
        if _reserved(part):
            raise ConfigError(f"scope name {name!r} is reserved (names starting with 'vintage' or '_')")
        if not existing and _DOUBLED.search(part):
            raise _doubled(f"scope name {name!r}")
    return Scope(name)


def check_key(key: str, *, existing: bool = False) -> str:
    """Validate a key name (``existing``: as for :func:`check_scope`).

    Raises:
        ConfigError: the key is malformed or reserved.
    """
    if not _KEY.fullmatch(key):
        raise ConfigError(
            f"invalid secret key {key!r}: it must start with a letter or digit and hold only letters, "
            "digits, '_', '-' or '.' (at most 128 characters)"
        )
    if _reserved(key):
        raise ConfigError(f"secret key {key!r} is reserved (names starting with 'vintage' or '_')")
    if not existing and _DOUBLED.search(key):
        raise _doubled(f"secret key {key!r}")
    return key


@dataclass(frozen=True)
class SecretRef:
    """A reference to one secret: ``scope/key``."""

    scope: Scope
    key: str

    @classmethod
    def parse(cls, text: str) -> SecretRef:
        """Parse ``scope/key`` or ``environment/scope/key``.

        Raises:
            ConfigError: not a valid reference.
        """
        scope, sep, key = text.strip().rpartition("/")
        if not sep or not scope or not key:
            raise ConfigError(
                f"secret reference {text!r} must be scope/key",
                hint="e.g. ${secret:ci/databricks_token} or ${secret:production/azureml/client_secret}",
            )
        return cls(check_scope(scope), check_key(key))

    def __str__(self) -> str:
        return f"{self.scope}/{self.key}"


def find_refs(text: str) -> list[SecretRef]:
    """Every ``${secret:...}`` reference in ``text`` (validated)."""
    return [SecretRef.parse(m.group(1)) for m in REF_PATTERN.finditer(text)]


def check_value(value: str) -> str:
    """Check a value can be stored as a secret.

    Raises:
        ConfigError: too short to redact safely, too long, or empty.
    """
    from vintage.redact import MIN_SECRET_CHARS

    if len(value) < MIN_SECRET_CHARS:
        raise ConfigError(
            f"a secret value must have at least {MIN_SECRET_CHARS} characters "
            "(shorter values cannot be redacted safely from logs)",
        )
    if len(value.encode()) > MAX_VALUE_BYTES:
        raise ConfigError(f"a secret value may hold at most {MAX_VALUE_BYTES // 1024} KiB")
    return value
