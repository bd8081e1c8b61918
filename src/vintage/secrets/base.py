"""What every secret provider offers (local store, environment variables, Databricks scopes)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, Self

from vintage.errors import SecretError
from vintage.secrets.names import Scope

if TYPE_CHECKING:
    from vintage.config.models import SecretsSpec


@dataclass(frozen=True)
class ScopeInfo:
    """A scope as listed: never its values."""

    name: str
    environment: str | None
    keys: int | None
    backend: str


@dataclass(frozen=True)
class SecretInfo:
    """A key as listed: never its value."""

    key: str
    created: str | None = None
    updated: str | None = None


class Provider(Protocol):
    """A place secrets live. ``get`` returns ``None`` for a missing key (or scope)."""

    name: str
    writable: bool

    @classmethod
    def from_spec(cls, spec: SecretsSpec | None, state_dir: Path) -> Self:
        """The provider as vintage.yaml's ``secrets`` settings configure it (``None``: the defaults)."""
        ...

    def list_scopes(self) -> list[ScopeInfo]: ...

    def create_scope(self, scope: Scope) -> None: ...

    def delete_scope(self, scope: Scope) -> None: ...

    def list_keys(self, scope: Scope) -> list[SecretInfo]: ...

    def get(self, scope: Scope, key: str) -> str | None: ...

    def put(self, scope: Scope, key: str, value: str) -> None: ...

    def delete(self, scope: Scope, key: str) -> None: ...


def read_only(provider: str) -> SecretError:
    """The error for a write to a read-only provider."""
    return SecretError(
        f"the {provider} provider is read-only",
        hint="write to the local store (--provider local) or to the CI system's secret settings",
    )


def no_scope(scope: Scope, provider: str) -> SecretError:
    """The error for a scope that does not exist."""
    return SecretError(
        f"scope {scope} does not exist in the {provider} provider",
        hint=f"create it with `vintage secrets create-scope {scope}`",
    )


def no_key(scope: Scope, key: str, provider: str) -> SecretError:
    """The error for a key that does not exist."""
    return SecretError(
        f"secret {scope}/{key} does not exist in the {provider} provider",
        hint=f"list the keys with `vintage secrets list --scope {scope}`",
    )
