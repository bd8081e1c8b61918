"""The generated GitHub workflow, run for real by the local CI executor (tests/support/ci_executor.py).

Every job starts in its own fresh clone of a project repository with a clean environment: the jobs share
nothing but a real PostgreSQL (the pipeline state, `state_url`), a real `mlflow server` on it, the CI's
variables and secrets, and the deployment host the environments are on (podman: staging and production are
`container` environments, as a deployment host or a cluster is shared by every CI machine). The approval
comes from the CI's environment reviewers, read back through the review history as the generated step does
(`gh` + jq).

1. A run reaches production; its build job is killed with SIGKILL mid-stage and re-run (attempt 2), which
   resumes the same vintage run with no duplicate model version; the approval is recorded with the CI's
   approver in the release record and the audit trail.
2. Two CI runs from two "CI machines" (two executors, two commits) at once, made to contend for staging:
   no environment is ever deployed by both at the same time.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.ci_executor import Executor, Kill, RunResult, Status, Workflow
from support.scoring import free_port, invoke
from vintage.config.models import ProjectSettings
from vintage.pipeline.state import StateStore
from vintage.shared_state import attach

pytestmark = [pytest.mark.slow, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
VINTAGE = str(Path(sys.executable).with_name("vintage"))
PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs", "--events-backend", "file"]
GOOD = {
    "class": "sklearn.linear_model.ElasticNet",
    "params": {"random_state": 42},
    "grid": [{"alpha": 0.1, "l1_ratio": 0.1}],
}
BETTER = {**GOOD, "grid": [{"alpha": 0.01, "l1_ratio": 0.5}]}
API_KEY = "ci-production-key-0123456789abcdef"
STATE_PASSWORD = "state-password-0123456789"  # the test cluster trusts loopback: any password connects
WORKFLOW = ".github/workflows/vintage.yml"
LOCKED = ("deploy", "smoke_test", "champion_gate", "promote")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


class Team:
    """The project repository (vintage.yaml + the rendered workflow, committed) and the shared services."""

    def __init__(self, root: Path, state_url: str, tracking_url: str) -> None:
        self.root = root / "repo"
        self.root.mkdir()
        self.state_url = state_url.replace(
            "postgresql://postgres@", "postgresql://postgres:${secret:ci/state_password}@"
        )
        self.spec: dict[str, Any] = {
            "experiment": "DrinksQuality",
            "model_name": "winequality",
            "tracking_uri": tracking_url,
            "state_url": self.state_url,
            "data": {"dataset": "red"},
            "estimator": GOOD,
            "secrets": {"providers": ["env"]},  # CI: secrets come from the CI's secret variables only
            "environments": {
                "staging": {"target": "container", "port": free_port()},
                "production": {
                    "target": "container",
                    "port": free_port(),
                    "api_keys": True,
                    "approvers": ["alice"],
                    "forbid_self_approval": True,
                },
            },
        }
        git(self.root, "init", "-q", "-b", "main")
        git(self.root, "config", "user.email", "ci@example.org")
        git(self.root, "config", "user.name", "ci")
        self.commits: list[str] = []

    def commit(self, message: str, **changes: Any) -> str:
        """Write vintage.yaml, render the workflow from it (as a developer would), commit both."""
        self.spec.update(changes)
        (self.root / "vintage.yaml").write_text(yaml.safe_dump(self.spec, sort_keys=False))
        out = self.root / WORKFLOW
        out.parent.mkdir(parents=True, exist_ok=True)
        res = subprocess.run(
            [VINTAGE, "ci", "render", "github-actions", "--output", WORKFLOW],
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=120,
            env=_clean_env(),
        )
        assert res.returncode == 0, res.stderr
        git(self.root, "add", "-A")
        git(self.root, "commit", "-q", "-m", message)
        self.commits.append(git(self.root, "rev-parse", "HEAD"))
        return self.commits[-1]

    def executor(self, commit: str, tmp: Path, actor: str = "bob") -> Executor:
        """One "CI machine" running the committed workflow at ``commit``."""

        def install(workspace: Path) -> None:  # instead of `make install`: this checkout's environment
            (workspace / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)

        cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Executor(
            Workflow.load(self.root / WORKFLOW),
            repo=self.root,
            commit=commit,
            python=Path(sys.executable),
            secrets={
                "VINTAGE_SECRET__CI__STATE_PASSWORD": STATE_PASSWORD,
                "VINTAGE_SECRET__PRODUCTION__SERVING__PRIMARY": API_KEY,
            },
            reviewers={"production": "alice"},
            provision={"Install": install},
            runner_env={"XDG_CACHE_HOME": cache},  # a self-hosted runner's cache: the image base, built once
            actor=actor,
            work_dir=tmp,
            step_timeout=600,
        )

    def vintage(self, *args: str) -> subprocess.CompletedProcess[str]:
        """An operator's command against the shared state, from the repository (not from any job)."""
        return subprocess.run(
            [VINTAGE, *args],
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=120,
            env={**_clean_env(), "VINTAGE_SECRET__CI__STATE_PASSWORD": STATE_PASSWORD},
        )

    def json(self, *args: str) -> Any:
        res = self.vintage(*args, "--json")
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)

    def url(self, env: str) -> str:
        return f"http://127.0.0.1:{self.spec['environments'][env]['port']}"


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("VINTAGE_", "MLFLOW_"))}


