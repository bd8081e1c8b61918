"""Read-only secrets from environment variables, the way CI systems hand them to a job.

``VINTAGE_SECRET__<SCOPE>__<KEY>`` holds ``scope/key``; an environment-bound scope adds its environment:
``VINTAGE_SECRET__<ENVIRONMENT>__<SCOPE>__<KEY>``. Names are upper-cased and ``-`` / ``.`` become ``_``:
``${secret:ci/databricks_token}`` reads ``VINTAGE_SECRET__CI__DATABRICKS_TOKEN`` and
``${secret:production/azureml/client-secret}`` reads ``VINTAGE_SECRET__PRODUCTION__AZUREML__CLIENT_SECRET``.

Listing turns variable names back into lower-case names (the mapping is not reversible for case, ``-``
and ``.``); lookups are exact.
"""

from __future__ import annotations

import os

from vintage.secrets.base import ScopeInfo, SecretInfo, read_only
from vintage.secrets.names import Scope

PREFIX = "VINTAGE_SECRET__"


def _part(name: str) -> str:
    return name.upper().replace("-", "_").replace(".", "_")


def variable(scope: Scope, key: str) -> str:
    """The environment variable that holds ``scope/key``."""
    return PREFIX + "__".join(_part(p) for p in (*scope.name.split("/"), key))


class EnvProvider:
    """Secrets from ``VINTAGE_SECRET__...`` variables (read-only)."""

    name = "env"
    writable = False

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        self._environ = environ

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

    def get(self, scope: Scope, key: str) -> str | None:
        return self.environ.get(variable(scope, key))

    def create_scope(self, scope: Scope) -> None:
        raise read_only(self.name)

    def delete_scope(self, scope: Scope) -> None:
        raise read_only(self.name)

    def put(self, scope: Scope, key: str, value: str) -> None:
        raise read_only(self.name)

    def delete(self, scope: Scope, key: str) -> None:
        raise read_only(self.name)
