"""`vintage run` end to end, as real processes over real HTTP: the whole pipeline, approvals, gates,
automatic and manual rollback, kill -9 + resume, and environment locks."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.scoring import free_port, invoke

pytestmark = pytest.mark.slow

VINTAGE = str(Path(sys.executable).with_name("vintage"))
REPO = Path(__file__).resolve().parents[2]
ROW = {"inputs": [[7.4, 0.7, 0.0, 1.9, 0.076, 11.0, 34.0, 0.9978, 3.51, 0.56, 9.4]]}
GOOD = {
    "class": "sklearn.linear_model.ElasticNet",
    "params": {"random_state": 42},
    "grid": [{"alpha": 0.1, "l1_ratio": 0.1}],
}
BETTER = {
    "class": "sklearn.linear_model.ElasticNet",
    "params": {"random_state": 42},
    "grid": [{"alpha": 0.01, "l1_ratio": 0.5}],
}
WORSE = {
    "class": "sklearn.linear_model.ElasticNet",
    "params": {"random_state": 42},
    "grid": [{"alpha": 1.0, "l1_ratio": 0.5}],
}


class Project:
    """A throwaway project: vintage.yaml with environments on free ports, a production key."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.spec = yaml.safe_load((REPO / "vintage.yaml").read_text())
        self.spec["estimator"] = GOOD
        self.spec["environments"] = {
            "staging": {"port": free_port()},
            "production": {"port": free_port(), "api_keys": True},
        }
        self.write()

    def write(self, **changes: Any) -> None:
        for key, value in changes.items():
            self.spec[key] = value
        (self.root / "vintage.yaml").write_text(yaml.safe_dump(self.spec, sort_keys=False))

    def env(self, name: str, **changes: Any) -> None:
        self.spec["environments"][name].update(changes)
        self.write()

    def vintage(
        self, *args: str, timeout: float = 300, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [VINTAGE, *args],
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "PYTHONPATH": str(REPO / "tests"), **(env or {})},
        )

    def spawn(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [VINTAGE, *args],
            cwd=self.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO / "tests")},
        )

    def key(self) -> str:
        res = self.vintage("secrets", "get", "-s", "production/serving", "-k", "primary")
        assert res.returncode == 0, res.stderr
        return res.stdout

    def url(self, env: str) -> str:
        return f"http://127.0.0.1:{self.spec['environments'][env]['port']}"

    def runs(self) -> list[dict[str, Any]]:
        return json.loads(self.vintage("runs", "list", "--json", "-n", "100").stdout)

    def run_state(self, run_id: str) -> dict[str, Any]:
        res = self.vintage("runs", "show", run_id, "--json")
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)

    def status(self) -> dict[str, Any]:
        return json.loads(self.vintage("status", "--json").stdout)

    def audit(self, action: str = "") -> list[dict[str, Any]]:
        args = ["audit", "--json", "--limit", "1000"] + (["--action", action] if action else [])
        return json.loads(self.vintage(*args).stdout)

    def aliases(self) -> dict[str, int]:
        versions = json.loads(self.vintage("models", "--json").stdout)
        return {a: v["version"] for v in versions for a in v["aliases"]}


def post(url: str, key: str | None = None) -> tuple[int, Any]:
    return invoke(url, ROW, key)


