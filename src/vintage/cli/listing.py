"""``vintage runs`` and ``vintage models``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from vintage.cli import render, state


def runs(
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Newest N runs.")] = 20,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """MLflow grid runs of the experiment (newest first): run id, params, metrics, status."""
    from vintage.tracking import open_session
    from vintage.training.history import recent_runs

    spec = state.load()
    session = open_session(
        spec, create_experiment=False, resolve=state.secret_reader("cli:runs", spec=spec).resolve
    )
    found = recent_runs(session, limit)
    if json_out:
        state.print_json([render.run_json(r) for r in found])
        return
    state.out().print(render.runs_table(found, spec.selection.selection_key))


def models(
    name: Annotated[str | None, typer.Option(help="Registered model (default: model_name).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the versions of the registered model with aliases and metrics."""
    from rich.table import Table

    from vintage.registry import list_versions
    from vintage.tracking import open_session

    spec = state.load()
    model = name or spec.model_name
    session = open_session(
        spec, create_experiment=False, resolve=state.secret_reader("cli:models", spec=spec).resolve
    )
    versions = sorted(list_versions(session.client, model), key=lambda v: -v.version)
    if json_out:
        state.print_json([render.version_json(v) for v in versions])
        return
    if not versions:
        state.out().print(f"no versions of {model} yet (run `vintage train`)")
        return
    table = Table(title=f"Registered model {model}", title_justify="left")
    for col in ("version", "aliases", "run", "rmse", "mae", "r2", "created"):
        table.add_column(col, justify="right" if col in ("version", "rmse", "mae", "r2") else "left")
    for v in versions:
        created = datetime.fromtimestamp(v.created_ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        table.add_row(
            str(v.version),
            ", ".join(v.aliases) or "-",
            (v.run_id or "-")[:8],
            render.fmt(v.metric("rmse")),
            render.fmt(v.metric("mae")),
            render.fmt(v.metric("r2")),
            created,
        )
    state.out().print(table)
