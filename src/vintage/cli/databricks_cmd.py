"""``vintage databricks submit``: run one stage as a one-time Databricks job run on a job cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vintage.cli import state

app = typer.Typer(
    help="Run stages on Databricks job clusters (compute.engine: databricks).", no_args_is_help=True
)


def _default_run_id() -> str:
    from datetime import UTC, datetime

    return "dbx-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%S")


@app.command("submit")
def submit(
    stage: Annotated[str, typer.Argument(metavar="STAGE", help="Stage to run (e.g. build).")],
    run_id: Annotated[
        str | None, typer.Option("--run-id", help="vintage run id (default: dbx-<UTC time>).")
    ] = None,
    wheel: Annotated[
        Path | None,
        typer.Option(
            "--wheel",
            help="Project wheel to upload (default: $VINTAGE_DATABRICKS_WHEEL, else build it with pip).",
        ),
    ] = None,
    upload_to: Annotated[
        str | None,
        typer.Option("--upload-to", help="Workspace folder for the uploads (default: ~/.vintage/jobs)."),
    ] = None,
) -> None:
    """Upload the wheel and vintage.yaml, submit STAGE as a job run, stream its states, print its logs."""
    import os
    import tempfile

    from vintage.cli.signals import stop_on_signals
    from vintage.compute.databricks import DatabricksJobRunner, build_wheel, find_project_dir
    from vintage.config import resolve_config_path
    from vintage.errors import ConfigError
    from vintage.pipeline.ops import check_stage
    from vintage.pipeline.remote import WHEEL_VARIABLE

    spec = state.load()
    check_stage(spec, stage)
    console = state.err()
    if spec.compute.engine != "databricks":
        console.print(
            f"[yellow]warning:[/] compute.engine is {spec.compute.engine!r}, not 'databricks'; "
            "submitting anyway"
        )
    dbx = spec.compute.databricks
    if not dbx.host or not dbx.token:
        raise ConfigError(
            "compute.databricks.host and compute.databricks.token must be set",
            hint="token: ${secret:SCOPE/KEY} (see docs/databricks.md)",
        )
    reader = state.secret_reader("cli:databricks", spec=spec)
    host, token = reader.resolve(dbx.host), reader.resolve(dbx.token)
    config_text = resolve_config_path(state.STATE.config).read_text(encoding="utf-8")
    run_id = run_id or _default_run_id()
    runner = DatabricksJobRunner(host, token, dbx.job_cluster, upload_root=upload_to)
    with tempfile.TemporaryDirectory(prefix="vintage-wheel-") as tmp:
        if wheel is None and os.environ.get(WHEEL_VARIABLE):
            wheel = Path(os.environ[WHEEL_VARIABLE])
        if wheel is None:
            console.print("building the project wheel")
            wheel = build_wheel(find_project_dir(), Path(tmp))
        with stop_on_signals() as stop:
            result = runner.submit_stage(
                stage, wheel=wheel, config_text=config_text, run_id=run_id, say=console.print, stop=stop
            )
    console.print(
        f"stage {stage} of run {run_id} succeeded on Databricks: {result.get('run_page_url') or ''}"
    )
    if result.get("logs"):
        state.out().print(result["logs"], markup=False, end="")
    if result.get("logs_truncated"):
        console.print("(the logs were truncated by Databricks)")
