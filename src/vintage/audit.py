"""The audit trail: an append-only log of who did what to which target, and how it ended.

Secret reads (scope, key, reader; never the value), secret writes, key rotations, and later registrations,
alias moves, approvals and deploys are appended to ``<state_dir>/audit.db`` (SQLite, WAL, safe for
concurrent writers), or to the shared PostgreSQL database of ``state_url`` (:mod:`vintage.statedb`), so
the stage jobs of a CI run on different machines write one trail. ``vintage audit`` lists it. Every text
field passes through the redactor.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from vintage import statedb
from vintage.errors import VintageError
from vintage.fsutil import connect_readonly, create_sqlite, sqlite_error, sqlite_problem, use_wal
from vintage.redact import redact

AUDIT_FILE = "audit.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    outcome TEXT NOT NULL,
    reader TEXT NOT NULL DEFAULT '',
    environment TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS events_action ON events(action);
"""


@dataclass(frozen=True)
class AuditEvent:
    """One line of the audit trail."""

    id: int
    time: str
    actor: str
    action: str
    target: str
    outcome: str
    reader: str
    environment: str
    detail: str


_COLUMNS = ("id", "time", "actor", "action", "target", "outcome", "reader", "environment", "detail")


@contextlib.contextmanager
def _shared_errors() -> Iterator[None]:
    try:
        yield
    except statedb.StateDBError as exc:
        raise VintageError(f"the audit trail: {exc.headline}", hint=exc.hint) from None


def current_actor() -> str:
    """The OS user running vintage (``VINTAGE_ACTOR`` overrides it, e.g. a CI job's identity)."""
    if actor := os.environ.get("VINTAGE_ACTOR"):
        return actor
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@contextlib.contextmanager
def _connect(state_dir: Path) -> Iterator[sqlite3.Connection]:
    path = state_dir / AUDIT_FILE
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        if sqlite_problem(path) is not None:
            raise sqlite3.DatabaseError("damaged")
        create_sqlite(path, _SCHEMA)  # 0600: its -wal / -shm files copy its mode
        conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    except (OSError, sqlite3.DatabaseError) as exc:
        raise _error(path, exc) from exc
    try:
        use_wal(conn, timeout_s=30)
        conn.execute("PRAGMA busy_timeout=30000")
        conn.executescript(_SCHEMA)
        yield conn
    except sqlite3.DatabaseError as exc:
        raise _error(path, exc) from exc
    finally:
        conn.close()
    with contextlib.suppress(OSError):
        path.chmod(0o600)


def _error(path: Path, exc: BaseException) -> VintageError:
    headline, hint = sqlite_error(path, "the audit trail", exc)
    return VintageError(headline, hint=hint)


def record(
    state_dir: Path,
    action: str,
    target: str,
    outcome: str = "ok",
    *,
    reader: str = "",
    environment: str | None = None,
    detail: str = "",
    actor: str | None = None,
) -> None:
    """Append one event. Text is redacted before it is written."""
    row = (
        datetime.now(UTC).isoformat(timespec="milliseconds"),
        redact(actor or current_actor()),
        action,
        redact(target),
        redact(outcome),
        redact(reader),
        environment or "",
        redact(detail),
    )
    sql = (
        "INSERT INTO events (time, actor, action, target, outcome, reader, environment, detail)"
        " VALUES (:time, :actor, :action, :target, :outcome, :reader, :environment, :detail)"
    )
    params = dict(zip(_COLUMNS[1:], row, strict=True))
    shared = statedb.bound(state_dir)
    if shared is not None:
        with _shared_errors(), shared.write(serialize=False) as tx:
            tx(sql, params)
        return
    with _connect(state_dir) as conn:
        conn.execute(sql, params)


def events(
    state_dir: Path, *, action: str | None = None, target: str | None = None, limit: int | None = None
) -> list[AuditEvent]:
    """Events, oldest first; ``action`` matches a prefix (``secret.`` = every secret event)."""
    query = f"SELECT {', '.join(_COLUMNS)} FROM events"
    where: list[str] = []
    args: dict[str, str | int] = {}
    if action:
        # A case-sensitive prefix with no wildcards (LIKE ignores ASCII case).
        where.append("substr(action, 1, :n) = :action")
        args.update(n=len(action), action=action)
    if target:
        where.append("target = :target")
        args["target"] = target
    if where:
        query += " WHERE " + " AND ".join(where)
    query += " ORDER BY id"
    shared = statedb.bound(state_dir)
    if shared is not None:
        with _shared_errors(), shared.read() as tx:
            found = [AuditEvent(*row) for row in tx(query, args)]
        return found[-limit:] if limit else found
    path = state_dir / AUDIT_FILE
    if not path.exists():
        return []
    try:
        if sqlite_problem(path) is not None:
            raise sqlite3.DatabaseError("damaged")
        conn = connect_readonly(path, timeout_s=30)  # also in a read-only state directory
        try:
            conn.execute("PRAGMA busy_timeout=30000")
            rows = conn.execute(query, args).fetchall()
        finally:
            conn.close()
    except (OSError, sqlite3.DatabaseError) as exc:
        raise _error(path, exc) from exc
    with contextlib.suppress(OSError):
        path.chmod(0o600)
    found = [AuditEvent(*row) for row in rows]
    return found[-limit:] if limit else found
