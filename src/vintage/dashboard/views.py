"""What the pages show, gathered from the pipeline state, the audit trail and the deploy targets; pure
data (no HTML), so each piece has its own unit test."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vintage.pipeline import state as st

if TYPE_CHECKING:
    from vintage.audit import AuditEvent
    from vintage.config import Spec

AUDIT_LIMITS = (50, 200, 1000)  # rows the audit page offers; the first is the default


# ------------------------------------------------------------------------------------------- timeline


@dataclass(frozen=True)
class Bar:
    """One row of a run's timeline: a stage or one of its steps, placed on the run's time axis.

    Attributes:
        label: the stage (``build``) or step (``train``) name.
        level: 0 for a stage, 1 for a step.
        status: its status (``succeeded``, ``waiting_approval``...).
        start_s: seconds from the run's creation to its start (``None``: never started).
        seconds: how long it took (until now while it runs; ``None``: never started).
        environment: the stage's environment, if any.
    """

    label: str
    level: int
    status: str
    start_s: float | None
    seconds: float | None
    environment: str | None = None


@dataclass(frozen=True)
class Timeline:
    """A run laid out on one time axis from its creation (``span_s`` long)."""

    span_s: float
    bars: list[Bar] = field(default_factory=list)


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    found = datetime.fromisoformat(text)
    return found if found.tzinfo else found.replace(tzinfo=UTC)


def _bar(
    label: str, level: int, status: str, started: str | None, ended: str | None, t0: datetime, now: datetime
) -> Bar:
    begin, end = _time(started), _time(ended)
    if begin is None:
        return Bar(label, level, status, None, None)
    if end is None or end < begin:
        end = now if status == st.RUNNING else begin
    return Bar(label, level, status, (begin - t0).total_seconds(), (end - begin).total_seconds())


def timeline(run: st.RunState, now: datetime | None = None) -> Timeline:
    """The run's stages and steps on one axis: where each started and how long it took.

    A step still running is drawn up to ``now``; a stage's own times are those the state recorded (a
    stage that waited for approval ends when it stopped to wait).
    """
    now = now or datetime.now(UTC)
    t0 = _time(run.created) or now
    bars: list[Bar] = []
    for stage in run.stages:
        head = _bar(stage.name, 0, stage.status, stage.started, stage.ended, t0, now)
        bars.append(
            Bar(head.label, 0, head.status, head.start_s, head.seconds, environment=stage.environment)
        )
        bars += [_bar(s.name, 1, s.status, s.started, s.ended, t0, now) for s in stage.steps]
    ends = [b.start_s + b.seconds for b in bars if b.start_s is not None and b.seconds is not None]
    return Timeline(max([*ends, 0.001]), bars)


def nice_ticks(span_s: float, count: int = 5) -> list[float]:
    """Round tick positions (seconds) from 0 up to ``span_s``, about ``count`` of them, spaced 1, 2 or 5
    times a power of ten."""
    import math

    raw = max(span_s, 1e-3) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    ticks, value = [], 0.0
    while value <= span_s * (1 + 1e-9):
        ticks.append(round(value, 6))
        value += step
    return ticks


# ---------------------------------------------------------------------------------------- approvals


@dataclass(frozen=True)
class Waiting:
    """A stage waiting at its approval gate."""

    run_id: str
    stage: str
    environment: str | None
    run_actor: str
    requested: str | None
    evidence: dict[str, Any]


def waiting(store: st.StateStore, limit: int = 200) -> list[Waiting]:
    """Every stage of the newest ``limit`` runs that waits for a decision, newest run first."""
    found: list[Waiting] = []
    for run in store.runs(limit):
        if run.status != st.WAITING:
            continue
        for stage in run.stages:
            if stage.status != st.WAITING:
                continue
            asks = [a for a in store.approvals(run.id, stage.name) if a["decision"] == "requested"]
            last = asks[-1] if asks else None
            found.append(
                Waiting(
                    run.id,
                    stage.name,
                    stage.environment,
                    run.actor,
                    last["time"] if last else None,
                    dict(last["evidence"]) if last else {},
                )
            )
    return found


# ------------------------------------------------------------------------------------------- audit


@dataclass(frozen=True)
class AuditFilter:
    """The audit page's filters (each empty = any): an action prefix (``approval.``), an exact target,
    environment and actor, and how many of the newest matching events to show."""

    action: str = ""
    target: str = ""
    environment: str = ""
    actor: str = ""
    limit: int = AUDIT_LIMITS[0]

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> AuditFilter:
        """From a page's query string; an unknown limit falls back to the default."""
        try:
            limit = int(query.get("limit", AUDIT_LIMITS[0]))
        except ValueError:
            limit = AUDIT_LIMITS[0]
        return cls(
            action=query.get("action", "").strip(),
            target=query.get("target", "").strip(),
            environment=query.get("environment", "").strip(),
            actor=query.get("actor", "").strip(),
            limit=limit if limit in AUDIT_LIMITS else AUDIT_LIMITS[0],
        )

    def select(self, state_dir: Path) -> list[AuditEvent]:
        """The newest ``limit`` matching events, newest first."""
        from vintage.audit import events

        found = events(state_dir, action=self.action or None, target=self.target or None)
        found = [
            e
            for e in found
            if (not self.environment or e.environment == self.environment)
            and (not self.actor or e.actor == self.actor)
        ]
        return list(reversed(found[-self.limit :]))


