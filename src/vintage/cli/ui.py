"""``vintage ui``: the MLflow UI on vintage's store, bound to 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
import sys
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
    try:
        code = subprocess.call(cmd, env=env)
    except KeyboardInterrupt:
        code = 0
    raise typer.Exit(code)
