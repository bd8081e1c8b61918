"""A GitHub Actions workflow file as :mod:`support.ci_executor` runs it: loaded with PyYAML, checked against
what the executor supports (keys, actions, shells, expressions), its jobs in dependency order."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from support.ci_expr import EXPR, WorkflowError, check, parse

CHECKOUT = "actions/checkout@v4"
SETUP_PYTHON = "actions/setup-python@v5"
_ACTION_INPUTS = {CHECKOUT: {"clean"}, SETUP_PYTHON: {"python-version"}}  # checkout's clean: a clone is
_WORKFLOW_KEYS = {"name", "on", True, "permissions", "env", "jobs"}  # always clean. PyYAML reads on: as True
_JOB_KEYS = {"name", "runs-on", "needs", "if", "environment", "steps", "env", "outputs"}
_STEP_KEYS = {"name", "id", "uses", "with", "run", "env", "shell", "if"}


def _only(mapping: dict[Any, Any], allowed: set[Any], where: str) -> None:
    extra = sorted(str(k) for k in set(mapping) - allowed)
    if extra:
        raise WorkflowError(
            f"{where}: unsupported keys {extra} (the executor runs only {sorted(map(str, allowed))})"
        )


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def step_name(step: dict[str, Any]) -> str:
    """A step's name as GitHub shows it: ``name:``, else ``Run <action>`` or ``Run <first line>``."""
    if "name" in step:
        return str(step["name"])
    return f"Run {step['uses']}" if "uses" in step else f"Run {str(step['run']).splitlines()[0]}"


def parse_file_command(text: str) -> dict[str, str]:
    """The ``name=value`` and ``name<<DELIMITER`` lines of ``$GITHUB_OUTPUT``/``$GITHUB_ENV``.

    Raises:
        WorkflowError: for a line in neither form or a heredoc without its delimiter (GitHub fails the step).
    """
    values: dict[str, str] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line, i = lines[i], i + 1
        if not line.strip():
            continue
        eq, heredoc = line.find("="), line.find("<<")
        if eq >= 0 and (heredoc < 0 or eq < heredoc):
            values[line[:eq]] = line[eq + 1 :]
        elif heredoc >= 0:
            name, delimiter = line[:heredoc], line[heredoc + 2 :]
            try:
                end = lines.index(delimiter, i)
            except ValueError:
                raise WorkflowError(
                    f"file command {name}: matching delimiter {delimiter!r} not found"
                ) from None
            values[name], i = "\n".join(lines[i:end]), end + 1
        else:
            raise WorkflowError(f"file command: invalid line {line!r} (name=value or name<<DELIMITER)")
    return values


