"""vintage.fsutil.use_wal: switching a shared SQLite database to WAL while another process holds it."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from vintage.fsutil import use_wal


def _locked_db(path: Path) -> sqlite3.Connection:
    """A database in rollback-journal mode with a read transaction open on it (a SHARED lock)."""
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("INSERT INTO t VALUES (1)")
    holder.execute("BEGIN")
    holder.execute("SELECT * FROM t").fetchall()
    return holder


def test_a_busy_database_is_switched_once_the_other_connection_lets_go(tmp_path):
    holder = _locked_db(tmp_path / "s.db")
    conn = sqlite3.connect(tmp_path / "s.db", timeout=0, isolation_level=None)  # SQLite answers BUSY at once
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        conn.execute("PRAGMA journal_mode=WAL")  # what an unguarded switch does
    release = threading.Timer(0.3, lambda: holder.execute("COMMIT"))
    release.start()
    use_wal(conn, timeout_s=10)
    release.join()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    other = sqlite3.connect(tmp_path / "s.db", timeout=0)
    assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persistent


def test_still_locked_after_the_timeout_raises(tmp_path):
    holder = _locked_db(tmp_path / "s.db")
    conn = sqlite3.connect(tmp_path / "s.db", timeout=0, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        use_wal(conn, timeout_s=0.2)
    holder.execute("COMMIT")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # unchanged


def test_a_wal_database_is_only_read(tmp_path):
    conn = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    use_wal(conn, timeout_s=1)
    holder = sqlite3.connect(tmp_path / "s.db", isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")  # a writer holds the database
    holder.execute("INSERT INTO t VALUES (1)")
    late = sqlite3.connect(tmp_path / "s.db", timeout=0, isolation_level=None)
    use_wal(late, timeout_s=0.1)  # no switch needed: no lock needed
    holder.execute("COMMIT")
