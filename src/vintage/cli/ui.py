"""``vintage ui``: the MLflow UI on vintage's store, bound to 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from typing import Annotated

import typer

from vintage.cli import state


def ui(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 5000,
) -> None:
    """Open the MLflow UI on the embedded store (127.0.0.1 only). Ctrl-C stops it."""
    from vintage.tracking import resolve_target

    spec = state.load()
    target = resolve_target(spec, resolve=state.secret_reader("cli:ui", spec=spec).resolve)
    console = state.err()
    if target.uri.split(":", 1)[0] in ("http", "https", "databricks"):
        console.print(f"The tracking server at {target.display} serves its own UI; open it in a browser.")
        return
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", target.uri]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    if target.artifact_root is not None:
        if target.store_path is not None and not target.store_path.exists():
            console.print("[yellow]No runs yet[/] (`vintage train` creates them); starting the UI anyway.")
        target.artifact_root.mkdir(parents=True, exist_ok=True)
        cmd += ["--default-artifact-root", str(target.artifact_root)]
    console.print(f"MLflow UI on http://127.0.0.1:{port} (Ctrl-C to stop)")
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    raise typer.Exit(_run_group(cmd, env))


def _run_group(cmd: list[str], env: dict[str, str]) -> int:
    """Run ``cmd`` as the leader of its own process group until it exits, or until Ctrl-C / SIGTERM /
    SIGHUP reach this process; then stop the whole group (the MLflow server and its workers), so no
    server is left serving after ``vintage ui`` is gone. Returns the exit code to use."""
    from vintage.cli.signals import stop_on_signals

    # Its own group: a signal sent to this process alone (SIGTERM from a supervisor) would otherwise leave
    # the server running; Ctrl-C reaches this process, which then stops the group.
    proc = subprocess.Popen(cmd, env=env, process_group=0)
    try:
        with stop_on_signals() as stop:
            previous_hup = signal.signal(signal.SIGHUP, lambda *_: stop.set())  # the terminal closed
            try:
                while proc.poll() is None and not stop.wait(0.2):
                    pass
            finally:
                signal.signal(signal.SIGHUP, previous_hup)
            stopped = stop.is_set()
    finally:
        _stop_group(proc)
    return 0 if stopped else (proc.returncode or 0)


def _stop_group(proc: subprocess.Popen[bytes], grace_s: float = 15.0) -> None:
    """SIGTERM the process group led by ``proc``; SIGKILL what is left after ``grace_s``."""
    pgid = proc.pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace_s)
    while time.monotonic() < deadline and _group_alive(pgid):
        time.sleep(0.1)
    if _group_alive(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
