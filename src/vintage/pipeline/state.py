"""Pipeline run state: ``<state_dir>/pipeline.db`` (SQLite, WAL).

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
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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

    @property
    def alive(self) -> bool:
        """True while the process that runs it is alive (a ``running`` run of a dead process can resume)."""
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
    """Read and write pipeline state. Each method is one short transaction."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / DB_FILE

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (the database is created on first use)."""
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
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.IntegrityError:
            raise
        except sqlite3.DatabaseError as exc:
            raise self._error(exc) from exc
        finally:
            conn.close()

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection | None]:
        """A read-only connection (None when no run was ever recorded): works in a read-only state
        directory, and never creates anything."""
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
            yield conn
        except sqlite3.DatabaseError as exc:
            raise self._error(exc) from exc
        finally:
            conn.close()

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
    ) -> None:
        """Record a new run with its stages and steps (all pending)."""
        with self._db() as db:
            db.execute(
                "INSERT INTO runs (id, created, actor, status, config_digest, options, pid)"
                " VALUES (?,?,?,?,?,?,?)",
                (run_id, now(), actor, PENDING, config_digest, json.dumps(options), os.getpid()),
            )
            for pos, (name, env, steps) in enumerate(stages):
                db.execute(
                    "INSERT INTO stages (run_id, name, position, environment, status) VALUES (?,?,?,?,?)",
                    (run_id, name, pos, env, PENDING),
                )
                for spos, step in enumerate(steps):
                    db.execute(
                        "INSERT INTO steps (run_id, stage, name, position, status) VALUES (?,?,?,?,?)",
                        (run_id, name, step, spos, PENDING),
                    )

    def set_run(self, run_id: str, status: str, reason: str = "", *, claim: bool = False) -> None:
        """Set a run's status (``claim``: this process now runs it)."""
        ended = now() if status in FINAL or status == WAITING else None
        with self._db() as db:
            if claim:
                db.execute("UPDATE runs SET pid = ? WHERE id = ?", (os.getpid(), run_id))
            db.execute(
                "UPDATE runs SET status = ?, ended = ?, reason = ? WHERE id = ?",
                (status, ended, redact(reason), run_id),
            )

    def set_option(self, run_id: str, key: str, value: Any) -> None:
        """Update one run option (e.g. ``auto_approve`` given on resume)."""
        with self._db() as db:
            row = db.execute("SELECT options FROM runs WHERE id = ?", (run_id,)).fetchone()
            options = json.loads(row[0]) if row else {}
            options[key] = value
            db.execute("UPDATE runs SET options = ? WHERE id = ?", (json.dumps(options), run_id))

    def set_stage(self, run_id: str, stage: str, status: str, reason: str = "") -> None:
        """Set a stage's status and times."""
        with self._db() as db:
            if status == RUNNING:
                db.execute(
                    "UPDATE stages SET status = ?, started = COALESCE(started, ?), ended = NULL, reason = ''"
                    " WHERE run_id = ? AND name = ?",
                    (status, now(), run_id, stage),
                )
            else:
                db.execute(
                    "UPDATE stages SET status = ?, ended = ?, reason = ? WHERE run_id = ? AND name = ?",
                    (status, now(), redact(reason), run_id, stage),
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
        with self._db() as db:
            if status == RUNNING:
                db.execute(
                    "UPDATE steps SET status = ?, started = ?, ended = NULL, attempts = attempts + 1"
                    " WHERE run_id = ? AND stage = ? AND name = ?",
                    (status, now(), run_id, stage, step),
                )
                return
            db.execute(
                "UPDATE steps SET status = ?, ended = ?, output = ?, log = ?"
                " WHERE run_id = ? AND stage = ? AND name = ?",
                (
                    status,
                    now(),
                    json.dumps(redact_data(output or {}), default=str),
                    redact(log or ""),
                    run_id,
                    stage,
                    step,
                ),
            )

    def reset_stage(self, run_id: str, stage: str) -> None:
        """Make an unfinished or failed stage runnable again (its succeeded steps stay done)."""
        with self._db() as db:
            db.execute(
                "UPDATE stages SET status = ?, ended = NULL, reason = '' WHERE run_id = ? AND name = ?",
                (PENDING, run_id, stage),
            )
            db.execute(
                "UPDATE steps SET status = ? WHERE run_id = ? AND stage = ? AND status != ?",
                (PENDING, run_id, stage, SUCCEEDED),
            )

    def run(self, run_id: str) -> RunState:
        """A run with its stages and steps.

        Raises:
            PipelineError: no such run.
        """
        with self._read() as db:
            row = (
                None
                if db is None
                else db.execute(
                    "SELECT id, created, actor, status, config_digest, options, ended, reason, pid"
                    " FROM runs WHERE id = ?",
                    (run_id,),
                ).fetchone()
            )
            if db is None or row is None:
                raise PipelineError(f"no pipeline run {run_id!r}", hint="`vintage runs list` shows the runs")
            run = RunState(row[0], row[1], row[2], row[3], row[4], json.loads(row[5]), row[6], row[7], row[8])
            for srow in db.execute(
                "SELECT name, environment, status, started, ended, reason FROM stages WHERE run_id = ?"
                " ORDER BY position",
                (run_id,),
            ):
                run.stages.append(StageState(*srow))
            by_stage = {s.name: s for s in run.stages}
            for st in db.execute(
                "SELECT stage, name, status, started, ended, output, log, attempts FROM steps"
                " WHERE run_id = ? ORDER BY position",
                (run_id,),
            ):
                by_stage[st[0]].steps.append(
                    StepState(st[0], st[1], st[2], st[3], st[4], json.loads(st[5]), st[6], st[7])
                )
        return run

    def runs(self, limit: int = 20) -> list[RunState]:
        """Newest runs first."""
        with self._read() as db:
            if db is None:
                return []
            ids = [
                r[0]
                for r in db.execute("SELECT id FROM runs ORDER BY created DESC, id DESC LIMIT ?", (limit,))
            ]
        return [self.run(i) for i in ids]

    def exists(self, run_id: str) -> bool:
        """True when the run is recorded."""
        with self._read() as db:
            return (
                db is not None
                and db.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is not None
            )

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
            db.execute(
                "INSERT INTO approvals (run_id, stage, decision, actor, time, comment, evidence, auto)"
                " VALUES (?,?,?,?,?,?,?,?)",
                (
                    run_id,
                    stage,
                    decision,
                    actor,
                    now(),
                    redact(comment),
                    json.dumps(evidence or {}),
                    int(auto),
                ),
            )

    def approvals(self, run_id: str, stage: str | None = None) -> list[dict[str, Any]]:
        """Every decision on a run (optionally one stage), oldest first."""
        query = "SELECT stage, decision, actor, time, comment, evidence, auto FROM approvals WHERE run_id = ?"
        args: list[Any] = [run_id]
        if stage:
            query += " AND stage = ?"
            args.append(stage)
        with self._read() as db:
            rows = [] if db is None else db.execute(query + " ORDER BY id", args).fetchall()
        keys = ("stage", "decision", "actor", "time", "comment", "evidence", "auto")
        return [
            {**dict(zip(keys, r, strict=True)), "evidence": json.loads(r[5]), "auto": bool(r[6])}
            for r in rows
        ]

    # -------------------------------------------------------------------------------------- release

    def update_release(self, run_id: str, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into the run's release record; returns the record."""
        with self._db() as db:
            row = db.execute("SELECT record FROM releases WHERE run_id = ?", (run_id,)).fetchone()
            record: dict[str, Any] = json.loads(row[0]) if row else {"run_id": run_id}
            for key, value in fields.items():
                if isinstance(value, dict) and isinstance(record.get(key), dict):
                    record[key] = {**record[key], **value}
                else:
                    record[key] = value
            record = dict(redact_data(record))
            db.execute(
                "INSERT INTO releases (run_id, record) VALUES (?, ?)"
                " ON CONFLICT(run_id) DO UPDATE SET record = ?",
                (run_id, json.dumps(record, default=str), json.dumps(record, default=str)),
            )
        return record

    def release(self, run_id: str) -> dict[str, Any] | None:
        """The run's release record, if written."""
        with self._read() as db:
            row = (
                None
                if db is None
                else db.execute("SELECT record FROM releases WHERE run_id = ?", (run_id,)).fetchone()
            )
        return json.loads(row[0]) if row else None

    # -------------------------------------------------------------------------------------- waiters

    def wait_for(self, run_id: str, environment: str) -> None:
        """Record that a run waits for an environment's lock."""
        with self._db() as db:
            db.execute(
                "INSERT OR IGNORE INTO waiters (run_id, environment, since) VALUES (?,?,?)",
                (run_id, environment, now()),
            )

    def done_waiting(self, run_id: str, environment: str) -> None:
        """The run got the lock (or gave up)."""
        with self._db() as db:
            db.execute("DELETE FROM waiters WHERE run_id = ? AND environment = ?", (run_id, environment))

    def newer_waiter(self, run_id: str, environment: str) -> str | None:
        """A run created after ``run_id`` that waits for the same environment, if any."""
        with self._db() as db:
            row = db.execute(
                "SELECT w.run_id FROM waiters w JOIN runs r ON r.id = w.run_id"
                " WHERE w.environment = ? AND r.created > (SELECT created FROM runs WHERE id = ?)"
                " ORDER BY r.created DESC LIMIT 1",
                (environment, run_id),
            ).fetchone()
        return str(row[0]) if row else None
