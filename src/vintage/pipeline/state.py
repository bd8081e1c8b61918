"""Pipeline run state: ``<state_dir>/pipeline.db`` (SQLite, WAL), or the shared PostgreSQL database of
``state_url`` (:mod:`vintage.statedb`) when stage jobs run on different machines.

Every ``vintage run`` has a run id; its stages and steps, their status, times, outputs and (redacted) logs,
its approvals and its release record live here. Each status change is its own committed transaction, so a
process killed with ``kill -9`` leaves a consistent record that ``vintage resume`` continues from: a step
left ``running`` by a dead process is simply run again (steps are idempotent).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vintage import statedb
from vintage.errors import PipelineError
from vintage.fsutil import connect_readonly, create_sqlite, sqlite_error, sqlite_problem, use_wal
from vintage.redact import redact, redact_data

DB_FILE = "pipeline.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, created TEXT NOT NULL, actor TEXT NOT NULL, status TEXT NOT NULL,
    config_digest TEXT NOT NULL, options TEXT NOT NULL DEFAULT '{}', ended TEXT,
    reason TEXT NOT NULL DEFAULT '', pid INTEGER
);
CREATE TABLE IF NOT EXISTS stages (
    run_id TEXT NOT NULL, name TEXT NOT NULL, position INTEGER NOT NULL, environment TEXT,
    status TEXT NOT NULL, started TEXT, ended TEXT, reason TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (run_id, name)
);
CREATE TABLE IF NOT EXISTS steps (
    run_id TEXT NOT NULL, stage TEXT NOT NULL, name TEXT NOT NULL, position INTEGER NOT NULL,
    status TEXT NOT NULL, started TEXT, ended TEXT, output TEXT NOT NULL DEFAULT '{}',
    log TEXT NOT NULL DEFAULT '', attempts INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, stage, name)
);
CREATE TABLE IF NOT EXISTS approvals (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, stage TEXT NOT NULL, decision TEXT NOT NULL,
    actor TEXT NOT NULL, time TEXT NOT NULL, comment TEXT NOT NULL DEFAULT '',
    evidence TEXT NOT NULL DEFAULT '{}', auto INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS releases (run_id TEXT PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS waiters (
    run_id TEXT NOT NULL, environment TEXT NOT NULL, since TEXT NOT NULL, PRIMARY KEY (run_id, environment)
);
"""

# Terminal and resting states of a run / stage / step.
PENDING, RUNNING, SUCCEEDED, FAILED = "pending", "running", "succeeded", "failed"
SKIPPED, WAITING, REJECTED, SUPERSEDED, EXPIRED = (
    "skipped",
    "waiting_approval",
    "rejected",
    "superseded",
    "expired",
)
FINAL = frozenset({SUCCEEDED, FAILED, SKIPPED, REJECTED, SUPERSEDED, EXPIRED})


