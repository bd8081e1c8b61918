"""``vintage monitor ENV``: drift of an environment's traffic against its training data; exit 4 on drift."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from vintage.cli import state

if TYPE_CHECKING:
    from rich.table import Table

    from vintage.monitoring import MonitorReport


def monitor(
    environment: Annotated[str, typer.Argument(help="The environment whose inference log is read.")],
    since: Annotated[
        str | None,
        typer.Option("--since", help="Only rows logged in this last duration: 90s, 15m, 2h, 7d, 1w, 1h30m."),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    html_path: Annotated[
        Path | None, typer.Option("--html", help="Also write a self-contained HTML report (plots embedded).")
    ] = None,
) -> None:
    """Compare every feature and the predictions an environment saw with the training data (PSI, KS test,
    missing and out-of-range rates), with request volume and latency.

    Exits 4 when a threshold (`monitoring` in vintage.yaml) is crossed, so cron or CI can alert; 0 when not.
    """
    from vintage.errors import DriftDetected
    from vintage.monitoring import parse_duration, report

    window = parse_duration(since) if since is not None else None
    spec = state.load()
    result = report(spec, environment, window)
    if html_path is not None:
        from vintage.fsutil import write_private
        from vintage.monitoring.html import render

        write_private(html_path, render(result).encode("utf-8"))
    if json_out:
        state.print_json(result.to_dict())
    else:
        _print(result, html_path)
    worst = result.worst()
    if worst is not None:
        name, drift = worst
        others = sum(d.flagged for d in result.columns().values()) - 1
        more = f" and {others} other column(s)" if others else ""
        raise DriftDetected(
            f"{environment}: {name} drifted ({'; '.join(drift.reasons)}){more}",
            hint=f"`vintage monitor {environment} --html report.html` plots each column against the training "
            "data; thresholds are `monitoring` in vintage.yaml",
        )


def _print(result: MonitorReport, html_path: Path | None) -> None:
    from vintage.monitoring.report import iso_utc

    console = state.out()
    lat = result.latency_ms
    versions = ", ".join(f"v{v}" for v in result.model_versions) or "unknown version"
    since = f"since {iso_utc(result.since)}" if result.since else "whole log"
    console.print(
        f"[bold]{result.environment}[/] ({since}): {result.sampled_rows:,} logged rows, about "
        f"{result.rows:,} scored, {iso_utc(result.window[0])} .. {iso_utc(result.window[1])}; {versions}"
    )
    console.print(f"latency p50 {lat['p50']:.3f} ms, p95 {lat['p95']:.3f} ms, p99 {lat['p99']:.3f} ms")
    console.print(f"reference: training split of {result.dataset}")
    if not result.judged:
        console.print(
            f"[yellow]only {result.sampled_rows} rows (monitoring.min_rows = {result.thresholds.min_rows}): "
            "PSI and KS not judged[/]"
        )
    console.print(_table(result))
    if html_path is not None:
        console.print(f"HTML report: {html_path}")


def _table(result: MonitorReport) -> Table:
    from rich.markup import escape
    from rich.table import Table

    table = Table()
    for col in ("column", "PSI", "KS p", "missing", "out of range", "verdict"):
        table.add_column(col, justify="left" if col in ("column", "verdict") else "right")
    for name, d in result.columns().items():
        verdict = f"[red]{escape('; '.join(d.reasons))}[/]" if d.flagged else "[green]ok[/]"
        table.add_row(
            escape(name),
            f"{d.psi:.3f}",
            f"{d.ks_p:.2g}",
            f"{d.missing_rate:.1%}",
            f"{d.out_of_range_rate:.1%}",
            verdict,
        )
    return table
