"""Secrets in Databricks secret scopes, through the official databricks-sdk (Secrets API 2.0).

Scope names map one to one: the vintage scope ``ENVIRONMENT/NAME`` is the Databricks scope
``ENVIRONMENT.NAME`` (Databricks scope names cannot hold ``/``; vintage scope segments cannot hold ``.``)
and a shared scope ``NAME`` is ``NAME``. Listing maps them back and skips Databricks scopes that are not
valid vintage names.

Credentials come only from databricks-sdk's unified authentication: ``DATABRICKS_HOST`` /
``DATABRICKS_TOKEN`` (or another method it supports), or a profile of ``~/.databrickscfg``.
vintage.yaml may name the host (``secrets.databricks.host``) and the profile
(``secrets.databricks.profile``), never a token.

The SDK retries connection failures and throttling for up to five minutes by default; this provider
gives each request a few seconds and the retries about one second in total, so an unreachable workspace
fails fast. databricks-sdk is imported only when the provider is first used.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Self, TypeVar

from vintage.errors import ConfigError, SecretError, VintageError, first_line
from vintage.secrets.base import ScopeInfo, SecretInfo, no_key, no_scope
from vintage.secrets.names import Scope, check_key, check_scope

if TYPE_CHECKING:
    from databricks.sdk import WorkspaceClient

    from vintage.config.models import SecretsSpec

HTTP_TIMEOUT_S = 5.0
"""Timeout of one HTTP request (connect and read)."""
RETRY_BUDGET_S = 1
"""Time the SDK may spend retrying a failed request (it must be a positive whole number of seconds)."""
MAX_BACKOFF_S = 0.5
"""Longest pause between two retries, whatever the SDK or a ``Retry-After`` header asks for."""

CREDENTIAL_VARIABLES = ("DATABRICKS_TOKEN", "DATABRICKS_CLIENT_SECRET", "DATABRICKS_PASSWORD")
SETUP_HINT = (
    "set DATABRICKS_HOST and DATABRICKS_TOKEN (or secrets.databricks.host / secrets.databricks.profile in "
    "vintage.yaml with a ~/.databrickscfg profile); the token is never read from vintage.yaml"
)
CREDENTIALS_HINT = "check DATABRICKS_TOKEN (or the profile's credentials) is valid for DATABRICKS_HOST"
_INSTALL_HINT = "install it: pip install databricks-sdk"

T = TypeVar("T")


def remote_scope(scope: Scope) -> str:
    """The Databricks scope name of a vintage scope: ``staging/azureml`` -> ``staging.azureml``.

    Raises:
        ConfigError: the scope name holds a ``.`` (not a valid vintage scope).
    """
    if "." in scope.name:
        raise ConfigError(f"scope name {scope.name!r} cannot be stored in Databricks: it holds a '.'")
    return scope.name.replace("/", ".")


def local_scope(name: str) -> Scope | None:
    """The vintage scope of a Databricks scope name (``staging.azureml`` -> ``staging/azureml``).

    Returns ``None`` for a name that is no valid vintage scope (more than one ``.``, other characters,
    reserved prefixes): such scopes were not made by vintage and cannot be read through it.
    """
    try:
        return check_scope(name.replace(".", "/"))
    except ConfigError:
        return None


def _iso_ms(value: Any) -> str | None:
    """ISO-8601 UTC time of a millisecond timestamp (the API sends a number, its docs show a string)."""
    try:
        ms = int(value)
    except (TypeError, ValueError):
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


class DatabricksProvider:
    """Secrets in Databricks secret scopes (read and write).

    Args:
        host: Workspace URL; ``None`` lets databricks-sdk read ``DATABRICKS_HOST`` or the profile.
        profile: A ``~/.databrickscfg`` profile; ``None`` lets databricks-sdk read
            ``DATABRICKS_CONFIG_PROFILE`` (or use ``DEFAULT`` when nothing else is configured).
        client: A ready ``databricks.sdk.WorkspaceClient`` (tests); built on first use when ``None``.
    """

    name = "databricks"
    writable = True

    def __init__(self, host: str | None = None, profile: str | None = None, client: Any = None) -> None:
        self.host = host
        self.profile = profile
        self._ws: Any = client

    @classmethod
    def from_spec(cls, spec: SecretsSpec | None, state_dir: Path) -> Self:
        """The workspace of ``secrets.databricks`` (host, profile); the token comes from databricks-sdk."""
        db = spec.databricks if spec is not None else None
        return cls(host=db.host if db else None, profile=db.profile if db else None)

    # ------------------------------------------------------------------------------------------------
    # The SDK client
    # ------------------------------------------------------------------------------------------------

    def _client(self) -> WorkspaceClient:
        """The workspace client, built on first use with short timeouts and retries.

        Raises:
            ConfigError: databricks-sdk is missing, or no host / credentials are configured.
        """
        if self._ws is None:
            self._ws = self._build()
        client: WorkspaceClient = self._ws
        return client

    def _build(self) -> WorkspaceClient:
        from vintage.databricks_sdk import workspace_client

        try:
            client = workspace_client(
                http_timeout_s=HTTP_TIMEOUT_S,
                retry_budget_s=RETRY_BUDGET_S,
                max_pause_s=MAX_BACKOFF_S,
                host=self.host,
                profile=self.profile,
            )
        except ImportError as exc:
            raise ConfigError(
                "the databricks secret provider needs the databricks-sdk package", hint=_INSTALL_HINT
            ) from exc
        except ValueError as exc:
            raise ConfigError(
                f"cannot configure the Databricks client: {_message(exc)}", hint=SETUP_HINT
            ) from exc
        if not client.config.host:
            raise ConfigError("no Databricks workspace host is configured", hint=SETUP_HINT)
        return client

    def _call(
        self,
        what: str,
        call: Callable[[WorkspaceClient], T],
        hide: str = "",
        **errors: Callable[[], VintageError],
    ) -> T:
        """Run one SDK call and turn its failures into vintage errors.

        Args:
            what: What was attempted, naming the scope or key (``reading secret staging/azureml/id``).
            call: The SDK call.
            hide: A value that must not appear in a message (the value being written).
            errors: Replacement errors for some failures: ``missing`` (RESOURCE_DOES_NOT_EXIST),
                ``exists`` (RESOURCE_ALREADY_EXISTS).
        """
        client = self._client()
        try:
            return call(client)
        except Exception as exc:
            self._fail(what, exc, errors, hide)

    def _fail(
        self, what: str, exc: Exception, errors: dict[str, Callable[[], VintageError]], hide: str = ""
    ) -> NoReturn:
        """Raise the vintage error for a failed SDK call (re-raise what is not the SDK's)."""
        import requests
        from databricks.sdk import errors as dbx
        from databricks.sdk.errors.base import DatabricksError

        cause = type(exc).__name__
        message = _message(exc, [*self._credentials(), hide])
        if isinstance(exc, dbx.ResourceDoesNotExist) and "missing" in errors:
            raise errors["missing"]() from exc
        if isinstance(exc, dbx.ResourceAlreadyExists) and "exists" in errors:
            raise errors["exists"]() from exc
        if isinstance(exc, dbx.Unauthenticated):
            raise SecretError(
                f"{what} failed: Databricks did not accept the credentials ({cause}: {message})",
                hint=CREDENTIALS_HINT,
            ) from exc
        if isinstance(exc, dbx.PermissionDenied):
            raise SecretError(
                f"{what} failed: permission denied ({cause}: {message})",
                hint="the user or service principal needs an ACL on the scope (READ to read, WRITE to put "
                f"or delete, MANAGE for the scope itself); an invalid token is also refused: "
                f"{CREDENTIALS_HINT}",
            ) from exc
        if isinstance(exc, DatabricksError):
            raise SecretError(
                f"{what} failed ({cause}: {message})",
                hint="check DATABRICKS_HOST points at a Databricks workspace and the names are valid",
            ) from exc
        reason = exc.__cause__ if isinstance(exc, TimeoutError | RuntimeError) and exc.__cause__ else exc
        if isinstance(reason, requests.RequestException | OSError):
            raise SecretError(
                f"{what} failed: cannot reach the Databricks workspace at {self._host()} "
                f"({type(reason).__name__})",
                hint="check DATABRICKS_HOST (or secrets.databricks.host) and the network",
            ) from exc
        if isinstance(exc, ValueError):  # the SDK's credential providers report failures as ValueError
            raise SecretError(f"{what} failed ({cause}: {message})", hint=CREDENTIALS_HINT) from exc
        raise exc

    def _host(self) -> str:
        ws = self._ws
        host = getattr(getattr(ws, "config", None), "host", None) if ws is not None else None
        return str(host or self.host or "DATABRICKS_HOST")

    def _credentials(self) -> list[str]:
        """Credential values that must never appear in a message."""
        found = [os.environ.get(var, "") for var in CREDENTIAL_VARIABLES]
        token = getattr(getattr(self._ws, "config", None), "token", None)
        if isinstance(token, str):
            found.append(token)
        return [v for v in found if v]

    # ------------------------------------------------------------------------------------------------
    # Provider
    # ------------------------------------------------------------------------------------------------

    def list_scopes(self) -> list[ScopeInfo]:
        """Every Databricks scope that is a valid vintage scope name (key counts are not fetched)."""
        listed = self._call("listing the Databricks secret scopes", lambda ws: list(ws.secrets.list_scopes()))
        found = {local_scope(s.name) for s in listed if s.name}
        return [ScopeInfo(s.name, s.environment, None, self.name) for s in sorted(x for x in found if x)]

    def create_scope(self, scope: Scope) -> None:
        """Create a Databricks-backed scope; its creator is granted MANAGE.

        Raises:
            SecretError: the scope exists, or Databricks refused.
        """
        from databricks.sdk.service.workspace import ScopeBackendType

        self._call(
            f"creating scope {scope}",
            lambda ws: ws.secrets.create_scope(
                scope=remote_scope(scope), scope_backend_type=ScopeBackendType.DATABRICKS
            ),
            exists=lambda: SecretError(
                f"scope {scope} already exists in the {self.name} provider",
                hint="list the scopes with `vintage secrets list-scopes`",
            ),
        )

    def delete_scope(self, scope: Scope) -> None:
        """Delete a scope and every secret in it.

        Raises:
            SecretError: the scope does not exist, or Databricks refused.
        """
        self._call(
            f"deleting scope {scope}",
            lambda ws: ws.secrets.delete_scope(scope=remote_scope(scope)),
            missing=lambda: no_scope(scope, self.name),
        )

    def list_keys(self, scope: Scope) -> list[SecretInfo]:
        """The keys of a scope with their last update time (Databricks keeps no creation time).

        Raises:
            SecretError: the scope does not exist, or Databricks refused.
        """
        listed = self._call(
            f"listing the keys of scope {scope}",
            lambda ws: list(ws.secrets.list_secrets(scope=remote_scope(scope))),
            missing=lambda: no_scope(scope, self.name),
        )
        keys = [SecretInfo(s.key, None, _iso_ms(s.last_updated_timestamp)) for s in listed if s.key]
        return sorted(keys, key=lambda k: k.key)

    def get(self, scope: Scope, key: str) -> str | None:
        """The value of ``scope/key`` (UTF-8 text), or ``None`` if the scope or the key does not exist.

        Raises:
            SecretError: Databricks refused, cannot be reached, or the value is not UTF-8 text.
        """
        from databricks.sdk import errors as dbx

        what = f"reading secret {scope}/{key}"
        client = self._client()
        try:
            answer = client.secrets.get_secret(scope=remote_scope(scope), key=check_key(key))
        except dbx.ResourceDoesNotExist:
            return None
        except Exception as exc:
            self._fail(what, exc, {})
        if answer.value is None:
            return None
        try:
            return base64.b64decode(answer.value, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            # No cause attached: a decoding error quotes bytes of the value.
            raise SecretError(
                f"secret {scope}/{key} in the {self.name} provider is not UTF-8 text",
                hint="vintage stores text secrets; rewrite it with `vintage secrets put`",
            ) from None

    def put(self, scope: Scope, key: str, value: str) -> None:
        """Create or replace ``scope/key`` (sent as ``string_value``).

        Raises:
            SecretError: the scope does not exist, or Databricks refused.
        """
        self._call(
            f"writing secret {scope}/{key}",
            lambda ws: ws.secrets.put_secret(
                scope=remote_scope(scope), key=check_key(key), string_value=value
            ),
            hide=value,
            missing=lambda: no_scope(scope, self.name),
        )

    def delete(self, scope: Scope, key: str) -> None:
        """Delete ``scope/key``.

        Raises:
            SecretError: the scope or the key does not exist, or Databricks refused.
        """
        self._call(
            f"deleting secret {scope}/{key}",
            lambda ws: ws.secrets.delete_secret(scope=remote_scope(scope), key=check_key(key)),
            missing=lambda: self._missing(scope, key),
        )

    def _missing(self, scope: Scope, key: str) -> SecretError:
        """``no_scope`` or ``no_key``: Databricks answers RESOURCE_DOES_NOT_EXIST for both."""
        try:
            self.list_keys(scope)
        except SecretError as exc:
            return exc
        return no_key(scope, key, self.name)


def _message(exc: BaseException, hide: list[str] | None = None) -> str:
    """The first line of an SDK error, without the configuration dump the SDK appends, scrubbed."""
    text = first_line(exc, limit=10_000).split(" Config: ", 1)[0]
    return _scrub(text, hide)[:300]


def _scrub(text: str, values: list[str] | None = None) -> str:
    """``text`` without any credential value (environment variables of the SDK, and ``values``)."""
    found = [os.environ.get(var, "") for var in CREDENTIAL_VARIABLES] + list(values or [])
    for value in sorted({v for v in found if len(v) >= 4}, key=len, reverse=True):
        text = text.replace(value, "[REDACTED]")
    return text
