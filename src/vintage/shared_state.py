"""Connect a project's state directory to its shared state database (``state_url``), lazily.

``state_url: postgresql://USER[:${secret:scope/key}]@HOST:PORT/DATABASE`` (or ``VINTAGE_STATE_URL``) sends the
pipeline state, environment locks, approvals, release records and audit trail to PostgreSQL, so the stage
jobs of one CI run (and the runs of several CI machines) share them. The password is a secret reference,
resolved through the configured providers (in CI: a ``VINTAGE_SECRET__...`` variable) only when the state is
first used; ``PGPASSWORD`` / ``~/.pgpass`` work too, as for any libpq client. That read is recorded in the
shared audit trail once the connection exists.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit, urlunsplit

from vintage import audit, statedb
from vintage.config.models import SECRET_REF
from vintage.errors import ConfigError
from vintage.extras import require
from vintage.secrets.access import SecretReader, open_provider
from vintage.secrets.names import REF_PATTERN

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from vintage.config import ProjectSettings, Spec
    from vintage.secrets.names import SecretRef

READER = "state"
DRIVER = "postgresql+psycopg2"  # the driver vintage ships (SQLAlchemy 2.1 maps postgresql:// to psycopg 3)


def display(url: str) -> str:
    """``url`` for people: the password (or its reference) replaced by ``***``."""
    parts = urlsplit(SECRET_REF.sub("***", url))
    if parts.password is None:
        return SECRET_REF.sub("***", url)
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def attach(settings: Spec | ProjectSettings) -> statedb.Binding | None:
    """Bind ``settings.state_dir`` to ``settings.state_url`` (no connection yet); ``None`` without a URL."""
    url = settings.state_url
    state_dir = settings.state_dir.resolve()
    if not url:
        statedb.unbind(state_dir)
        return None
    reads: list[tuple[str, str, str]] = []  # (ref, outcome, provider) of the password, audited once connected

    class _Reader(SecretReader):
        def _audit(self, ref: SecretRef | str, outcome: str, provider: str = "", *, detail: str = "") -> None:
            reads.append((str(ref), outcome, detail or (f"provider={provider}" if provider else "")))

    def factory() -> Engine:
        providers = [open_provider(n, state_dir, settings.secrets) for n in settings.secrets.providers]
        reader = _Reader(state_dir, providers, reader=READER)
        # A password that cannot be read stops here, with the reader's headline: nothing is written anywhere
        # (the state that would record the failure is the one it cannot reach).
        resolved = REF_PATTERN.sub(lambda m: quote(reader.get(m.group(1)), safe=""), url)
        return statedb.make_engine(_with_driver(resolved))

    def after_connect() -> None:
        for ref, outcome, detail in reads:
            audit.record(state_dir, "secret.read", ref, outcome, reader=READER, detail=detail)
        reads.clear()

    return statedb.bind(state_dir, statedb.Binding(display(url), factory, after_connect))


def _with_driver(url: str) -> str:
    scheme, rest = url.split("://", 1)
    if scheme not in ("postgresql", DRIVER):
        raise ConfigError(f"state_url: unsupported scheme {scheme!r}; use postgresql://")
    require("postgres", "state_url (PostgreSQL)")
    return f"{DRIVER}://{rest}"


def describe(settings: Spec | ProjectSettings) -> dict[str, Any]:
    """Where the state lives, for ``vintage status`` / docs: ``{"kind": ..., "where": ...}``."""
    if settings.state_url:
        return {"kind": "postgresql", "where": display(settings.state_url)}
    return {"kind": "sqlite", "where": str(settings.state_dir)}
