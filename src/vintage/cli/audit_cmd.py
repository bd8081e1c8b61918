"""``vintage audit``: the audit trail."""

from __future__ import annotations

from typing import Annotated

import typer

from vintage.cli import state


def audit(
    action: Annotated[
        str | None, typer.Option("--action", "-a", help="Only actions starting with this (e.g. secret.).")
    ] = None,
    target: Annotated[str | None, typer.Option("--target", "-t", help="Only this target.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Newest N events.")] = 50,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the audit trail: who did what to which target, when, and how it ended (oldest first)."""
    from dataclasses import asdict

    from rich.table import Table

    from vintage.audit import events

    found = events(state.settings().state_dir.resolve(), action=action, target=target, limit=limit)
    if json_out:
        state.print_json([asdict(e) for e in found])
        return
    if not found:
        state.out().print("the audit trail is empty")
        return
    table = Table(title="Audit trail", title_justify="left")
    for col in ("time", "actor", "action", "target", "outcome", "reader", "environment", "detail"):
        table.add_column(col)
    for e in found:
        table.add_row(e.time, e.actor, e.action, e.target, e.outcome, e.reader, e.environment, e.detail)
    state.out().print(table)
