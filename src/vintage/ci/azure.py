"""The Azure Pipelines file of a pipeline: one stage (with one job) per pipeline stage, ``dependsOn`` from
``depends_on``, ``condition`` from ``condition``, and deployment jobs on Azure DevOps environments as the
approval gates."""

from __future__ import annotations

from vintage.ci.plan import Job, Plan
from vintage.ci.text import block, comment, concurrency_note, header, q, run_id_note, stage_script

KIND = "azure-pipelines"
DEFAULT_PATH = "azure-pipelines.yml"
VINTAGE = ".venv/bin/vintage"
RUN_ID = "$(Build.BuildId)"
PYTHON = "3.11"
SECRET_GROUP = "vintage-secrets"


def approver(environment: str) -> str:
    """The identity an Azure approval stage records: Azure DevOps exposes no variable naming who approved
    a check, so the environment's approval is recorded as such (its history names the person)."""
    return f"azure-devops-environment/{environment}"


def _steps(job: Job, indent: int) -> list[str]:
    pad = " " * indent
    lines = [
        f"{pad}- checkout: self",
        f"{pad}- task: UsePythonVersion@0",
        f"{pad}  inputs:",
        f"{pad}    versionSpec: {q(PYTHON)}",
        f"{pad}- script: make install",
        f"{pad}  displayName: Install",
    ]
    script = stage_script(
        job,
        vintage=VINTAGE,
        run_id=RUN_ID,
        approved_in=f"Azure DevOps environment {job.environment}, build {RUN_ID}",
    )
    if "\n" in script:
        lines += [f"{pad}- script: |", *block(script, indent + 4)]
    else:
        lines.append(f"{pad}- script: {script}")
    lines.append(f"{pad}  displayName: {q(f'vintage stage {job.stage}')}")
    env: list[str] = []
    if job.approval:
        env += comment(
            "Azure DevOps has no variable naming who approved the environment's check: vintage records "
            "the environment's approval (the environment's history names the approver).",
            indent=indent + 4,
        )
        env.append(f"{pad}    VINTAGE_APPROVER: {q(approver(str(job.environment)))}")
    if job.secrets:
        env += comment("Secret variables reach a script only when mapped here.", indent=indent + 4)
        env += [f"{pad}    {s}: $({s})" for s in job.secrets]
    if env:
        lines += [f"{pad}  env:", *env]
    return lines


def _stage(job: Job) -> list[str]:
    lines = [f"  - stage: {job.id}", f"    displayName: {q(job.stage)}"]
    # Without dependsOn a stage depends on the one above it: say [] for a stage with no dependencies.
    lines.append(f"    dependsOn: [{', '.join(job.needs)}]")
    if job.always:
        lines.append("    condition: always()  # condition: always")
    lines.append("    jobs:")
    if not job.approval:
        return [*lines, f"      - job: {job.id}", "        steps:", *_steps(job, 10)]
    env = str(job.environment)
    return [
        *lines,
        f"      - deployment: {job.id}",
        *comment(
            f"Approvals and checks for this job are configured on the Azure DevOps environment "
            f"(Pipelines > Environments > {env} > Approvals and checks): the job starts once they pass.",
            indent=8,
        ),
        f"        environment: {q(env)}",
        "        strategy:",
        "          runOnce:",
        "            deploy:",
        "              steps:",
        *_steps(job, 16),
    ]


def render(plan: Plan) -> str:
    """The pipeline file for ``plan``."""
    lines = [
        *header(plan, KIND, DEFAULT_PATH),
        "",
        "trigger:",
        "  branches:",
        "    include: [main]",
        "pr: none",
        "",
        *(
            ["pool:", "  name: Default  # --allow-local-state: one self-hosted agent holds the state"]
            if plan.local_state
            else ["pool:", "  vmImage: ubuntu-latest"]
        ),
        "",
        "variables:",
    ]
    if plan.secrets:
        lines += comment(
            f"Secrets: secret variables named like the VINTAGE_SECRET__<SCOPE>__<KEY> variables each job "
            f"maps below, in the variable group {SECRET_GROUP} (Pipelines > Library). Azure masks them in "
            "logs; a variable that does not exist reaches the job as its literal $(NAME).",
            indent=2,
        )
        lines.append(f"  - group: {SECRET_GROUP}")
    lines += [
        *comment(
            "Who queued the run, as vintage records it (the approver is recorded by the approval stages).",
            indent=2,
        ),
        "  - name: VINTAGE_ACTOR",
        "    value: $(Build.RequestedFor)",
    ]
    if plan.config_path:
        lines += ["  - name: VINTAGE_CONFIG", f"    value: {q(plan.config_path)}"]
    lines += ["", *comment(run_id_note()), *comment(concurrency_note()), "stages:"]
    for i, job in enumerate(plan.jobs):
        if i:
            lines.append("")
        lines += _stage(job)
    return "\n".join(lines) + "\n"
