"""Shared state of a multi-worker server: which model every worker serves, and when to reload keys.

The supervisor owns the admin channel. It verifies and validates a swap, then publishes the new model
directory and its digest here; every worker polls this file (twice a second, one ``stat``), checks the
directory against the digest itself, and follows. A worker that starts later (uvicorn replaces dead or
restarted workers) reads it too, so it serves the latest model, not the one the server started with. Each
worker reports what it serves in ``worker-<pid>.json`` beside this file; the supervisor's ``status``
collects those reports.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

import orjson


class ControlFile:
    """A small JSON document, replaced atomically (write a temp file, then rename)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> dict[str, Any]:
        """The current state ({} before the first publish or if unreadable)."""
        try:
            data = orjson.loads(self.path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return {}
        return data if isinstance(data, dict) else {}

    def stamp(self) -> int:
        """Changes whenever the file is replaced (0 when absent)."""
        try:
            return self.path.stat().st_mtime_ns
        except OSError:
            return 0

    def publish(
        self, *, model: str | None = None, digest: str | None = None, reload_keys: bool = False
    ) -> dict[str, Any]:
        """Record a new model directory (and its digest) and/or a key reload; returns the new state."""
        state = self.read()
        if model is not None:
            state["model"] = model
            state["digest"] = digest
        if reload_keys:
            state["keys_generation"] = int(state.get("keys_generation", 0)) + 1
        state["generation"] = int(state.get("generation", 0)) + 1
        _write(self.path, state)
        return state

    def report(self, pid: int, status: dict[str, Any]) -> None:
        """A worker says what it serves."""
        _write(self.path.parent / f"worker-{pid}.json", status)

    def reports(self, pids: list[int]) -> dict[int, dict[str, Any]]:
        """What each of ``pids`` last reported ({} for a worker that has not reported yet)."""
        out: dict[int, dict[str, Any]] = {}
        for pid in pids:
            try:
                data = orjson.loads((self.path.parent / f"worker-{pid}.json").read_bytes())
            except (OSError, orjson.JSONDecodeError):
                data = {}
            out[pid] = data if isinstance(data, dict) else {}
        return out


def _write(path: Path, state: dict[str, Any]) -> None:
    """Replace ``path`` atomically (temp file + rename)."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=".control-")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(orjson.dumps(state))
        tmp.replace(path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
