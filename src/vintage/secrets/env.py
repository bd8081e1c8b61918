"""Read-only secrets from environment variables, the way CI systems hand them to a job.

``VINTAGE_SECRET__<SCOPE>__<KEY>`` holds ``scope/key``; an environment-bound scope adds its environment:
``VINTAGE_SECRET__<ENVIRONMENT>__<SCOPE>__<KEY>``: ``${secret:ci/databricks_token}`` reads
``VINTAGE_SECRET__CI__DATABRICKS_TOKEN`` and ``${secret:production/azureml/client_secret}`` reads
``VINTAGE_SECRET__PRODUCTION__AZUREML__CLIENT_SECRET``.

The mapping is one to one. Names never hold ``__`` (:mod:`vintage.secrets.names`), so ``__`` in a variable
name always separates parts and a variable belongs to one scope and one environment. A variable holds the
secret of the lower-case name it spells: ``client-secret``, ``Client_Secret`` and ``client.secret`` would
all read ``..._CLIENT_SECRET``, so only ``client_secret`` may; the others get an error naming the variable
when it is set. :meth:`EnvProvider.binding` tells the reader which environment the variable it would read
belongs to, so the environment check is made on the variable itself.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Self

from vintage.errors import SecretError
from vintage.secrets.base import ScopeInfo, SecretInfo, read_only
from vintage.secrets.names import Scope

if TYPE_CHECKING:
    from vintage.config.models import SecretsSpec

PREFIX = "VINTAGE_SECRET__"


def _part(name: str) -> str:
    return name.upper().replace("-", "_").replace(".", "_")


def variable(scope: Scope, key: str) -> str:
    """The environment variable that holds ``scope/key``."""
    return PREFIX + "__".join(_part(p) for p in (*scope.name.split("/"), key))


def _parts(var: str) -> list[str]:
    return var[len(PREFIX) :].split("__")


def owner(var: str) -> str:
    """The ``scope/key`` name whose secret ``var`` holds: its parts, lower-cased."""
    return "/".join(_parts(var)).lower()


class EnvProvider:
    """Secrets from ``VINTAGE_SECRET__...`` variables (read-only)."""

    name = "env"
    writable = False

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        self._environ = environ

    @classmethod
    def from_spec(cls, spec: SecretsSpec | None, state_dir: Path) -> Self:
        """Reads this process's environment (nothing to configure)."""
        return cls()

    @property
    def environ(self) -> dict[str, str]:
        return dict(os.environ) if self._environ is None else self._environ

    def _entries(self) -> list[tuple[str, str, str]]:
        """(scope, key, variable) for every well-formed variable; scopes lower-cased."""
        found = []
        for var in self.environ:
            if not var.startswith(PREFIX):
                continue
            parts = var[len(PREFIX) :].split("__")
            if len(parts) not in (2, 3) or not all(parts):
                continue
            found.append(("/".join(parts[:-1]).lower(), parts[-1].lower(), var))
        return sorted(found)

    def list_scopes(self) -> list[ScopeInfo]:
        counts: dict[str, int] = {}
        for scope, _, _ in self._entries():
            counts[scope] = counts.get(scope, 0) + 1
        return [ScopeInfo(s, Scope(s).environment, n, self.name) for s, n in sorted(counts.items())]

    def list_keys(self, scope: Scope) -> list[SecretInfo]:
        prefix = variable(scope, "x")[:-1]
        return [
            SecretInfo(var[len(prefix) :].lower())
            for var in sorted(self.environ)
            if var.startswith(prefix) and var[len(prefix) :] and "__" not in var[len(prefix) :]
        ]

    def binding(self, scope: Scope, key: str) -> str | None:
        """The environment of the variable ``get`` reads for ``scope/key`` (``None``: a shared scope's).

        Taken from the variable name itself: with three or more parts, its first part (``scope.environment``
        when it spells that). It differs from ``scope.environment`` only for a name that breaks the naming
        rules (say key ``serving__primary`` of the shared scope ``production``); the reader then refuses.
        """
        parts = _parts(variable(scope, key))
        if len(parts) < 3:
            return None
        if scope.environment is not None and parts[0] == _part(scope.environment):
            return scope.environment
        return parts[0].lower()

    def get(self, scope: Scope, key: str) -> str | None:
        """The value of ``scope/key``; ``None`` when its variable is not set.

        Raises:
            SecretError: the variable is set but holds the secret of another name (case, ``-`` or ``.``),
                or the CI's own unexpanded reference to it (Azure's ``$(NAME)`` for a variable it lacks).
        """
        var = variable(scope, key)
        value = self.environ.get(var)
        if value is None:
            return None
        if value.strip() in (f"$({var})", f"${{{{ secrets.{var} }}}}"):
            # A CI passes a reference it cannot resolve as its text (Azure: `$(NAME)` for an undefined NAME).
            raise SecretError(
                f"{var} holds the unexpanded CI reference {value.strip()!r}: the CI does not define it",
                hint=f"define the secret variable {var} in the CI (docs/ci.md)",
            )
        if (name := owner(var)) != f"{scope}/{key}":
            raise SecretError(
                f"{var} holds secret {name}, not {scope}/{key}: environment variable names cannot tell "
                "upper- from lower-case, nor '-' or '.' from '_'",
                hint=f"refer to it as ${{secret:{name}}} (and use that name in every provider)",
            )
        return value

    def create_scope(self, scope: Scope) -> None:
        raise read_only(self.name)

    def delete_scope(self, scope: Scope) -> None:
        raise read_only(self.name)

    def put(self, scope: Scope, key: str, value: str) -> None:
        raise read_only(self.name)

    def delete(self, scope: Scope, key: str) -> None:
        raise read_only(self.name)