def version_at(url: str, key: str | None = None) -> int | None:
    """The version a server reports (``/version`` needs the key where the server has keys)."""
    request = urllib.request.Request(
        url + "/version", headers={"Authorization": f"Bearer {key}"} if key else {}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return int(json.loads(resp.read())["version"])
    except (OSError, ValueError, KeyError):
        return None


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    proj = Project(tmp_path)
    assert proj.vintage("secrets", "create-scope", "production/serving").returncode == 0
    assert (
        proj.vintage("secrets", "put", "-s", "production/serving", "-k", "primary", "--generate").returncode
        == 0
    )
    yield proj
    for env in ("staging", "production"):
        proj.vintage("stop", env, timeout=60)


def steps(state: dict[str, Any], stage: str) -> dict[str, str]:
    return {s["name"]: s["status"] for st in state["stages"] if st["name"] == stage for s in st["steps"]}


def test_the_whole_pipeline_ends_with_two_guarded_endpoints(project):
    res = project.vintage("run", "--auto-approve")
    assert res.returncode == 0, res.stderr
    assert "WARNING: --auto-approve" in res.stderr
    [run] = project.runs()
    assert run["status"] == "succeeded"
    assert [(s["name"], s["status"]) for s in run["stages"]] == [
        ("build", "succeeded"),
        ("staging", "succeeded"),
        ("production", "succeeded"),
    ]
    # both endpoints answer; production only with its key
    assert post(project.url("staging"))[0] == 200
    assert post(project.url("production"))[0] == 401
    status, body = post(project.url("production"), project.key())
    assert status == 200 and len(body["predictions"]) == 1
    # the output shows both URLs and a curl example that uses the production key
    assert project.url("staging") in res.stdout and project.url("production") in res.stdout
    assert "vintage secrets get -s production/serving -k primary" in res.stdout
    assert project.key() not in res.stdout + res.stderr
    # the printed curl example works as printed, from a shell without the venv on its PATH
    [example] = [
        line.strip()
        for line in res.stdout.splitlines()
        if project.url("production") in line and "curl" in line
    ]
    shell_env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/")}
    answer = subprocess.run(
        ["bash", "-c", example], cwd=project.root, capture_output=True, text=True, timeout=120, env=shell_env
    )
    assert answer.returncode == 0, answer.stderr
    assert len(json.loads(answer.stdout)["predictions"]) == 1, answer.stdout
    # registry: the version carries candidate, staging and production
    assert project.aliases() == {"candidate": 1, "staging": 1, "production": 1}
    # release record: readable lines, or JSON with --json
    shown_release = project.vintage("release", "show", run["id"])
    assert shown_release.returncode == 0, shown_release.stderr
    assert shown_release.stdout.startswith(f"release of run {run['id']}: winequality v1")
    assert "approval production: auto-approved" in shown_release.stdout
    with pytest.raises(ValueError):
        json.loads(shown_release.stdout)
    release = json.loads(project.vintage("release", "show", run["id"], "--json").stdout)
    assert release["model_name"] == "winequality" and release["version"] == 1
    # the chosen point's holdout figure, reported beside the CV figure it was chosen by (docs/data.md)
    assert release["metrics"]["rmse"] == pytest.approx(0.6305, abs=1e-3)
    assert release["metrics"]["cv_rmse"] == pytest.approx(0.6985, abs=1e-3)
    assert release["selection_metric"] == "cv_rmse"
    assert release["data_digest"] and release["config_digest"]
    assert release["approvals"]["production"]["auto"] is True
    assert set(release["deployments"]) == {"staging", "production"}
    digests = {d["digest"] for d in release["deployments"].values()}
    assert len(digests) == 1 and digests.pop().startswith("sha256:")  # the same model bytes in both
    assert release["champion"]["verdict"] == "no champion"
    assert (project.root / ".vintage" / "releases" / f"{run['id']}.json").exists()
    # audit: registration, alias moves, the automatic approval, deploys
    actions = {(e["action"], e["target"]) for e in project.audit()}
    assert ("model.register", "winequality/1") in actions
    assert ("alias.move", "winequality@staging") in actions
    assert ("alias.move", "winequality@production") in actions
    assert ("approval.auto", f"{run['id']}/production") in actions
    assert ("deploy", "staging") in actions and ("deploy", "production") in actions
    # status
    st = project.status()
    assert st["staging"]["version"] == 1 and st["production"]["healthy"] is True
    assert st["production"]["served_digest"] == st["production"]["digest"] == st["staging"]["digest"]
    assert st["production"]["tampered"] is False
    # the timeline
    shown = project.vintage("runs", "show", run["id"])
    assert "production [production]: succeeded" in shown.stdout and "smoke_test" in shown.stdout


def test_without_auto_approve_production_waits_then_approve_and_resume(project):
    res = project.vintage("run")
    assert res.returncode == 3, res.stderr
    assert res.stderr.count("waiting:") == 1
    [run] = project.runs()
    assert run["status"] == "waiting_approval"
    assert steps(run, "production") == {
        "approval": "waiting_approval",
        "deploy": "pending",
        "smoke_test": "pending",
        "promote": "pending",
    }
    # an unapproved production deploy never happens
    assert version_at(project.url("production"), project.key()) is None
    assert project.status()["production"] is None
    assert "production" not in project.aliases()
    assert version_at(project.url("staging")) == 1

    ok = project.vintage(
        "approve", run["id"], "production", "--comment", "reviewed the metrics", "--as", "alice"
    )
    assert ok.returncode == 0, ok.stderr
    assert "rmse" in ok.stderr  # the evidence is shown to the approver
    done = project.vintage("resume", run["id"])
    assert done.returncode == 0, done.stderr
    state = project.run_state(run["id"])
    assert state["status"] == "succeeded"
    assert post(project.url("production"), project.key())[0] == 200
    release = json.loads(project.vintage("release", "show", run["id"], "--json").stdout)
    assert release["approvals"]["production"]["by"] == "alice"
    assert release["approvals"]["production"]["comment"] == "reviewed the metrics"
    # the build stage was not run again on resume
    assert next(s for s in state["stages"][0]["steps"] if s["name"] == "train")["attempts"] == 1


def test_reject_ends_the_run_and_nothing_reaches_production(project):
    assert project.vintage("run").returncode == 3
    [run] = project.runs()
    rej = project.vintage("reject", run["id"], "production", "-m", "not today")
    assert rej.returncode == 0, rej.stderr
    assert project.run_state(run["id"])["status"] == "rejected"
    again = project.vintage("resume", run["id"])
    assert again.returncode == 1 and "rejected" in again.stderr
    assert version_at(project.url("production"), project.key()) is None
    assert ("approval.rejected", f"{run['id']}/production") in {
        (e["action"], e["target"]) for e in project.audit()
    }


def test_approvers_and_self_approval(project):
    project.env("production", approvers=["alice", "bob"], forbid_self_approval=True)
    assert project.vintage("run", env={"VINTAGE_ACTOR": "alice"}).returncode == 3
    [run] = project.runs()
    mallory = project.vintage("approve", run["id"], "production", "--as", "mallory")
    assert mallory.returncode == 1 and "approvers are alice, bob" in mallory.stderr
    selfie = project.vintage("approve", run["id"], "production", "--as", "alice")
    assert selfie.returncode == 1 and "may not approve it" in selfie.stderr
    assert project.vintage("approve", run["id"], "production", "--as", "bob").returncode == 0
    assert project.vintage("resume", run["id"]).returncode == 0
    refused = [e for e in project.audit("approval.") if e["outcome"] == "refused"]
    assert len(refused) == 2


def test_approval_requests_expire_and_never_block_newer_runs(project):
    project.env("production", approval_ttl_hours=0.0005)  # 1.8 s
    assert project.vintage("run").returncode == 3
    [stale] = project.runs()
    time.sleep(2.5)
    late = project.vintage("approve", stale["id"], "production")
    assert late.returncode == 1 and "expired" in late.stderr
    assert project.run_state(stale["id"])["status"] == "expired"
    assert project.vintage("resume", stale["id"]).returncode == 1
    # a newer run is not blocked by the stale one
    fresh = project.vintage("run", "--auto-approve")
    assert fresh.returncode == 0, fresh.stderr
    assert post(project.url("production"), project.key())[0] == 200


def test_champion_gate_blocks_a_worse_model_unless_forced(project):
    assert project.vintage("run", "--auto-approve").returncode == 0
    project.write(estimator=WORSE, selection={"metric": "rmse", "threshold": None})
    res = project.vintage("run", "--auto-approve")
    assert res.returncode == 1
    assert "champion gate: candidate v2 rmse" in res.stderr and "worse than production v1" in res.stderr
    run = project.runs()[0]
    assert steps(run, "staging")["champion_gate"] == "failed"
    assert [s["status"] for s in run["stages"]][1:] == ["failed", "skipped"]
    # not promoted, and the refused candidate no longer serves staging
    assert project.aliases()["production"] == 1 and project.aliases()["staging"] == 1
    assert (
        version_at(project.url("staging")) == 1 and version_at(project.url("production"), project.key()) == 1
    )
    release = json.loads(project.vintage("release", "show", run["id"], "--json").stdout)
    assert release["champion"]["verdict"] == "refused"

    needs_reason = project.vintage("run", "--auto-approve", "--force-promote")
    assert needs_reason.returncode == 2
    forced = project.vintage(
        "run", "--auto-approve", "--force-promote", "--reason", "accepting a simpler model"
    )
    assert forced.returncode == 0, forced.stderr
    assert project.aliases()["production"] == 2
    events = project.audit("gate.force_promote")
    assert len(events) == 1 and "accepting a simpler model" in events[0]["detail"]


def test_a_candidate_is_judged_again_when_production_changed_after_its_gate(project):
    """Run A passes the champion gate in staging while production serves nothing, then waits for approval;
    run B, better, reaches production meanwhile. A's approval must not let it replace B unchecked."""
    assert project.vintage("run").returncode == 3
    [first] = project.runs()
    project.write(estimator=BETTER)
    assert project.vintage("run", "--auto-approve").returncode == 0
    assert project.aliases()["production"] == 2
    assert project.vintage("approve", first["id"], "production", "--as", "alice").returncode == 0
    project.write(estimator=GOOD)  # a run resumes with the config it started with
    res = project.vintage("resume", first["id"])
    assert res.returncode == 1, res.stderr
    assert "production now serves v2 (the champion gate compared with nothing): judging again" in res.stderr
    assert "champion gate: candidate v1 rmse" in res.stderr and "worse than production v2" in res.stderr
    assert steps(project.run_state(first["id"]), "production")["deploy"] == "failed"
    assert project.aliases()["production"] == 2
    assert version_at(project.url("production"), project.key()) == 2
    release = json.loads(project.vintage("release", "show", first["id"], "--json").stdout)
    assert release["champion"]["verdict"] == "refused" and release["champion"]["champion"] == 2


def test_failed_smoke_test_rolls_back_and_the_old_version_keeps_serving(project):
    assert project.vintage("run", "--auto-approve").returncode == 0
    broken = {
        "class": "support.smoke_breaker.NanOnTenRows",
        "params": {"random_state": 42},
        "grid": [{"alpha": 0.1, "l1_ratio": 0.1}],
    }
    project.write(estimator=broken)
    res = project.vintage("run", "--auto-approve")
    assert res.returncode == 1
    assert "smoke test: expected 10 finite predictions" in res.stderr
    run = project.runs()[0]
    assert steps(run, "staging") == {
        "deploy": "succeeded",
        "smoke_test": "failed",
        "champion_gate": "pending",
        "promote": "pending",
    }
    assert version_at(project.url("staging")) == 1  # rolled back to the version that served before
    assert post(project.url("staging"))[0] == 200
    assert version_at(project.url("production"), project.key()) == 1  # never reached
    rollbacks = project.audit("deploy.rollback")
    assert rollbacks and rollbacks[-1]["target"] == "staging" and "now serving v1" in rollbacks[-1]["detail"]


def test_rollback_command_serves_the_previous_version_and_moves_the_alias(project):
    assert project.vintage("run", "--auto-approve").returncode == 0
    project.write(estimator=BETTER)
    assert project.vintage("run", "--auto-approve").returncode == 0
    assert version_at(project.url("production"), project.key()) == 2 and project.aliases()["production"] == 2
    res = project.vintage("rollback", "production")
    assert res.returncode == 0, res.stderr
    assert "rolled back from v2 to v1" in res.stderr
    assert version_at(project.url("production"), project.key()) == 1
    assert project.aliases()["production"] == 1
    assert post(project.url("production"), project.key())[0] == 200
    events = project.audit("deploy.rollback")
    assert events[-1]["target"] == "production" and "v2 -> v1" in events[-1]["detail"]
    moves = [e for e in project.audit("alias.move") if e["target"] == "winequality@production"]
    assert [m["detail"] for m in moves] == ["-> v1", "v1 -> v2", "v2 -> v1 (rollback)"]
    nothing = project.vintage("rollback", "staging")  # staging held only v1... then v2: it can roll back
    assert nothing.returncode == 0 and version_at(project.url("staging")) == 1


def _wait_until(project: Project, query: str, args: tuple[str, ...], timeout: float = 120) -> str:
    """Poll the run state until ``query`` returns a row; returns its first column (the run id)."""
    db = project.root / ".vintage" / "pipeline.db"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if db.exists():
            try:
                with sqlite3.connect(db, timeout=10) as conn:
                    row = conn.execute(query, args).fetchone()
            except sqlite3.OperationalError:  # the schema is being created
                row = None
            if row:
                return str(row[0])
        time.sleep(0.005)
    raise AssertionError(f"never saw {query} {args}")


RUNNING_STEP = "SELECT run_id FROM steps WHERE stage = ? AND name = ? AND status = 'running'"
STAGE_DONE = "SELECT run_id FROM stages WHERE name = ? AND status = 'succeeded' AND ? = ?"


@pytest.mark.parametrize(
    "where",
    [
        ("during", "build", "train"),
        ("after", "build"),
        ("during", "staging", "deploy"),
        ("after", "staging"),
        ("during", "production", "deploy"),
    ],
    ids=lambda w: "-".join(w),
)
def test_kill_9_at_each_stage_boundary_then_resume_succeeds(project, where):
    proc = project.spawn("run", "--auto-approve")
    try:
        if where[0] == "during":
            run_id = _wait_until(project, RUNNING_STEP, (where[1], where[2]))
        else:
            run_id = _wait_until(project, STAGE_DONE, (where[1], "x", "x"))
    finally:  # killed here in any case: a run left going would deploy after the fixture stopped everything
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    shown = project.run_state(run_id)
    assert shown["status"] == "interrupted"  # running, but its process is gone
    res = project.vintage("resume", run_id)
    assert res.returncode == 0, res.stderr
    state = project.run_state(run_id)
    assert state["status"] == "succeeded"
    assert post(project.url("production"), project.key())[0] == 200
    # idempotent: one version, each alias moved once, no double registration
    versions = json.loads(project.vintage("models", "--json").stdout)
    assert [v["version"] for v in versions] == [1]
    moves = [e["target"] for e in project.audit("alias.move")]
    assert sorted(moves) == ["winequality@production", "winequality@staging"]
    assert len(project.audit("model.register")) == 1


def _stage_interval(state: dict[str, Any], stage: str) -> tuple[str, str]:
    [st] = [s for s in state["stages"] if s["name"] == stage]
    locked = [s for s in st["steps"] if s["name"] in ("deploy", "smoke_test", "champion_gate", "promote")]
    return locked[0]["started"], locked[-1]["ended"]


def test_two_runs_deploying_to_one_environment_never_overlap(project):
    procs = [project.spawn("--verbose", "run", "--auto-approve") for _ in range(2)]  # tracebacks if any
    errors = [p.communicate(timeout=300)[1] for p in procs]  # both finished before any assert (and teardown)
    for p, err in zip(procs, errors, strict=True):
        assert p.returncode == 0, err
    states = [project.run_state(r["id"]) for r in project.runs()]
    assert len(states) == 2 and all(s["status"] == "succeeded" for s in states)
    for env in ("staging", "production"):
        (a0, a1), (b0, b1) = sorted(_stage_interval(s, env) for s in states)
        assert a1 <= b0, f"{env}: {a0}..{a1} overlaps {b0}..{b1}"


def test_run_latest_supersedes_an_older_waiting_run(project):
    from filelock import FileLock

    project.env("staging", lock_behavior="run_latest")
    assert project.vintage("stage", "build", "--run-id", "older").returncode == 0
    assert project.vintage("stage", "build", "--run-id", "newer").returncode == 0
    lock = FileLock(str(project.root / ".vintage" / "locks" / "env-staging.lock"))
    lock.acquire()  # another deployment holds staging
    try:
        older = project.spawn("stage", "staging", "--run-id", "older")
        _wait_waiting(project, "older")
        newer = project.spawn("stage", "staging", "--run-id", "newer")
        _, err = older.communicate(timeout=60)
        assert older.returncode == 1 and "superseded" in err and "run newer is newer" in err
    finally:
        lock.release()
    _, err = newer.communicate(timeout=120)
    assert newer.returncode == 0, err
    assert project.run_state("older")["status"] == "superseded"
    assert "run newer" in project.run_state("older")["reason"]
    assert version_at(project.url("staging")) == 1


def _wait_waiting(project: Project, run_id: str, timeout: float = 60) -> None:
    db = project.root / ".vintage" / "pipeline.db"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with sqlite3.connect(db, timeout=10) as conn:
            if conn.execute("SELECT 1 FROM waiters WHERE run_id = ?", (run_id,)).fetchone():
                return
        time.sleep(0.02)
    raise AssertionError(f"run {run_id} never waited for the lock")


def test_stage_by_stage_as_ci_would(project):
    for stage in ("build", "staging"):
        res = project.vintage("stage", stage, "--run-id", "ci-4711")
        assert res.returncode == 0, res.stderr
    early = project.vintage("stage", "production", "--run-id", "ci-4712")
    assert early.returncode == 1 and "depends on staging" in early.stderr
    assert project.vintage("stage", "production", "--run-id", "ci-4711").returncode == 3
    assert project.vintage("approve", "ci-4711", "production").returncode == 0
    assert project.vintage("stage", "production", "--run-id", "ci-4711").returncode == 0
    assert project.run_state("ci-4711")["status"] == "succeeded"


@pytest.mark.parametrize(
    "pipeline, needle",
    [
        (
            {
                "stages": [
                    {"name": "a", "steps": ["train"], "depends_on": ["b"]},
                    {"name": "b", "steps": ["train"], "depends_on": ["a"]},
                ]
            },
            "cycle: a -> b -> a",
        ),
        (
            {"stages": [{"name": "a", "steps": ["train"], "depends_on": ["nope"]}]},
            "unknown stage(s) ['nope']",
        ),
        ({"stages": [{"name": "a", "steps": ["deploy"]}]}, "no `environment`"),
        ({"stages": [{"name": "a", "steps": ["deploy"], "environment": "qa"}]}, "environment 'qa'"),
        ({"stages": [{"name": "a", "steps": ["fly"]}]}, "pipeline.stages[0].steps[0]"),
    ],
)
def test_bad_pipelines_are_config_errors(project, pipeline, needle):
    project.write(pipeline=pipeline)
    res = project.vintage("run")
    assert res.returncode == 2, res.stderr
    assert needle in res.stderr


def test_a_pipeline_without_staging(project):
    project.write(
        pipeline={
            "stages": [
                {"name": "build", "steps": ["validate", "train", "register", "release"]},
                {
                    "name": "production",
                    "environment": "production",
                    "depends_on": ["build"],
                    "steps": ["approval", "deploy", "smoke_test", "promote"],
                },
            ]
        }
    )
    res = project.vintage("run", "--auto-approve")
    assert res.returncode == 0, res.stderr
    assert version_at(project.url("staging")) is None
    assert post(project.url("production"), project.key())[0] == 200
    assert "staging" not in project.aliases()


def test_a_waiting_run_whose_request_expired_cannot_resume(project):
    project.env("production", approval_ttl_hours=0.0005)  # 1.8 s
    assert project.vintage("run").returncode == 3
    [run] = project.runs()
    time.sleep(2.5)
    res = project.vintage("resume", run["id"])
    assert res.returncode == 1 and "expired after" in res.stderr
    assert version_at(project.url("production"), project.key()) is None
    assert ("approval.expired", f"{run['id']}/production") in {
        (e["action"], e["target"]) for e in project.audit()
    }


def test_a_rerun_that_reproduces_version_1_releases_it_with_the_run_that_produced_it(project):
    project.write(
        pipeline={"stages": [{"name": "build", "steps": ["validate", "train", "register", "release"]}]}
    )
    assert project.vintage("run").returncode == 0
    again = project.vintage("run")
    assert again.returncode == 0, again.stderr
    assert "version 1 already holds this model" in again.stdout + again.stderr
    [version] = json.loads(project.vintage("models", "--json").stdout)
    newer, older = project.runs()
    first = json.loads(project.vintage("release", "show", older["id"], "--json").stdout)
    second = json.loads(project.vintage("release", "show", newer["id"], "--json").stdout)
    assert first["mlflow_run_id"] == version["run_id"]
    assert "reproduced_by_run_id" not in first
    # the rerun's chosen run reproduced version 1: the record names version 1's own run, and the
    # reproducing run as such
    chosen = next(
        s["output"]["selected"]["run_id"]
        for st in project.run_state(newer["id"])["stages"]
        for s in st["steps"]
        if s["name"] == "train"
    )
    assert chosen != version["run_id"]
    assert second["version"] == 1
    assert second["mlflow_run_id"] == version["run_id"]
    assert second["reproduced_by_run_id"] == chosen
