"""``vintage ci render``: the team's CI file (GitHub Actions, Azure Pipelines) for vintage.yaml's pipeline
(docs/ci.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vintage.cli import state

app = typer.Typer(help="CI files for the pipeline (GitHub Actions, Azure Pipelines).", no_args_is_help=True)


@app.command("render")
def render(
    kind: Annotated[str, typer.Argument(metavar="CI", help="github-actions or azure-pipelines.")],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the file here (default: stdout)."),
    ] = None,
    allow_local_state: Annotated[
        bool,
        typer.Option(
            "--allow-local-state",
            help="Render although the pipeline state is local SQLite (all jobs on one machine).",
        ),
    ] = False,
) -> None:
    """Write the CI file of vintage.yaml's pipeline: one job per stage running `vintage stage NAME
    --run-id <CI run id>`, dependencies and conditions as declared, approval stages behind the CI's own
    environment approvals, secrets mapped to VINTAGE_SECRET__... variables.

    Run it from the repository root. Usual paths: .github/workflows/vintage.yml, azure-pipelines.yml.
    """
    from vintage.ci import render as render_ci
    from vintage.config import resolve_config_path

    text = render_ci(
        state.load(),
        kind,
        config_path=resolve_config_path(state.STATE.config),
        cwd=Path.cwd(),
        allow_local_state=allow_local_state,
    )
    if output is None:
        typer.echo(text, nl=False)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    state.err().print(f"wrote {output}", markup=False, highlight=False)
