"""What surprised a new user, end to end as real processes: `vintage ui` stopped with SIGTERM, approvals
decided twice, unknown stage and environment names, rollback alias moves in the audit trail, `release show`
without --json, and the curl example outside an activated venv."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from support.scoring import free_port

pytestmark = pytest.mark.slow

VINTAGE = str(Path(sys.executable).with_name("vintage"))
REPO = Path(__file__).resolve().parents[2]


def _proc_stat(pid: int) -> tuple[int, int, str] | None:
    """(ppid, pgid, state) of a process from /proc, ``None`` when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()
    return int(fields[1]), int(fields[2]), fields[0]


def _processes() -> dict[int, tuple[int, int, str]]:
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _proc_stat(int(entry.name))) is not None:
            found[int(entry.name)] = stat
    return found


def _descendants(root: int) -> dict[int, int]:
    """pid -> process group of every live descendant of ``root``."""
    procs = _processes()
    out: dict[int, int] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, pgid, state) in procs.items():
            if ppid == parent and pid not in out and state != "Z":
                out[pid] = pgid
                frontier.append(pid)
    return out


def _live_in_groups(groups: set[int]) -> list[int]:
    return [pid for pid, (_, pgid, state) in _processes().items() if pgid in groups and state != "Z"]


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.HTTPError):
        return False


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_ui_stopped_with_sigterm_leaves_no_mlflow_server(tmp_path: Path) -> None:
    (tmp_path / "vintage.yaml").write_text((REPO / "vintage.yaml").read_text())
    port = free_port()
    ui = subprocess.Popen(
        [VINTAGE, "ui", "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own group, so the test can find everything it started
    )
    groups = {ui.pid}
    try:
        deadline = time.monotonic() + 180
        while not _answers(port):
            assert ui.poll() is None, ui.stderr.read().decode() if ui.stderr else ""
            assert time.monotonic() < deadline, "the MLflow UI never answered"
            time.sleep(0.5)
        started = _descendants(ui.pid)
        assert started, "vintage ui started no server process"
        groups |= set(started.values())

        ui.send_signal(signal.SIGTERM)
        ui.wait(timeout=60)

        assert _live_in_groups(groups) == []
        assert [pid for pid in started if (s := _proc_stat(pid)) is not None and s[2] != "Z"] == []
        assert not _port_open(port)
    finally:
        for group in groups:  # never leave a server behind, whatever failed above
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            ui.wait(timeout=10)