@dataclass(frozen=True)
class Workflow:
    """A loaded workflow: ``jobs`` as in the file (``needs`` made a list), ``order`` topological."""

    path: Path
    name: str
    env: dict[str, str]
    jobs: dict[str, dict[str, Any]]
    order: tuple[str, ...]

    @classmethod
    def load(cls, path: Path) -> Workflow:
        """Read and check ``path``.

        Raises:
            WorkflowError: for anything the executor cannot run, a cycle or an unknown job in ``needs``.
        """
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(doc, dict) or not isinstance(doc.get("jobs"), dict) or not doc["jobs"]:
            raise WorkflowError(f"{path}: not a workflow (no jobs)")
        _only(doc, _WORKFLOW_KEYS, "workflow")
        jobs: dict[str, dict[str, Any]] = {}
        for job_id, job in doc["jobs"].items():
            _only(job, _JOB_KEYS, f"job {job_id}")
            needs = job.get("needs", [])
            job = {**job, "needs": [needs] if isinstance(needs, str) else list(needs)}
            if not job.get("steps"):
                raise WorkflowError(f"job {job_id}: no steps")
            env = job.get("environment")
            if isinstance(env, dict):
                _only(env, {"name"}, f"job {job_id} environment")
            for step in job["steps"]:
                _check_step(job_id, step)
            for key in ("env", "outputs"):
                job[key] = {str(k): _text(v) for k, v in (job.get(key) or {}).items()}
            for text in [*job["env"].values(), *job["outputs"].values(), _text(job.get("if", ""))]:
                check(text)
            if "if" in job and isinstance(job["if"], str) and not EXPR.search(job["if"]):
                parse(job["if"])
            jobs[str(job_id)] = job
        env = {str(k): _text(v) for k, v in (doc.get("env") or {}).items()}
        for value in env.values():
            check(value)
        return cls(path, str(doc.get("name", path.name)), env, jobs, _topological(jobs))

    def needs(self, job_id: str) -> list[str]:
        """The jobs ``job_id`` names in ``needs``."""
        return list(self.jobs[job_id]["needs"])

    def ancestors(self, job_id: str) -> list[str]:
        """Every job ``job_id`` depends on, directly or not, in run order."""
        found: set[str] = set()
        todo = self.needs(job_id)
        while todo:
            job = todo.pop()
            if job not in found:
                found.add(job)
                todo += self.needs(job)
        return [j for j in self.order if j in found]

    def dependents(self, job_id: str) -> set[str]:
        """Every job depending on ``job_id``, directly or not."""
        return {j for j in self.jobs if job_id in self.ancestors(j)}

    def environment(self, job_id: str) -> str | None:
        """The job's ``environment`` name, if it has one."""
        env = self.jobs[job_id].get("environment")
        return str(env["name"]) if isinstance(env, dict) else (str(env) if env else None)

    def steps(self) -> list[tuple[str, dict[str, Any]]]:
        """Every step of every job, with its job id."""
        return [(job_id, step) for job_id, job in self.jobs.items() for step in job["steps"]]

    def step_names(self, job_id: str | None = None) -> set[str]:
        """The names of the steps (of one job, or of all)."""
        return {step_name(s) for j, s in self.steps() if job_id in (None, j)}


def _check_step(job_id: str, step: Any) -> None:
    if not isinstance(step, dict):
        raise WorkflowError(f"job {job_id}: a step is not a mapping")
    where = f"job {job_id}, step {step.get('name') or step.get('uses') or step.get('id')}"
    _only(step, _STEP_KEYS, where)
    if ("uses" in step) == ("run" in step):
        raise WorkflowError(f"{where}: a step needs exactly one of uses: and run:")
    if "uses" in step:
        if step["uses"] not in _ACTION_INPUTS:
            raise WorkflowError(
                f"{where}: action {step['uses']!r} is not supported (only {sorted(_ACTION_INPUTS)})"
            )
        _only(step.get("with") or {}, _ACTION_INPUTS[step["uses"]], f"{where} with")
        if "shell" in step or "env" in step:
            raise WorkflowError(f"{where}: shell:/env: on an action step is not supported")
    if step.get("shell") not in (None, "bash"):
        raise WorkflowError(f"{where}: shell {step['shell']!r} is not supported (only bash)")
    for text in [_text(step.get("run", "")), *map(_text, (step.get("env") or {}).values())]:
        check(text)
    if isinstance(step.get("if"), str):
        if EXPR.search(step["if"]):
            check(step["if"])
        else:
            parse(step["if"])
    step["env"] = {str(k): _text(v) for k, v in (step.get("env") or {}).items()} if "run" in step else {}


def _topological(jobs: dict[str, dict[str, Any]]) -> tuple[str, ...]:
    """Jobs in dependency order, ties in file order (Kahn)."""
    for job_id, job in jobs.items():
        unknown = [n for n in job["needs"] if n not in jobs]
        if unknown:
            raise WorkflowError(f"job {job_id} needs unknown job(s) {unknown}")
    order: list[str] = []
    while len(order) < len(jobs):
        ready = [j for j, job in jobs.items() if j not in order and all(n in order for n in job["needs"])]
        if not ready:
            raise WorkflowError(f"needs: form a cycle among {sorted(set(jobs) - set(order))}")
        order.append(ready[0])
    return tuple(order)
