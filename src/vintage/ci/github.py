"""The GitHub Actions workflow of a pipeline: one job per stage, ``needs:`` from ``depends_on``, ``if:``
from ``condition``, and the repository's environments as the approval gates."""

from __future__ import annotations

from vintage.ci.plan import Job, Plan
from vintage.ci.text import block, comment, concurrency_note, header, q, run_id_note, stage_script

KIND = "github-actions"
DEFAULT_PATH = ".github/workflows/vintage.yml"
VINTAGE = ".venv/bin/vintage"
RUN_ID = "${{ github.run_id }}"
CHECKOUT = "actions/checkout@v4"
SETUP_PYTHON = "actions/setup-python@v5"
PYTHON = "3.11"
HOSTED_RUNNER = "ubuntu-latest"
LOCAL_RUNNER = "self-hosted  # --allow-local-state: one runner holds the state"

# Who approved the job's environment in this workflow run: GitHub has no context for it, its review
# history (REST) has. {env} is replaced by the environment name (a JSON string, valid in jq).
_APPROVER_SCRIPT = """\
set -eu
login="$(gh api "repos/$GITHUB_REPOSITORY/actions/runs/$GITHUB_RUN_ID/approvals" --jq '
  [.[] | select(.state == "approved" and any(.environments[]; .name == {env}))]
  | last | .user.login // empty')"
if [ -z "$login" ]; then
  echo "::error::no approval of environment {name} in this run: add required reviewers to the environment"
  exit 1
fi
echo "login=$login" >> "$GITHUB_OUTPUT"
"""


def _job(job: Job, local_state: bool) -> list[str]:
    runner = LOCAL_RUNNER if local_state else HOSTED_RUNNER
    lines = [f"  {job.id}:", f"    name: {q(job.stage)}", f"    runs-on: {runner}"]
    if job.needs:
        lines.append(f"    needs: [{', '.join(job.needs)}]")
    if job.always:
        lines.append("    if: ${{ always() }}  # condition: always")
    if job.approval:
        env = str(job.environment)
        lines += comment(
            f"Required reviewers for this job are set in the repository's environment settings "
            f"(Settings > Environments > {env} > Required reviewers): the job starts once one approves.",
            indent=4,
        )
        lines.append(f"    environment: {q(env)}")
    lines += [
        "    steps:",
        f"      - uses: {CHECKOUT}",
        *(
            ["        with:", "          clean: false  # keep state_dir (untracked) between the jobs"]
            if local_state
            else []
        ),
        f"      - uses: {SETUP_PYTHON}",
        "        with:",
        f"          python-version: {q(PYTHON)}",
        "      - name: Install",
        "        run: make install",
    ]
    if job.approval:
        env = str(job.environment)
        script = _APPROVER_SCRIPT.replace("{env}", q(env)).replace("{name}", env)
        lines += [
            f"      - name: {q(f'Who approved {env}')}",
            "        id: approver  # gh: on GitHub's hosted runners; a self-hosted runner needs it too",
            "        env:",
            "          GH_TOKEN: ${{ github.token }}",
            "        run: |",
            *block(script, 10),
        ]
    lines.append(f"      - name: {q(f'vintage stage {job.stage}')}")
    env_lines = ["          VINTAGE_APPROVER: ${{ steps.approver.outputs.login }}"] if job.approval else []
    # On this step only: checkout and `make install` never see a secret.
    env_lines += [f"          {s}: ${{{{ secrets.{s} }}}}" for s in job.secrets]
    if env_lines:
        lines += ["        env:", *env_lines]
    script = stage_script(
        job,
        vintage=VINTAGE,
        run_id=RUN_ID,
        approved_in=f"GitHub environment {job.environment}, workflow run {RUN_ID}",
    )
    if "\n" in script:
        lines += ["        run: |", *block(script, 10)]
    else:
        lines.append(f"        run: {script}")
    return lines


def render(plan: Plan) -> str:
    """The workflow file for ``plan``."""
    lines = [
        *header(plan, KIND, DEFAULT_PATH),
        "",
        "name: vintage pipeline",
        "on:",
        "  push:",
        "    branches: [main]",
        "  workflow_dispatch:",
        "",
        "permissions:",
        "  contents: read",
    ]
    if plan.approvals:
        lines.append("  actions: read  # the approval jobs read who approved (the run's review history)")
    lines += [
        "",
        "env:",
        *comment(
            "Who started the run, as vintage records it (the approver is recorded by the approval jobs).",
            indent=2,
        ),
        "  VINTAGE_ACTOR: ${{ github.actor }}",
    ]
    if plan.config_path:
        lines.append(f"  VINTAGE_CONFIG: {q(plan.config_path)}")
    lines += ["", *comment(run_id_note()), *comment(concurrency_note())]
    if plan.secrets:
        lines += comment(
            "Secrets: repository (or environment) secrets named like the VINTAGE_SECRET__<SCOPE>__<KEY> "
            "variables each job maps in its env; vintage's env provider reads them and GitHub masks them in "
            "logs."
        )
    lines.append("jobs:")
    for i, job in enumerate(plan.jobs):
        if i:
            lines.append("")
        lines += _job(job, plan.local_state)
    return "\n".join(lines) + "\n"
