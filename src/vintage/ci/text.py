"""Small helpers shared by the renderers: YAML scalars, comment blocks and the shell of a stage job.

The files are written as text (not dumped from a mapping) so they can carry comments where a reader needs
them: who sets the approvals, why there is no concurrency group, where the secrets come from.
"""

from __future__ import annotations

import json
import textwrap

from vintage.ci.plan import HEADER, Job, Plan
from vintage.errors import EXIT_WAITING_APPROVAL


def regenerate(plan: Plan, kind: str, path: str) -> str:
    """The command that writes this file again."""
    config = f"--config {plan.config_path} " if plan.config_path else ""
    local = " --allow-local-state" if plan.local_state else ""
    return f"vintage {config}ci render {kind} --output {path}{local}"


def q(value: str) -> str:
    """``value`` as a double-quoted YAML scalar (a JSON string is one)."""
    return json.dumps(value)


def comment(text: str, indent: int = 0, width: int = 108) -> list[str]:
    """``text`` as ``#`` lines, wrapped, at ``indent`` spaces."""
    pad = " " * indent
    return [f"{pad}# {line}" for line in textwrap.wrap(text, width - indent - 2)]


def header(plan: Plan, kind: str, path: str) -> list[str]:
    """The lines every generated file starts with."""
    lines = [
        f"# {HEADER.format(config=plan.config)}.",
        f"# Regenerate: {regenerate(plan, kind, path)}",
        *comment(
            "One job per stage of pipeline.stages; each installs the project and runs "
            "`vintage stage NAME --run-id <this CI run's id>`, so every job of a CI run (and every re-run "
            "of a job) attaches to one vintage run and a re-run resumes the stage: steps that succeeded are "
            "not repeated. docs/ci.md maps it stage by stage."
        ),
    ]
    if plan.local_state:
        lines += comment(
            "WARNING: rendered with --allow-local-state: the pipeline state is in SQLite under state_dir, "
            "so every job must run on the same machine in the same working directory (one self-hosted "
            "runner); jobs on different machines would not see each other's runs, locks or approvals."
        )
    if not plan.tracking_uri_set:
        lines += comment(
            "tracking_uri is not set in vintage.yaml: jobs on different machines need a shared MLflow "
            "server (set tracking_uri, or MLFLOW_TRACKING_URI in the CI's variables)."
        )
    return lines


def run_id_note() -> str:
    """Why the run id leaves out the attempt number."""
    return (
        "The vintage run id is the CI run's id without the attempt number: a job re-run after a failure "
        "(or a kill) attaches to the same vintage run and resumes it."
    )


def concurrency_note() -> str:
    """Why the file has no concurrency group."""
    return (
        "No `concurrency` group: vintage takes its own lock on an environment for each deploying stage "
        "(shared through the pipeline state), so two runs never deploy to one environment at once; a CI "
        "concurrency group would only queue or cancel whole runs and does not cover runs from elsewhere."
    )


def stage_script(job: Job, *, vintage: str, run_id: str, approved_in: str) -> str:
    """The shell script of a stage job.

    For an approval stage, the CI's gate has already passed when the job starts; vintage's own gate then
    stops with exit 3 (waiting), the script records the CI's approver with ``vintage approve`` (vintage
    checks ``approvers`` and ``forbid_self_approval``, and writes the release record and audit trail),
    and runs the stage again. A re-run after the approval was recorded goes straight through.
    """
    stage = f"{vintage} stage {job.stage} --run-id {run_id}"
    if not job.approval:
        return stage
    approve = (
        f'{vintage} approve {run_id} {job.stage} --as "$VINTAGE_APPROVER" \\\n'
        f"    --comment {q(f'approved in {approved_in}')}"
    )
    return (
        "set -eu\n"
        "code=0\n"
        f"{stage} || code=$?\n"
        f'if [ "$code" -eq {EXIT_WAITING_APPROVAL} ]; then  # waiting at vintage\'s approval gate\n'
        f"  {approve}\n"
        f"  {stage}\n"
        'elif [ "$code" -ne 0 ]; then\n'
        '  exit "$code"\n'
        "fi"
    )


def block(script: str, indent: int) -> list[str]:
    """``script`` as the lines of a YAML literal block (``|``) at ``indent`` spaces."""
    pad = " " * indent
    return [f"{pad}{line}" if line else "" for line in script.splitlines()]
