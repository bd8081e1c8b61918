"""What :mod:`support.ci_executor` reports: a status per job and step, logs, outputs, exit codes and times
(monotonic for ordering and overlap, wall clock for reading), and the rule that kills a step."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path


class Status(enum.Enum):
    """A job's or step's conclusion."""

    SUCCESS = "success"
    FAILURE = "failure"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Kill:
    """SIGKILL the process group of step ``step`` of job ``job`` when ``when(line)`` is true for an output
    line (masked, without its newline)."""

    job: str
    step: str
    when: Callable[[str], bool]


@dataclass
class StepResult:
    """One step: its masked log lines, outputs, exit code (None if it ran no process) and times."""

    name: str
    id: str | None
    status: Status
    exit_code: int | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    killed: bool = False
    timed_out: bool = False
    started: float = 0.0
    ended: float = 0.0


@dataclass
class JobResult:
    """One attempt of one job. ``started``/``ended`` are ``time.monotonic()``; ``*_at`` wall clock (UTC)."""

    job: str
    attempt: int
    status: Status
    exit_code: int | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    steps: list[StepResult] = field(default_factory=list)
    error: str | None = None
    workspace: Path | None = None
    started: float = 0.0
    ended: float = 0.0
    started_at: datetime | None = None
    ended_at: datetime | None = None

    @property
    def killed(self) -> bool:
        """Whether a step was killed (by a :class:`Kill` rule or its timeout)."""
        return any(s.killed or s.timed_out for s in self.steps)

    @property
    def duration(self) -> float:
        """Seconds from the job's start to its end."""
        return self.ended - self.started

    @property
    def log(self) -> str:
        """The job's masked log: every step's lines under a ``##[group]<step name>`` header, then the
        job's own error (a missing approval), if any."""
        lines = [line for s in self.steps for line in [f"##[group]{s.name}", *s.log]]
        return "\n".join(lines + ([f"##[error]{self.error}"] if self.error else []))

    def step(self, name: str) -> StepResult:
        """The step named ``name``."""
        return next(s for s in self.steps if s.name == name)


@dataclass
class RunResult:
    """The jobs after one attempt: ``jobs`` holds each job's latest result (re-run or carried over),
    ``executed`` the jobs this attempt ran, ``warnings`` those of the whole run so far (unset secrets,
    variables or outputs read as the empty string; job outputs dropped because they held a secret)."""

    run_id: str
    attempt: int
    jobs: dict[str, JobResult]
    executed: list[str]
    warnings: list[str]
