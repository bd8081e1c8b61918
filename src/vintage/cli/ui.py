"""``vintage ui``: the MLflow UI on vintage's store, bound to 127.0.0.1, opened at the experiment's runs.

MLflow 3's UI is a single-page app with hash routes; its home page is the GenAI overview. The runs table
of an experiment is the route ``/experiments/:experimentId/runs`` (``experimentPageTabRuns`` in the
UI's ``experiment-tracking/routes``), so the address to open is ``<base>/#/experiments/<id>/runs``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Annotated

import typer

from vintage.cli import state

if TYPE_CHECKING:
    from vintage.config import Spec
    from vintage.tracking import Resolve, TrackingTarget


def runs_view_url(base: str, experiment_id: str | None) -> str:
    """The MLflow UI address of an experiment's runs table (``base`` itself when the experiment is not
    known yet)."""
    base = base.rstrip("/")
    return f"{base}/#/experiments/{experiment_id}/runs" if experiment_id else f"{base}/"


def experiment_id(spec: Spec, target: TrackingTarget, resolve: Resolve) -> str | None:
    """The id of the workload's experiment in the tracking store; ``None`` when the store or the
    experiment does not exist yet, or the store cannot be read (the UI then opens at its home page)."""
    from vintage.errors import VintageError
    from vintage.tracking import open_session

    if target.store_path is not None and not target.store_path.exists():
        return None
    try:
        return open_session(spec, create_experiment=False, resolve=resolve).experiment_id
    except VintageError:
        return None


def ui(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 5000,
    open_browser: Annotated[
        bool, typer.Option("--open", help="Open the runs view in a web browser once the UI answers.")
    ] = False,
) -> None:
    """Start the MLflow UI on the embedded store (127.0.0.1 only) and print the address of the
    experiment's runs view. Ctrl-C stops it."""
    from vintage.extras import require
    from vintage.tracking import resolve_target

    spec = state.load()
    resolve = state.secret_reader("cli:ui", spec=spec).resolve
    target = resolve_target(spec, resolve=resolve)
    console = state.err()
    scheme = target.uri.split(":", 1)[0]
    if scheme == "databricks":
        console.print(f"The tracking server at {target.display} serves its own UI; open it in a browser.")
        return
    if scheme in ("http", "https"):
        url = runs_view_url(target.display, experiment_id(spec, target, resolve))
        console.print(f"The tracking server serves its own UI: {url}")
        return
    require("ui", "vintage ui")
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", target.uri]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    if target.artifact_root is not None:
        if target.store_path is not None and not target.store_path.exists():
            console.print("[yellow]No runs yet[/] (`vintage train` creates them); starting the UI anyway.")
        target.artifact_root.mkdir(parents=True, exist_ok=True)
        cmd += ["--default-artifact-root", str(target.artifact_root)]
    url = runs_view_url(f"http://127.0.0.1:{port}", experiment_id(spec, target, resolve))
    console.print(f"MLflow UI: {url} (Ctrl-C to stop)")
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    if open_browser:
        threading.Thread(target=_open_when_up, args=(port, url), daemon=True).start()
    raise typer.Exit(_run_group(cmd, env))


def _open_when_up(port: int, url: str, timeout_s: float = 120.0) -> None:
    """Open ``url`` in the default browser once the server on ``port`` answers its health check."""
    import urllib.request
    import webbrowser

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                webbrowser.open(url)
                return
        except OSError:
            time.sleep(0.5)


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