def _sqlite_tx(conn: sqlite3.Connection) -> statedb.Tx:
    def run(sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        return conn.execute(sql, dict(params or {})).fetchall()

    return run


def now() -> str:
    """UTC now, ISO-8601 with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def new_run_id() -> str:
    """A sortable, unique run id: ``20261126-071502-3fa9``."""
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


@dataclass
class StepState:
    """One step of one stage of a run."""

    stage: str
    name: str
    status: str
    started: str | None = None
    ended: str | None = None
    output: dict[str, Any] = field(default_factory=dict)
    log: str = ""
    attempts: int = 0


@dataclass
class StageState:
    """One stage of a run."""

    name: str
    environment: str | None
    status: str
    started: str | None = None
    ended: str | None = None
    reason: str = ""
    steps: list[StepState] = field(default_factory=list)


@dataclass
class RunState:
    """A pipeline run."""

    id: str
    created: str
    actor: str
    status: str
    config_digest: str
    options: dict[str, Any]
    ended: str | None
    reason: str
    pid: int | None
    stages: list[StageState] = field(default_factory=list)
    holder_alive: bool | None = None  # shared state: some job holds the run's lock (pids mean nothing there)

    @property
    def alive(self) -> bool:
        """True while the process that runs it is alive (a ``running`` run of a dead process can resume)."""
        if self.holder_alive is not None:
            return self.holder_alive
        if self.pid is None:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    @property
    def shown_status(self) -> str:
        """Status for people: a ``running`` run whose process died shows as ``interrupted``."""
        return "interrupted" if self.status == RUNNING and not self.alive else self.status

    def stage(self, name: str) -> StageState:
        """One stage by name."""
        for s in self.stages:
            if s.name == name:
                return s
        raise PipelineError(f"run {self.id} has no stage {name!r}; stages: {[s.name for s in self.stages]}")

    def output(self, step: str) -> dict[str, Any]:
        """The output of the last succeeded step of this name (any stage)."""
        found: dict[str, Any] = {}
        for s in self.stages:
            for st in s.steps:
                if st.name == step and st.status == SUCCEEDED:
                    found = st.output
        return found


class StateStore:
    """Read and write pipeline state. Each method is one short transaction.

    The state lives in ``<state_dir>/pipeline.db`` unless the state directory is bound to a shared
    PostgreSQL database (``state_url``, :mod:`vintage.statedb`); the statements are the same on both.
    """

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / DB_FILE

    @property
    def shared(self) -> statedb.Binding | None:
        """The shared database this state lives in (``None``: the embedded SQLite file)."""
        return statedb.bound(self.state_dir)

    @property
    def where(self) -> str:
        """Where the state lives, for messages."""
        shared = self.shared
        return shared.display if shared is not None else str(self.path)

    def lock(self, name: str) -> statedb.Lock:
        """A lock shared by every process (and, with a shared database, every machine) of this state."""
        return statedb.lock(self.state_dir, name)

    @contextlib.contextmanager
    def _db(self) -> Iterator[statedb.Tx]:
        """One write transaction (the database is created on first use)."""
        shared = self.shared
        if shared is not None:
            with self._shared_errors(), shared.write() as tx:
                yield tx
            return
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            if sqlite_problem(self.path) is not None:
                raise sqlite3.DatabaseError("damaged")
            create_sqlite(self.path, _SCHEMA)
            conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        except (OSError, sqlite3.DatabaseError) as exc:
            raise self._error(exc) from exc
        try:
            use_wal(conn, timeout_s=60)
            conn.execute("PRAGMA busy_timeout=60000")
            conn.executescript(_SCHEMA)
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield _sqlite_tx(conn)
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.IntegrityError as exc:
            raise statedb.Conflict(str(exc)) from exc
        except sqlite3.DatabaseError as exc:
            raise self._error(exc) from exc
        finally:
            conn.close()

    @contextlib.contextmanager
    def _read(self) -> Iterator[statedb.Tx | None]:
        """A read-only transaction (None when no run was ever recorded): works in a read-only state
        directory, and never creates anything."""
        shared = self.shared
        if shared is not None:
            with self._shared_errors(), shared.read() as tx:
                yield tx
            return
        if not self.path.exists():
            yield None
            return
        try:
            if sqlite_problem(self.path) is not None:
                raise sqlite3.DatabaseError("damaged")
            conn = connect_readonly(self.path, timeout_s=60)
        except (OSError, sqlite3.DatabaseError) as exc:
            raise self._error(exc) from exc
        try:
            conn.execute("PRAGMA busy_timeout=60000")
            yield _sqlite_tx(conn)
        except sqlite3.DatabaseError as exc:
            raise self._error(exc) from exc
        finally:
            conn.close()

    @contextlib.contextmanager
    def _shared_errors(self) -> Iterator[None]:
        try:
            yield
        except statedb.StateDBError as exc:
            raise PipelineError(exc.headline, hint=exc.hint) from None

    def _error(self, exc: BaseException) -> PipelineError:
        headline, hint = sqlite_error(self.path, "the pipeline state", exc)
        return PipelineError(headline, hint=hint)

    # ------------------------------------------------------------------------------------------ runs

    def create_run(
        self,
        run_id: str,
        actor: str,
        config_digest: str,
        stages: list[tuple[str, str | None, list[str]]],
        options: dict[str, Any],
        *,
        exist_ok: bool = False,
    ) -> bool:
        """Record a new run with its stages and steps (all pending); ``False`` when it exists already and
        ``exist_ok`` (two CI jobs may create the run of one CI run at the same moment).

        Raises:
            PipelineError: the run exists (without ``exist_ok``).
        """
        try:
            with self._db() as db:
                db(
                    "INSERT INTO runs (id, created, actor, status, config_digest, options, pid)"
                    " VALUES (:id, :created, :actor, :status, :digest, :options, :pid)",
                    {
                        "id": run_id,
                        "created": now(),
                        "actor": actor,
                        "status": PENDING,
                        "digest": config_digest,
                        "options": json.dumps(options),
                        "pid": os.getpid(),
                    },
                )
                for pos, (name, env, steps) in enumerate(stages):
                    db(
                        "INSERT INTO stages (run_id, name, position, environment, status)"
                        " VALUES (:run, :name, :pos, :env, :status)",
                        {"run": run_id, "name": name, "pos": pos, "env": env, "status": PENDING},
                    )
                    for spos, step in enumerate(steps):
                        db(
                            "INSERT INTO steps (run_id, stage, name, position, status)"
                            " VALUES (:run, :stage, :name, :pos, :status)",
                            {"run": run_id, "stage": name, "name": step, "pos": spos, "status": PENDING},
                        )
        except statedb.Conflict:
            if exist_ok:
                return False
            raise PipelineError(
                f"pipeline run {run_id} exists already", hint="resume it, or pick another id"
            ) from None
        return True

    def set_run(self, run_id: str, status: str, reason: str = "", *, claim: bool = False) -> None:
        """Set a run's status (``claim``: this process now runs it)."""
        ended = now() if status in FINAL or status == WAITING else None
        with self._db() as db:
            if claim:
                db("UPDATE runs SET pid = :pid WHERE id = :id", {"pid": os.getpid(), "id": run_id})
            db(
                "UPDATE runs SET status = :status, ended = :ended, reason = :reason WHERE id = :id",
                {"status": status, "ended": ended, "reason": redact(reason), "id": run_id},
            )

    def set_option(self, run_id: str, key: str, value: Any) -> None:
        """Update one run option (e.g. ``auto_approve`` given on resume)."""
        with self._db() as db:
            rows = db("SELECT options FROM runs WHERE id = :id", {"id": run_id})
            options = json.loads(rows[0][0]) if rows else {}
            options[key] = value
            db("UPDATE runs SET options = :o WHERE id = :id", {"o": json.dumps(options), "id": run_id})

    def set_stage(self, run_id: str, stage: str, status: str, reason: str = "") -> None:
        """Set a stage's status and times."""
        with self._db() as db:
            if status == RUNNING:
                db(
                    "UPDATE stages SET status = :status, started = COALESCE(started, :now), ended = NULL,"
                    " reason = '' WHERE run_id = :run AND name = :stage",
                    {"status": status, "now": now(), "run": run_id, "stage": stage},
                )
            else:
                db(
                    "UPDATE stages SET status = :status, ended = :now, reason = :reason"
                    " WHERE run_id = :run AND name = :stage",
                    {"status": status, "now": now(), "reason": redact(reason), "run": run_id, "stage": stage},
                )

    def set_step(
        self,
        run_id: str,
        stage: str,
        step: str,
        status: str,
        *,
        output: dict[str, Any] | None = None,
        log: str | None = None,
    ) -> None:
        """Set a step's status (``running`` counts an attempt), output and log (both redacted)."""
        where = {"run": run_id, "stage": stage, "step": step, "status": status, "now": now()}
        with self._db() as db:
            if status == RUNNING:
                db(
                    "UPDATE steps SET status = :status, started = :now, ended = NULL, attempts = attempts + 1"
                    " WHERE run_id = :run AND stage = :stage AND name = :step",
                    where,
                )
                return
            db(
                "UPDATE steps SET status = :status, ended = :now, output = :output, log = :log"
                " WHERE run_id = :run AND stage = :stage AND name = :step",
                {
                    **where,
                    "output": json.dumps(redact_data(output or {}), default=str),
                    "log": redact(log or ""),
                },
            )

    def reset_stage(self, run_id: str, stage: str) -> None:
        """Make an unfinished or failed stage runnable again (its succeeded steps stay done)."""
        args = {"pending": PENDING, "done": SUCCEEDED, "run": run_id, "stage": stage}
        with self._db() as db:
            db(
                "UPDATE stages SET status = :pending, ended = NULL, reason = ''"
                " WHERE run_id = :run AND name = :stage",
                args,
            )
            db(
                "UPDATE steps SET status = :pending"
                " WHERE run_id = :run AND stage = :stage AND status != :done",
                args,
            )

    def run(self, run_id: str) -> RunState:
        """A run with its stages and steps.

        Raises:
            PipelineError: no such run.
        """
        with self._read() as db:
            rows = (
                []
                if db is None
                else db(
                    "SELECT id, created, actor, status, config_digest, options, ended, reason, pid"
                    " FROM runs WHERE id = :id",
                    {"id": run_id},
                )
            )
            if db is None or not rows:
                raise PipelineError(f"no pipeline run {run_id!r}", hint="`vintage runs list` shows the runs")
            row = rows[0]
            run = RunState(row[0], row[1], row[2], row[3], row[4], json.loads(row[5]), row[6], row[7], row[8])
            for srow in db(
                "SELECT name, environment, status, started, ended, reason FROM stages WHERE run_id = :id"
                " ORDER BY position",
                {"id": run_id},
            ):
                run.stages.append(StageState(*srow))
            by_stage = {s.name: s for s in run.stages}
            for st in db(
                "SELECT stage, name, status, started, ended, output, log, attempts FROM steps"
                " WHERE run_id = :id ORDER BY position",
                {"id": run_id},
            ):
                by_stage[st[0]].steps.append(
                    StepState(st[0], st[1], st[2], st[3], st[4], json.loads(st[5]), st[6], st[7])
                )
        shared = self.shared
        if shared is not None and run.status == RUNNING:
            # Across machines a pid means nothing: the run is alive while some job holds its lock.
            with self._shared_errors():
                run.holder_alive = shared.held(run_lock(run_id))
        return run

    def runs(self, limit: int = 20) -> list[RunState]:
        """Newest runs first."""
        with self._read() as db:
            if db is None:
                return []
            ids = [
                r[0] for r in db("SELECT id FROM runs ORDER BY created DESC, id DESC LIMIT :n", {"n": limit})
            ]
        return [self.run(i) for i in ids]

    def exists(self, run_id: str) -> bool:
        """True when the run is recorded."""
        with self._read() as db:
            return db is not None and bool(db("SELECT 1 FROM runs WHERE id = :id", {"id": run_id}))

    # ------------------------------------------------------------------------------------ approvals

    def add_approval(
        self,
        run_id: str,
        stage: str,
        decision: str,
        actor: str,
        comment: str = "",
        evidence: dict[str, Any] | None = None,
        *,
        auto: bool = False,
    ) -> None:
        """Record a decision: ``requested``, ``approved``, ``rejected`` or ``expired``."""
        with self._db() as db:
            db(
                "INSERT INTO approvals (run_id, stage, decision, actor, time, comment, evidence, auto)"
                " VALUES (:run, :stage, :decision, :actor, :time, :comment, :evidence, :auto)",
                {
                    "run": run_id,
                    "stage": stage,
                    "decision": decision,
                    "actor": actor,
                    "time": now(),
                    "comment": redact(comment),
                    "evidence": json.dumps(evidence or {}),
                    "auto": int(auto),
                },
            )

    def approvals(self, run_id: str, stage: str | None = None) -> list[dict[str, Any]]:
        """Every decision on a run (optionally one stage), oldest first."""
        query = (
            "SELECT stage, decision, actor, time, comment, evidence, auto FROM approvals WHERE run_id = :run"
        )
        args: dict[str, Any] = {"run": run_id}
        if stage:
            query += " AND stage = :stage"
            args["stage"] = stage
        with self._read() as db:
            rows = [] if db is None else db(query + " ORDER BY id", args)
        keys = ("stage", "decision", "actor", "time", "comment", "evidence", "auto")
        return [
            {**dict(zip(keys, r, strict=True)), "evidence": json.loads(r[5]), "auto": bool(r[6])}
            for r in rows
        ]

    # -------------------------------------------------------------------------------------- release

    def update_release(self, run_id: str, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into the run's release record; returns the record."""
        with self._db() as db:
            rows = db("SELECT record FROM releases WHERE run_id = :run", {"run": run_id})
            record: dict[str, Any] = json.loads(rows[0][0]) if rows else {"run_id": run_id}
            for key, value in fields.items():
                if isinstance(value, dict) and isinstance(record.get(key), dict):
                    record[key] = {**record[key], **value}
                else:
                    record[key] = value
            record = dict(redact_data(record))
            db(
                "INSERT INTO releases (run_id, record) VALUES (:run, :record)"
                " ON CONFLICT(run_id) DO UPDATE SET record = :record",
                {"run": run_id, "record": json.dumps(record, default=str)},
            )
        return record

    def release(self, run_id: str) -> dict[str, Any] | None:
        """The run's release record, if written."""
        with self._read() as db:
            rows = (
                [] if db is None else db("SELECT record FROM releases WHERE run_id = :run", {"run": run_id})
            )
        return json.loads(rows[0][0]) if rows else None

    # -------------------------------------------------------------------------------------- waiters

    def wait_for(self, run_id: str, environment: str) -> None:
        """Record that a run waits for an environment's lock."""
        with self._db() as db:
            db(
                "INSERT INTO waiters (run_id, environment, since) VALUES (:run, :env, :since)"
                " ON CONFLICT DO NOTHING",
                {"run": run_id, "env": environment, "since": now()},
            )

    def done_waiting(self, run_id: str, environment: str) -> None:
        """The run got the lock (or gave up)."""
        with self._db() as db:
            db(
                "DELETE FROM waiters WHERE run_id = :run AND environment = :env",
                {"run": run_id, "env": environment},
            )

    def waiting(self, environment: str) -> list[str]:
        """The runs waiting for an environment's lock, oldest wait first."""
        with self._read() as db:
            rows = (
                []
                if db is None
                else db(
                    "SELECT run_id FROM waiters WHERE environment = :env ORDER BY since, run_id",
                    {"env": environment},
                )
            )
        return [str(r[0]) for r in rows]

    def newer_waiter(self, run_id: str, environment: str) -> str | None:
        """A run created after ``run_id`` that waits for the same environment, if any."""
        with self._db() as db:
            rows = db(
                "SELECT w.run_id FROM waiters w JOIN runs r ON r.id = w.run_id"
                " WHERE w.environment = :env AND r.created > (SELECT created FROM runs WHERE id = :run)"
                " ORDER BY r.created DESC LIMIT 1",
                {"env": environment, "run": run_id},
            )
        return str(rows[0][0]) if rows else None


def run_lock(run_id: str) -> str:
    """The name of the lock a process holds while it runs ``run_id``."""
    return f"run-{run_id}"


def env_lock(environment: str) -> str:
    """The name of an environment's deploy lock."""
    return f"env-{environment}"
