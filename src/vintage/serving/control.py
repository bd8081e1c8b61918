"""Shared state of a multi-worker server: which model every worker serves, and when to reload keys.

An admin call reaches one worker. That worker validates and swaps, then publishes the change here; every
other worker polls this file (twice a second, one ``stat``) and follows. A worker that starts later (uvicorn
replaces dead or restarted workers) reads it too, so it serves the latest model, not the one the server
started with.
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

    def publish(self, *, model: str | None = None, reload_keys: bool = False) -> dict[str, Any]:
        """Record a new model directory and/or a key reload; returns the new state."""
        state = self.read()
        if model is not None:
            state["model"] = model
        if reload_keys:
            state["keys_generation"] = int(state.get("keys_generation", 0)) + 1
        state["generation"] = int(state.get("generation", 0)) + 1
        fd, name = tempfile.mkstemp(dir=self.path.parent, prefix=".control-")
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(orjson.dumps(state))
            tmp.replace(self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return state
