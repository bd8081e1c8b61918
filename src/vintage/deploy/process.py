"""The processes of the local deploy target: is a recorded pid still a scoring server, and stop one.

A server leads its own session (its workers are in its process group), so stopping it reaches every
worker. Servers started by this process are adopted here: polling them reaps them, so a stopped child
never lingers as a zombie that still looks alive to ``kill(pid, 0)``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from vintage.serving.launch import MODULE

POLL_S = 0.02

_children: dict[int, subprocess.Popen[bytes]] = {}


def adopt(proc: subprocess.Popen[bytes]) -> None:
    """Remember a server this process started (so :func:`alive` reaps it once it exits)."""
    _children[proc.pid] = proc


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone; a child of this process is reaped)."""
    child = _children.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        del _children[pid]
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive, and never ours (see is_server)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): kill(0) is all we know
    return stat.rsplit(")", 1)[-1].split()[:1] != ["Z"]


def is_server(pid: int) -> bool:
    """True when ``pid`` runs ``vintage.serving`` (guards against a recycled pid; needs /proc)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return not Path("/proc/self").exists()  # no /proc (macOS): cannot tell, trust the pid file
    return MODULE.encode() in cmdline


def terminate(pid: int, grace_s: float) -> None:
    """SIGTERM the server (it drains, and stops its workers), then SIGKILL its process group."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGTERM)
    if wait_gone(pid, grace_s) and group_gone(pid, 5.0):
        return  # the server and every worker of its session are gone
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)  # the server leads its own session: its workers go too
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)
    wait_gone(pid, 5.0)


def group_gone(pgid: int, timeout: float) -> bool:
    """Wait until no process of group ``pgid`` (the server's workers) is left."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_S)


def wait_gone(pid: int, timeout_s: float) -> bool:
    """Wait until ``pid`` is gone; ``False`` when it still runs after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_S)
    return True
