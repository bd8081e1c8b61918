"""Small file-system helpers shared across layers."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from pathlib import Path


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically with mode 0600 (temp file + fsync + rename + dir fsync).

    A process killed at any moment leaves the old file or the new one, never a torn file; a killed
    writer's temp file (``.NAME.*.tmp`` next to ``path``) may remain.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o600)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        Path(tmp).replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            Path(tmp).unlink()
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def use_wal(conn: sqlite3.Connection, timeout_s: float) -> None:
    """Put an SQLite database in WAL mode (persistent: later connections find it set), racing safely.

    Switching the journal mode needs the database to itself, and SQLite answers "database is locked"
    at once, without its busy handler, when another process has it open at that moment (two ``vintage``
    processes creating the same database). Retried for up to ``timeout_s``; a database already in WAL
    mode is only read.

    Raises:
        sqlite3.OperationalError: still locked after ``timeout_s``, or another error.
    """
    import time

    deadline = time.monotonic() + timeout_s
    pause = 0.01
    while True:
        try:
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.25)
