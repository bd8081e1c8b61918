"""Where the pipeline state and the audit trail live, and the locks that keep two runs apart.

Two back ends, one set of SQL statements (named ``:parameters``, which both sqlite3 and SQLAlchemy accept):

- **Embedded (default)**: SQLite files in the state directory (``pipeline.db``, ``audit.db``) and file
  locks under ``<state_dir>/locks``. One machine.
- **Shared (``state_url: postgresql://...``)**: one PostgreSQL database through SQLAlchemy, tables in the
  schema ``vintage`` (so the database may also hold an MLflow store), and PostgreSQL advisory locks held on
  a connection of their own. Stage jobs on different machines then see the same runs, approvals, release
  records and audit trail, and wait for the same environment locks. An advisory lock belongs to its
  connection: a job killed with ``kill -9`` (or a machine that vanishes, found by TCP keepalives) drops it.

A state directory is *bound* to a database with :func:`bind` (done when the config is loaded, see
:mod:`vintage.shared_state`); the pipeline store and the audit trail then write there instead of SQLite.
The engine is made on first use, so commands that never touch the state never connect.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from vintage.errors import VintageError, first_line

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

SCHEMA = "vintage"
POLL_S = 0.25

# PostgreSQL DDL of every table vintage keeps (the SQLite DDL lives beside each store; the SQL that reads and
# writes the tables is the same on both).
PG_SCHEMA = f"""
CREATE SCHEMA IF NOT EXISTS {SCHEMA};
CREATE TABLE IF NOT EXISTS {SCHEMA}.runs (
    id TEXT PRIMARY KEY, created TEXT NOT NULL, actor TEXT NOT NULL, status TEXT NOT NULL,
    config_digest TEXT NOT NULL, options TEXT NOT NULL DEFAULT '{{}}', ended TEXT,
    reason TEXT NOT NULL DEFAULT '', pid INTEGER
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.stages (
    run_id TEXT NOT NULL, name TEXT NOT NULL, position INTEGER NOT NULL, environment TEXT,
    status TEXT NOT NULL, started TEXT, ended TEXT, reason TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (run_id, name)
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.steps (
    run_id TEXT NOT NULL, stage TEXT NOT NULL, name TEXT NOT NULL, position INTEGER NOT NULL,
    status TEXT NOT NULL, started TEXT, ended TEXT, output TEXT NOT NULL DEFAULT '{{}}',
    log TEXT NOT NULL DEFAULT '', attempts INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, stage, name)
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.approvals (
    id BIGSERIAL PRIMARY KEY, run_id TEXT NOT NULL, stage TEXT NOT NULL, decision TEXT NOT NULL,
    actor TEXT NOT NULL, time TEXT NOT NULL, comment TEXT NOT NULL DEFAULT '',
    evidence TEXT NOT NULL DEFAULT '{{}}', auto INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.releases (run_id TEXT PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS {SCHEMA}.waiters (
    run_id TEXT NOT NULL, environment TEXT NOT NULL, since TEXT NOT NULL, PRIMARY KEY (run_id, environment)
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.events (
    id BIGSERIAL PRIMARY KEY, time TEXT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
    target TEXT NOT NULL, outcome TEXT NOT NULL, reader TEXT NOT NULL DEFAULT '',
    environment TEXT NOT NULL DEFAULT '', detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS events_action ON {SCHEMA}.events(action);
"""


TABLES = ("runs", "stages", "steps", "approvals", "releases", "waiters", "events")


class Conflict(Exception):  # noqa: N818
    """A row with that key exists already (an SQL integrity error, whatever the back end)."""


class StateDBError(VintageError):
    """The shared state database cannot be reached or used."""


class Tx(Protocol):
    """One open transaction: run a statement with ``:named`` parameters, get its rows (``[]`` if none)."""

    def __call__(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]: ...


class Lock(Protocol):
    """A named lock shared by every process that uses the same state."""

    def acquire(self, timeout: float) -> bool:
        """Take it, waiting up to ``timeout`` seconds (0: try once); ``False`` when someone else holds it."""
        ...

    def release(self) -> None:
        """Give it back (safe to call when not held)."""
        ...


@dataclass
class Binding:
    """A state directory's shared database.

    Attributes:
        display: the URL as shown to people (password replaced by ``***``).
        factory: makes the SQLAlchemy engine (resolves the password secret); called once, on first use.
        after_connect: run once after the engine exists (e.g. record the password read in the audit trail).
    """

    display: str
    factory: Callable[[], Engine]
    after_connect: Callable[[], None] | None = None
    _engine: Engine | None = field(default=None, repr=False)
    _ready: bool = field(default=False, repr=False)
    _mutex: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def engine(self) -> Engine:
        """The engine, made (and the schema created) on first use.

        Raises:
            StateDBError: the database cannot be reached, or refuses the schema.
        """
        with self._mutex:
            if self._engine is None:
                self._engine = self.factory()
            if not self._ready:
                self._ready = True  # before the hook: it writes to this database itself
                try:
                    self._create_schema(self._engine)
                except BaseException:
                    self._ready = False
                    raise
                if self.after_connect is not None:
                    self.after_connect()
            return self._engine

    def _create_schema(self, engine: Engine) -> None:
        from sqlalchemy import bindparam, text

        with self.errors("create the state tables"), engine.begin() as conn:
            # Tables made by an administrator beforehand: nothing to create, so a role without CREATE (and
            # with INSERT but no UPDATE/DELETE on the audit table) works.
            found = conn.execute(
                text(
                    "SELECT count(*) FROM information_schema.tables"
                    " WHERE table_schema = :schema AND table_name IN :names"
                ).bindparams(bindparam("names", expanding=True)),
                {"schema": SCHEMA, "names": list(TABLES)},
            ).scalar()
            if found == len(TABLES):
                return
            # Concurrent CREATE ... IF NOT EXISTS can still collide in PostgreSQL's catalog: one at a time.
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_key("schema")})
            for statement in PG_SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(text(statement))

    @contextlib.contextmanager
    def errors(self, doing: str) -> Iterator[None]:
        """Turn a database error into one headline naming the database (never its password)."""
        from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

        try:
            yield
        except IntegrityError as exc:
            raise Conflict(first_line(exc.orig or exc)) from exc
        except SQLAlchemyError as exc:
            cause = getattr(exc, "orig", None) or exc
            # No SQLSTATE: the server was never reached (refused, unknown host, wrong password, timeout).
            unreached = isinstance(exc, OperationalError) and getattr(cause, "pgcode", None) is None
            what = "reach" if unreached else f"{doing} in"
            raise StateDBError(
                f"cannot {what} the shared state at {self.display}: {first_line(cause)}",
                hint="check state_url (or VINTAGE_STATE_URL), that the server runs, and its password secret",
            ) from None

    @contextlib.contextmanager
    def write(self, serialize: bool = True) -> Iterator[Tx]:
        """One write transaction; ``serialize``: one writer at a time (as SQLite's ``BEGIN IMMEDIATE``), so
        read-modify-write steps (an option, a release record, the newest waiter) never interleave."""
        from sqlalchemy import text

        engine = self.engine()
        with self.errors("write"), engine.begin() as conn:
            if serialize:
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_key("write")})
            yield _pg_tx(conn)

    @contextlib.contextmanager
    def read(self) -> Iterator[Tx]:
        """One read-only transaction."""
        engine = self.engine()
        with self.errors("read"), engine.connect() as conn:
            yield _pg_tx(conn)
            conn.rollback()

    def lock(self, name: str) -> Lock:
        """An advisory lock named ``name`` (held on a connection of its own until released)."""
        return _AdvisoryLock(self, name)

    def held(self, name: str) -> bool:
        """True when some session holds the advisory lock ``name`` (nothing is taken to find out)."""
        key = lock_key(name)
        with self.read() as tx:
            rows = tx(
                "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                " AND classid = :hi AND objid = :lo AND objsubid = 1",
                {"hi": (key >> 32) & 0xFFFFFFFF, "lo": key & 0xFFFFFFFF},
            )
        return bool(rows)


def _pg_tx(conn: Connection) -> Tx:
    from sqlalchemy import text

    def run(sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        result = conn.execute(text(sql), dict(params or {}))
        return [tuple(r) for r in result.fetchall()] if result.returns_rows else []

    return run


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory lock key for ``name`` (the same on every machine)."""
    digest = hashlib.blake2b(f"vintage:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class _AdvisoryLock:
    def __init__(self, binding: Binding, name: str) -> None:
        self.binding = binding
        self.name = name
        self.key = lock_key(name)
        self.conn: Connection | None = None

    def acquire(self, timeout: float) -> bool:
        from sqlalchemy import text

        if self.conn is not None:
            return True
        deadline = time.monotonic() + timeout
        engine = self.binding.engine()
        with self.binding.errors(f"take the lock {self.name}"):
            conn = engine.connect()
            try:
                while True:
                    got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key}).scalar()
                    conn.commit()  # the lock is the session's: it outlives this transaction
                    if got:
                        self.conn = conn
                        return True
                    if time.monotonic() >= deadline:
                        conn.close()
                        return False
                    time.sleep(POLL_S)
            except BaseException:
                conn.invalidate()  # drop the session, and any lock it took, with it
                conn.close()
                raise

    def release(self) -> None:
        from sqlalchemy import text
        from sqlalchemy.exc import SQLAlchemyError

        conn, self.conn = self.conn, None
        if conn is None:
            return
        try:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
            conn.commit()
        except SQLAlchemyError:
            conn.invalidate()  # closing the session releases the lock
        finally:
            conn.close()


class FileLockAdapter:
    """A :class:`Lock` on ``<state_dir>/locks/<name>.lock`` (one machine)."""

    def __init__(self, path: Path) -> None:
        from filelock import FileLock

        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(str(path))

    def acquire(self, timeout: float) -> bool:
        from filelock import Timeout

        try:
            self._lock.acquire(timeout=timeout, poll_interval=0.05)
        except Timeout:
            return False
        return True

    def release(self) -> None:
        if self._lock.is_locked:
            self._lock.release()


# ------------------------------------------------------------------------------------------ bindings

_BINDINGS: dict[Path, Binding] = {}
_BINDINGS_MUTEX = threading.Lock()


def bind(state_dir: Path, binding: Binding) -> Binding:
    """Send the pipeline state and audit trail of ``state_dir`` to ``binding``'s database (idempotent: an
    existing binding with the same URL is kept, with its engine)."""
    key = state_dir.resolve()
    with _BINDINGS_MUTEX:
        existing = _BINDINGS.get(key)
        if existing is not None and existing.display == binding.display:
            return existing
        _BINDINGS[key] = binding
        return binding


def unbind(state_dir: Path) -> None:
    """Back to the embedded SQLite files (tests; a process that switches projects)."""
    with _BINDINGS_MUTEX:
        binding = _BINDINGS.pop(state_dir.resolve(), None)
    if binding is not None and binding._engine is not None:
        binding._engine.dispose()


def bound(state_dir: Path) -> Binding | None:
    """The shared database of ``state_dir``, or ``None`` (embedded SQLite)."""
    return _BINDINGS.get(state_dir.resolve()) if _BINDINGS else None


def lock(state_dir: Path, name: str) -> Lock:
    """The lock ``name`` of this state: advisory in the shared database, else a file under ``locks/``."""
    shared = bound(state_dir)
    if shared is not None:
        return shared.lock(name)
    return FileLockAdapter(state_dir / "locks" / f"{name}.lock")


@contextlib.contextmanager
def holding(state_dir: Path, name: str, timeout: float) -> Iterator[bool]:
    """Hold ``name`` for the block; yields ``False`` (and holds nothing) when it stayed taken."""
    held = lock(state_dir, name)
    got = held.acquire(timeout)
    try:
        yield got
    finally:
        if got:
            held.release()


def make_engine(url: str) -> Engine:
    """A SQLAlchemy engine on a PostgreSQL ``url`` whose sessions search the ``vintage`` schema first.

    Keepalives make a vanished client's session (and its advisory locks) go within about a minute; the
    connect timeout keeps an unreachable server from hanging a CI job.
    """
    from sqlalchemy import create_engine, event

    engine = create_engine(
        url,
        pool_pre_ping=True,
        pool_size=4,
        max_overflow=8,
        connect_args={
            "connect_timeout": 10,
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
            "application_name": "vintage",
        },
    )

    @event.listens_for(engine, "connect")
    def _search_path(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute(f"SET search_path TO {SCHEMA}, public")
        finally:
            cursor.close()
        dbapi_conn.commit()

    return engine


def unbind_all() -> None:
    """Forget every binding (tests)."""
    for state_dir in list(_BINDINGS):
        unbind(state_dir)
