"""The ``gh`` program a job of :mod:`support.ci_executor` finds on its PATH, and the approvals it serves.

It answers only ``gh api [/]repos/<repo>/actions/runs/<run_id>/approvals [--jq FILTER | -q FILTER]``,
with the JSON of GitHub's REST "Get the review history for a workflow run" (a list of
``{state, comment, environments: [{id, node_id, name, url, html_url, created_at, updated_at}], user}``),
filtered through the real ``jq`` (``-r``: gh prints string results raw). Like gh in a workflow it needs
``GH_TOKEN`` (exit 4 without it) and answers 401 to a token that is not the run's ``github.token``; any
other invocation exits 1 and says it is not supported.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SHIM = '''\
#!{python} -I
"""gh for workflows run by the tests' CI executor: only `gh api .../actions/runs/<id>/approvals`."""
import json, os, re, subprocess, sys

DATA = {data!r}


def main(argv):
    token = os.environ.get("GH_TOKEN") or os.environ.get("GITHUB_TOKEN")
    if not token:
        print("gh: To use GitHub CLI in a GitHub Actions workflow, set the GH_TOKEN environment variable.\\n"
              "Example:\\n  env:\\n    GH_TOKEN: ${{{{ github.token }}}}", file=sys.stderr)
        return 4
    jq_filter, rest = None, []
    args = iter(argv)
    for arg in args:
        if arg in ("--jq", "-q"):
            jq_filter = next(args, None)
        elif arg.startswith("--jq="):
            jq_filter = arg[5:]
        else:
            rest.append(arg)
    if len(rest) != 2 or rest[0] != "api" or jq_filter == "":
        print(f"gh (test shim): unsupported invocation: gh {{' '.join(argv)}}; only "
              "`gh api repos/<repo>/actions/runs/<run_id>/approvals [--jq FILTER]`", file=sys.stderr)
        return 1
    with open(DATA, encoding="utf-8") as f:
        data = json.load(f)
    if token != data["token"]:
        print("gh: Bad credentials (HTTP 401)", file=sys.stderr)
        return 1
    match = re.fullmatch(r"/?repos/([^/]+/[^/]+)/actions/runs/([^/]+)/approvals", rest[1])
    if not match:
        print(f"gh (test shim): unsupported endpoint {{rest[1]}}: only .../actions/runs/<run_id>/approvals",
              file=sys.stderr)
        return 1
    if match.groups() != (data["repository"], data["run_id"]):
        print("gh: Not Found (HTTP 404)", file=sys.stderr)
        return 1
    body = json.dumps(data["approvals"])
    if jq_filter is None:
        print(body)
        return 0
    return subprocess.run([data["jq"], "-r", jq_filter], input=body, text=True).returncode


sys.exit(main(sys.argv[1:]))
'''


def approval(repository: str, environment: str, login: str, number: int) -> dict[str, Any]:
    """One entry of the review history: ``login`` approved ``environment``."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    env_id = 1000 + sum(map(ord, environment))
    return {
        "state": "approved",
        "comment": f"approved by {login} (review {number})",
        "environments": [
            {
                "id": env_id,
                "node_id": f"EN_{env_id}",
                "name": environment,
                "url": f"https://api.github.com/repos/{repository}/environments/{environment}",
                "html_url": f"https://github.com/{repository}/deployments/activity_log?environments_filter={environment}",
                "created_at": now,
                "updated_at": now,
            }
        ],
        "user": {"login": login, "id": 5000 + number, "type": "User", "site_admin": False},
    }


def install(bin_dir: Path, data_file: Path, data: dict[str, Any]) -> None:
    """Write ``gh`` into ``bin_dir`` and the run's ``data`` (repository, run_id, token, jq, approvals)."""
    data_file.write_text(json.dumps(data), encoding="utf-8")
    gh = bin_dir / "gh"
    gh.write_text(SHIM.format(python=sys.executable, data=str(data_file)), encoding="utf-8")
    gh.chmod(0o755)
