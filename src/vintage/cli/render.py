"""Tables and JSON shapes shared by the commands."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    from rich.table import Table

    from vintage.registry import RegisteredVersion
    from vintage.training import PointRun, TrainingReport

METRIC_ORDER = ("rmse", "mae", "r2", "cv_rmse", "cv_mae", "cv_r2")


def fmt(value: float | None) -> str:
    """Metric for a table cell."""
    return "-" if value is None else f"{value:.4f}"


def params_text(params: dict[str, Any]) -> str:
    """``alpha=0.5 l1_ratio=0.5``."""
    return " ".join(f"{k}={v}" for k, v in params.items())


def runs_table(runs: list[PointRun], selection_key: str | None = None, chosen: str | None = None) -> Table:
    """Grid runs with params, metrics, status; the chosen run is marked."""
    from rich.table import Table

    metrics = [m for m in METRIC_ORDER if any(m in r.metrics for r in runs)] or ["rmse", "mae", "r2"]
    table = Table(title="Grid runs", title_justify="left")
    table.add_column("run", no_wrap=True)
    table.add_column("estimator")
    table.add_column("params")
    for m in metrics:
        table.add_column(m + (" *" if m == selection_key else ""), justify="right")
    table.add_column("status")
    table.add_column("time", justify="right")
    for r in runs:
        status = "[green]FINISHED[/]" if r.status == "FINISHED" else f"[red]{r.status}[/] {r.error or ''}"
        mark = " <- chosen" if r.run_id == chosen else ""
        table.add_row(
            r.run_id[:8],
            r.estimator.rpartition(".")[2],
            params_text(r.params),
            *[fmt(r.metrics.get(m)) for m in metrics],
            status + mark,
            f"{r.seconds:.2f}s",
        )
    return table


def run_json(r: PointRun) -> dict[str, Any]:
    """One run for --json."""
    return {
        "run_id": r.run_id,
        "name": r.name,
        "estimator": r.estimator,
        "params": {
            k: v if isinstance(v, int | float | str | bool) or v is None else str(v)
            for k, v in r.params.items()
        },
        "metrics": r.metrics,
        "status": r.status,
        "error": r.error,
        "seconds": round(r.seconds, 4),
        "model_uri": r.model_uri,
    }


def report_json(report: TrainingReport) -> dict[str, Any]:
    """A training report for --json."""
    return {
        "experiment_id": report.experiment_id,
        "parent_run_id": report.parent_run_id,
        "data": {"source": report.data_source, "digest": report.data_digest},
        "n_jobs": report.n_jobs,
        "runs": [run_json(r) for r in report.runs],
        "failed": [r.run_id for r in report.failed],
    }


def version_json(v: RegisteredVersion) -> dict[str, Any]:
    """A model version for --json."""
    return {
        "name": v.name,
        "version": v.version,
        "aliases": v.aliases,
        "run_id": v.run_id,
        "metrics": {
            k.removeprefix("metric."): float(val) for k, val in v.tags.items() if k.startswith("metric.")
        },
        "data_digest": v.tags.get("vintage.data_digest"),
        "created_ms": v.created_ms,
        "reused": v.reused,
    }


_RELEASE_SHOWN = frozenset(
    {
        "run_id",
        "model_name",
        "version",
        "mlflow_run_id",
        "created",
        "metrics",
        "selection_metric",
        "champion",
        "evaluation",
        "approvals",
        "deployments",
        "promotions",
    }
)


def _evaluation_lines(evaluation: Any, state_dir: Path | None) -> list[str]:
    if not isinstance(evaluation, dict):
        return []
    report = str(evaluation.get("report") or "?")
    where = str(state_dir / report) if state_dir is not None and "://" not in report else report
    lines = [f"  evaluation report: {where}"]
    if evaluation.get("artifact_uri"):
        lines.append(f"    artifact: {evaluation['artifact_uri']}")
    cand, champ = evaluation.get("candidate") or {}, evaluation.get("champion")
    shown = ("rmse", "mae", "r2", "acc_0.5", "acc_1.0")
    lines.append("    candidate: " + ", ".join(f"{k} {fmt(cand[k])}" for k in shown if k in cand))
    if isinstance(champ, dict):
        lines.append(
            f"    champion v{evaluation.get('champion_version', '?')}: "
            + ", ".join(f"{k} {fmt(champ[k])}" for k in shown if k in champ)
        )
    return lines


def _compact(value: Any) -> str:
    import json

    return value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)


def _time(value: Any) -> str:
    return str(value)[:19].replace("T", " ") if value else "?"


def release_lines(record: dict[str, Any], state_dir: Path | None = None) -> list[str]:
    """A release record for people (``vintage release show``; ``--json`` prints the record itself).

    Every key of the record is shown: the known ones in their own words, any other as ``key: value``.
    ``state_dir`` makes the evaluation report's path absolute.
    """
    model = f"{record.get('model_name', '?')} v{record.get('version', '?')}"
    lines = [
        f"release of run {record.get('run_id', '?')}: {model}"
        + (f" (MLflow run {record['mlflow_run_id']})" if record.get("mlflow_run_id") else "")
    ]
    if record.get("created"):
        lines.append(f"  created: {_time(record['created'])} UTC")
    metrics = record.get("metrics") or {}
    if metrics:
        chosen = record.get("selection_metric")
        shown = [
            f"{k} {v:.4f}" if isinstance(v, int | float) else f"{k} {v}" for k, v in sorted(metrics.items())
        ]
        lines.append("  metrics: " + ", ".join(shown) + (f" (selected on {chosen})" if chosen else ""))
    for key in sorted(set(record) - _RELEASE_SHOWN):
        lines.append(f"  {key.replace('_', ' ')}: {_compact(record[key])}")
    champ = record.get("champion")
    if isinstance(champ, dict):
        line = f"  champion gate: {champ.get('verdict', '?')}"
        if champ.get("candidate_score") is not None:
            line += f" (candidate {champ.get('metric', '')} {fmt(champ['candidate_score'])}"
            if champ.get("champion_score") is not None:
                line += f", champion v{champ.get('champion')} {fmt(champ['champion_score'])}"
            line += ")"
        if champ.get("forced"):
            line += f"; forced: {champ.get('force_reason', '')}"
        lines.append(line)
    lines += _evaluation_lines(record.get("evaluation"), state_dir)
    for stage, a in sorted((record.get("approvals") or {}).items()):
        how = "auto-approved (--auto-approve)" if a.get("auto") else a.get("decision", "approved")
        comment = f": {a['comment']}" if a.get("comment") else ""
        lines.append(f"  approval {stage}: {how} by {a.get('by', '?')} at {_time(a.get('time'))}{comment}")
    for env, d in sorted((record.get("deployments") or {}).items()):
        if d.get("rolled_back"):
            lines.append(f"  deployment {env}: rolled back ({d.get('reason', '')})")
        elif d.get("action") == "failed":
            lines.append(
                f"  deployment {env}: v{d.get('version', '?')} failed ({_time(d.get('time'))}): "
                f"{d.get('error', '')}"
            )
        else:
            lines.append(
                f"  deployment {env}: {d.get('action', '?')} v{d.get('version', '?')} at {d.get('url', '?')}"
                f" ({_time(d.get('time'))})"
            )
    for alias, p in sorted((record.get("promotions") or {}).items()):
        was = f" (was v{p['previous']})" if p.get("previous") else ""
        lines.append(f"  promotion: alias {alias} -> v{p.get('version', '?')}{was} at {_time(p.get('time'))}")
    return lines