def _label(team: Team) -> str:
    import hashlib

    from vintage.shared_state import display

    return f"vintage.project={hashlib.sha256(display(team.state_url).encode()).hexdigest()[:8]}"


@pytest.fixture
def team(tmp_path: Path, state_db: str, mlflow_server_url: str) -> Iterator[Team]:
    t = Team(tmp_path, state_db, mlflow_server_url)
    yield t
    # Every container of this project, whatever job started it.
    names = subprocess.run(
        [*PODMAN, "ps", "-a", "-q", "--filter", f"label={_label(t)}"], capture_output=True, text=True
    ).stdout.split()
    if names:
        subprocess.run([*PODMAN, "rm", "-f", "-t", "5", *names], capture_output=True)


def _ok(result: RunResult) -> None:
    for job in result.executed:
        assert result.jobs[job].status is Status.SUCCESS, f"job {job}:\n{result.jobs[job].log[-4000:]}"


def _version(url: str, key: str | None = None) -> int:
    request = urllib.request.Request(
        url + "/version", headers={"Authorization": f"Bearer {key}"} if key else {}
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        return int(json.loads(resp.read())["version"])


ROW = {"inputs": [[7.4, 0.7, 0.0, 1.9, 0.076, 11.0, 34.0, 0.9978, 3.51, 0.56, 9.4]]}


def test_the_generated_workflow_reaches_production_and_a_killed_job_resumes(
    team: Team, tmp_path: Path
) -> None:
    commit = team.commit("wine quality, ElasticNet")
    with team.executor(commit, tmp_path) as ci:
        # The build job is killed with SIGKILL while vintage registers the model.
        kill = Kill("build", "vintage stage build", lambda line: "register:" in line)
        first = ci.run(run_id=4711, kill=kill)
        build = first.jobs["build"]
        assert build.status is Status.FAILURE and build.killed, build.log
        assert first.jobs["staging"].status is Status.SKIPPED
        assert team.json("runs", "show", "4711")["status"] == "interrupted"  # nobody holds it: resumable

        second = ci.rerun_failed()
        _ok(second)
        assert second.attempt == 2 and second.executed == ["build", "staging", "production"]

    run = team.json("runs", "show", "4711")
    assert run["status"] == "succeeded" and run["actor"] == "bob"
    build_steps = {s["name"]: s for st in run["stages"] if st["name"] == "build" for s in st["steps"]}
    assert build_steps["train"]["attempts"] == 1  # done before the kill: not repeated
    # One model version, registered once, although the job that registered it was killed and re-run.
    assert [v["version"] for v in team.json("models")] == [1]
    outcomes = [e["outcome"] for e in team.json("audit", "--action", "model.register")]
    # Killed after the version was created and before the step was recorded as done, the re-run found it.
    assert outcomes in (["ok"], ["ok", "reused"]), outcomes
    assert build_steps["register"]["attempts"] == len(outcomes)

    # Production serves v1 behind the key the CI secret holds.
    assert invoke(team.url("production"), ROW, API_KEY)[0] == 200
    assert invoke(team.url("production"), ROW, "wrong-key-0123456789")[0] == 401
    assert _version(team.url("staging")) == 1

    # The CI's approver is vintage's approver: in the release record and the audit trail (not the actor).
    record = team.json("release", "show", "4711")
    assert record["approvals"]["production"]["by"] == "alice"
    assert record["approvals"]["production"]["auto"] is False
    assert "GitHub environment production" in record["approvals"]["production"]["comment"]
    approved = [e for e in team.json("audit", "--action", "approval.") if e["action"] == "approval.approved"]
    assert [(e["actor"], e["outcome"], e["target"]) for e in approved] == [
        ("alice", "approved", "4711/production")
    ]
    # The secrets never reached a log.
    for job in second.jobs.values():
        assert API_KEY not in job.log and STATE_PASSWORD not in job.log


def _windows(run: dict[str, Any], stage: str) -> tuple[str, str] | None:
    [st] = [s for s in run["stages"] if s["name"] == stage]
    locked = [s for s in st["steps"] if s["name"] in LOCKED and s["started"]]
    return (locked[0]["started"], locked[-1]["ended"]) if locked else None


def test_two_ci_machines_never_deploy_one_environment_at_once(
    team: Team, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = team.commit("ElasticNet alpha 0.1")
    second = team.commit("ElasticNet alpha 0.01", estimator=BETTER)
    # An operator on a third machine holds staging until both runs wait for it: they then contend for real.
    monkeypatch.setenv("VINTAGE_SECRET__CI__STATE_PASSWORD", STATE_PASSWORD)
    operator = ProjectSettings(state_dir=tmp_path / "operator" / ".vintage", state_url=team.state_url)
    attach(operator)
    store = StateStore(operator.state_dir.resolve())
    held = store.lock("env-staging")
    assert held.acquire(timeout=10)
    results: dict[int, RunResult] = {}
    errors: list[BaseException] = []

    def machine(run_id: int, commit: str) -> None:
        try:
            with team.executor(commit, tmp_path / f"m{run_id}", actor=f"dev{run_id}") as ci:
                results[run_id] = ci.run(run_id=run_id)
        except BaseException as exc:
            errors.append(exc)

    for sub in ("m101", "m102"):
        (tmp_path / sub).mkdir()
    threads = [threading.Thread(target=machine, args=a) for a in ((101, first), (102, second))]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 600
        while sorted(store.waiting("staging")) != ["101", "102"]:
            assert time.monotonic() < deadline and all(t.is_alive() for t in threads), (errors, results)
            time.sleep(0.2)
    finally:
        held.release()
    for t in threads:
        t.join(timeout=1500)
    assert not errors, errors
    runs = {rid: team.json("runs", "show", str(rid)) for rid in results}
    for env in ("staging", "production"):
        spans = sorted(w for r in runs.values() if (w := _windows(r, env)) is not None)
        for (a0, a1), (b0, b1) in itertools.pairwise(spans):
            assert a1 <= b0, f"{env}: {a0}..{a1} overlaps {b0}..{b1}"
    # Both were seen waiting for staging while the operator held it (above); the one that deployed second
    # then waited for the other's deploy too, and said so.
    later = max(runs, key=lambda rid: _windows(runs[rid], "staging") or ("", ""))
    assert "waiting for environment staging" in results[later].jobs["staging"].log
    # Whatever the order, the better model ends in production: either it came second, or the worse one came
    # second and the champion gate stopped it before production (judged again at the production deploy
    # when the better one reached production after the worse one's gate had passed in staging).
    for rid, run in runs.items():
        if run["status"] != "succeeded":
            assert "champion" in run["reason"], (rid, run["reason"], results[rid].jobs[run_failed(run)].log)
    assert any(r["status"] == "succeeded" for r in runs.values())
    # Which commit registered first is a race: the better version is the one with the lower holdout rmse.
    versions = team.json("models")
    assert len(versions) == 2, versions
    better = min(versions, key=lambda v: v["metrics"]["rmse"])["version"]
    assert _version(team.url("production"), API_KEY) == better


def run_failed(run: dict[str, Any]) -> str:
    """The first stage of a run that did not succeed."""
    return next(s["name"] for s in run["stages"] if s["status"] != "succeeded")
