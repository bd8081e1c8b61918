"""Small file-system helpers shared across layers."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from pathlib import Path


def user_cache_dir(name: str) -> Path:
    """``$XDG_CACHE_HOME/vintage/<name>`` (default ``~/.cache/vintage/<name>``), created private (0700)."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    path = Path(root) / "vintage" / name
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


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


_SQLITE_HEADER = b"SQLite format 3\x00"


def shown_path(path: Path) -> str:
    """``path`` relative to the working directory when it is below it (as a user would type it)."""
    try:
        return str(path.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def sqlite_problem(path: Path) -> str | None:
    """What is wrong with the file of an SQLite database, seen from its header, or None (also when the
    file cannot be read): ``"is empty (0 bytes)"`` or ``"is not an SQLite database"``."""
    try:
        with path.open("rb") as fh:
            head = fh.read(len(_SQLITE_HEADER))
    except OSError:  # missing or unreadable: opening it says why
        return None
    if not head:
        return "is empty (0 bytes)"
    if head != _SQLITE_HEADER:
        return "is not an SQLite database"
    return None


def create_sqlite(path: Path, schema: str) -> None:
    """Create the SQLite database ``path`` (mode 0600, WAL, ``schema`` applied) all at once, unless it
    exists: built in a temp file next to it and linked into place, so a process killed or out of disk
    space never leaves an empty or half-made database behind (only its ``.NAME.*.tmp`` file).

    Raises:
        OSError, sqlite3.Error: the directory cannot be written (or is full).
    """
    if path.exists():
        return
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(schema)
        finally:
            conn.close()
        with tmp.open("rb+") as fh:
            os.fsync(fh.fileno())
        with contextlib.suppress(FileExistsError):  # another process created it meanwhile: keep theirs
            os.link(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def connect_readonly(path: Path, timeout_s: float) -> sqlite3.Connection:
    """Open an existing SQLite database for reading only, also in a directory this process cannot
    write: there a WAL database with no ``-wal`` file (closed cleanly, everything checkpointed) is opened
    ``immutable`` (SQLite would otherwise need to create its ``-shm`` file).

    Raises:
        sqlite3.Error: the file cannot be opened.
    """
    wal = path.with_name(path.name + "-wal")
    params = "mode=ro"
    if not os.access(path.parent, os.W_OK) and not wal.exists():
        params += "&immutable=1"
    return sqlite3.connect(f"{path.absolute().as_uri()}?{params}", uri=True, timeout=timeout_s)


def sqlite_error(path: Path, what: str, exc: BaseException) -> tuple[str, str]:
    """Headline and hint for a failure to use the SQLite database ``path`` (``what``: "the pipeline
    state", "the audit trail"), naming the file and telling a damaged file from a read-only directory, a
    full disk and a lock held by another process."""
    where = shown_path(path)
    message = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    problem = sqlite_problem(path)
    text = message.lower()
    if problem is not None or "malformed" in text or "not a database" in text or "corrupt" in text:
        return (
            f"{what} {where} is damaged: {problem or message}",
            f"restore it from a backup, or move it aside (mv {where} {where}.broken) to start a new history",
        )
    if "locked" in text or "busy" in text:
        return (
            f"{what} {where} is locked by another process ({message})",
            "wait for the other vintage command to finish, or stop it",
        )
    if isinstance(exc, OSError) or any(
        word in text for word in ("readonly", "read-only", "unable to open", "permission")
    ):
        message = exc.strerror or message if isinstance(exc, OSError) else message
        return (
            f"cannot open {what} {where}: {message}",
            "check that the state directory exists and this user may write it"
            " (vintage runs list, status and audit only need to read it)",
        )
    return (
        f"cannot use {what} {where}: {message}",
        "check free disk space and the disk, then run the command again",
    )