# ------------------------------------------------------------------------------------ environments


@dataclass(frozen=True)
class EnvRow:
    """One environment on the environments page."""

    name: str
    target: str
    serving: str | None  # "winequality v3"
    digest: str | None
    image: str | None
    image_digest: str | None
    url: str | None
    health: str  # ready | not answering | serves another model | crashed | stopped | unknown
    since: str | None
    process: str | None
    error: str | None = None


def environments(spec: Spec) -> list[EnvRow]:
    """What each environment serves now (as ``vintage status``), one failing target not hiding the
    others."""
    from vintage.errors import VintageError
    from vintage.pipeline.ops import status

    failed: dict[str, VintageError] = {}
    crashed: dict[str, str] = {}
    found = status(spec, errors=failed, crashed=crashed)
    rows: list[EnvRow] = []
    for name, dep in found.items():
        target = spec.environments[name].target
        if dep is None:
            error = failed.get(name)
            rows.append(
                EnvRow(
                    name,
                    target,
                    None,
                    None,
                    None,
                    None,
                    None,
                    "unknown" if error else "crashed" if name in crashed else "stopped",
                    None,
                    None,
                    error.headline if error else crashed.get(name),
                )
            )
            continue
        health = "ready" if dep.healthy else "not answering"
        if dep.tampered:
            health = "serves another model"
        process = f"pid {dep.pid}" if dep.pid else None
        if dep.replicas is not None:
            process = f"{dep.ready_replicas}/{dep.replicas} pods ready"
        elif dep.container:
            process = f"container {dep.container}"
        rows.append(
            EnvRow(
                name,
                dep.target,
                f"{dep.model_name} v{dep.version}",
                dep.digest,
                dep.image,
                dep.image_digest,
                dep.url,
                health,
                dep.since,
                process,
            )
        )
    return rows


# ------------------------------------------------------------------------------------------ MLflow


@dataclass(frozen=True)
class MlflowLinks:
    """Links into the MLflow UI at ``base`` (``vintage ui``'s by default)."""

    base: str
    experiment_id: str | None = None

    def experiment_runs(self) -> str:
        """The experiment's runs view (the experiments list when its id is unknown)."""
        if self.experiment_id is None:
            return f"{self.base}/#/experiments"
        return f"{self.base}/#/experiments/{self.experiment_id}/runs"

    def run(self, run_id: str) -> str:
        """One MLflow run (the UI finds its experiment)."""
        return f"{self.base}/#/runs/{run_id}"


def parent_run_id(run: st.RunState) -> str | None:
    """The MLflow parent (grid) run a pipeline run's train step made."""
    found = run.output("train").get("parent_run_id")
    return str(found) if found else None


def report_file(state_dir: Path, record: Mapping[str, Any]) -> Path | None:
    """The evaluation report of a release record when it is a file inside the state directory (an MLflow
    artifact URI, a path outside, or a missing file: ``None``)."""
    evaluation = record.get("evaluation")
    if not isinstance(evaluation, dict) or not isinstance(evaluation.get("report"), str):
        return None
    report: str = evaluation["report"]
    if "://" in report or report.startswith("/"):
        return None
    root = state_dir.resolve()
    path = (root / report).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        return None
    return path
