"""The shared state (``state_url``) on a real PostgreSQL: the pipeline store, the audit trail, locks across
"machines" (separate processes with separate state directories), and what a user sees when it goes wrong."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from vintage import audit, statedb
from vintage.config.models import ProjectSettings
from vintage.pipeline import state as st
from vintage.shared_state import attach, display

pytestmark = pytest.mark.integration

VINTAGE = str(Path(sys.executable).with_name("vintage"))


def _machine(root: Path, url: str) -> st.StateStore:
    """One "machine": its own state directory, bound to the shared database."""
    settings = ProjectSettings(state_dir=root / ".vintage", state_url=url)
    assert attach(settings) is not None
    return st.StateStore(settings.state_dir.resolve())


def test_two_machines_share_runs_approvals_releases_and_the_audit_trail(state_db, tmp_path):
    a = _machine(tmp_path / "a", state_db)
    b = _machine(tmp_path / "b", state_db)
    stages = [("build", None, ["train", "register"]), ("production", "production", ["approval", "deploy"])]
    assert a.create_run("ci-1", "alice", "d1", stages, {"auto_approve": False})
    assert not b.create_run("ci-1", "bob", "d1", stages, {}, exist_ok=True)  # the second job's attempt
    with pytest.raises(Exception, match="exists already"):
        b.create_run("ci-1", "bob", "d1", stages, {})
    a.set_step("ci-1", "build", "train", st.RUNNING)
    a.set_step("ci-1", "build", "train", st.SUCCEEDED, output={"best_run": "r1"}, log="ok")
    b.set_option("ci-1", "auto_approve", True)
    b.add_approval("ci-1", "production", "approved", "carol", "looks good", {"ci": "github"})
    a.update_release("ci-1", version=3, deployments={"staging": {"version": 3}})
    b.update_release("ci-1", deployments={"production": {"version": 3}})

    run = b.run("ci-1")
    assert run.actor == "alice" and run.options == {"auto_approve": True}
    assert run.stage("build").steps[0].status == st.SUCCEEDED and run.output("train") == {"best_run": "r1"}
    assert run.stage("build").steps[0].attempts == 1
    assert [x["actor"] for x in a.approvals("ci-1", "production")] == ["carol"]
    assert a.release("ci-1") == {
        "run_id": "ci-1",
        "version": 3,
        "deployments": {"staging": {"version": 3}, "production": {"version": 3}},
    }
    assert [r.id for r in a.runs()] == ["ci-1"]
    # Nothing was written to either machine's SQLite files.
    assert not (tmp_path / "a" / ".vintage" / st.DB_FILE).exists()
    assert not (tmp_path / "b" / ".vintage" / st.DB_FILE).exists()

    audit.record(a.state_dir, "deploy", "production", "ok", environment="production", actor="alice")
    audit.record(b.state_dir, "approval.approve", "ci-1/production", "ok", actor="carol")
    seen = audit.events(b.state_dir)
    assert [(e.action, e.actor) for e in seen] == [("deploy", "alice"), ("approval.approve", "carol")]
    assert [e.action for e in audit.events(a.state_dir, action="approval.")] == ["approval.approve"]
    assert [e.action for e in audit.events(a.state_dir, action="APPROVAL.")] == []  # a prefix, case kept
    assert not (tmp_path / "a" / ".vintage" / audit.AUDIT_FILE).exists()


def test_waiters_see_the_newest_run_across_machines(state_db, tmp_path):
    a = _machine(tmp_path / "a", state_db)
    b = _machine(tmp_path / "b", state_db)
    a.create_run("older", "x", "d", [], {})
    time.sleep(0.01)
    b.create_run("newer", "x", "d", [], {})
    a.wait_for("older", "staging")
    b.wait_for("newer", "staging")
    b.wait_for("newer", "staging")  # twice: still one row
    assert a.newer_waiter("older", "staging") == "newer"
    assert b.newer_waiter("newer", "staging") is None
    b.done_waiting("newer", "staging")
    assert a.newer_waiter("older", "staging") is None


_HOLDER = """
import sys, time
from pathlib import Path
from vintage.config.models import ProjectSettings
from vintage.pipeline import state as st
from vintage.shared_state import attach
settings = ProjectSettings(state_dir=Path(sys.argv[1]), state_url=sys.argv[2])
attach(settings)
store = st.StateStore(settings.state_dir.resolve())
for name in sys.argv[3:]:
    assert store.lock(name).acquire(timeout=10), name
print("held", flush=True)
time.sleep(600)
"""


def test_a_lock_holds_across_machines_and_goes_with_a_killed_holder(state_db, tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(tmp_path / "a"), state_db, "env-production", "run-ci-7"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        b = _machine(tmp_path / "b", state_db)
        other = b.lock("env-production")
        started = time.monotonic()
        assert not other.acquire(timeout=0.6)
        assert time.monotonic() - started >= 0.5  # it waited before giving up
        assert b.lock("env-staging").acquire(timeout=0)  # another environment is free
        b.create_run("ci-7", "x", "d", [], {})
        b.set_run("ci-7", st.RUNNING, claim=True)
        assert b.run("ci-7").shown_status == "running"  # its lock is held (on "machine" a)
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
    # The killed job's session ends with its connection: the lock is free at once, and the run shows as
    # interrupted (resumable), whatever pid it recorded.
    assert other.acquire(timeout=10)
    other.release()
    assert b.run("ci-7").shown_status == "interrupted"


def test_a_run_held_by_another_job_is_refused_with_a_clear_message(state_db, tmp_path):
    (tmp_path / "vintage.yaml").write_text(yaml.safe_dump({"state_url": state_db}))
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(tmp_path / ".vintage"), state_db, "run-ci-9"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        res = subprocess.run(
            [VINTAGE, "stage", "build", "--run-id", "ci-9"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            env={k: v for k, v in os.environ.items() if k != "VINTAGE_STATE_URL"},
        )
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
    assert res.returncode == 1, res.stderr
    assert "run ci-9 is being run by another process (or CI job) right now" in res.stderr


def test_the_password_is_a_secret_reference_read_through_the_providers(state_db, tmp_path):
    # The test cluster trusts local connections, so any password works: what is checked is that the
    # reference is resolved by the env provider, quoted into the URL, recorded, and never shown.
    url = state_db.replace("postgresql://postgres@", "postgresql://postgres:${secret:ci/state_password}@")
    password = "p@ss/w:rd-0123456789"
    os.environ["VINTAGE_SECRET__CI__STATE_PASSWORD"] = password
    store = _machine(tmp_path, url)
    assert "***" in display(url) and "secret" not in display(url)
    assert store.runs() == []
    reads = audit.events(store.state_dir, action="secret.read")
    assert [(e.target, e.outcome, e.reader) for e in reads] == [("ci/state_password", "ok", "state")]
    assert password not in store.where


def test_a_missing_password_secret_and_an_unreachable_server_are_one_line(state_db, tmp_path):
    url = state_db.replace("postgresql://postgres@", "postgresql://postgres:${secret:ci/state_password}@")
    (tmp_path / "vintage.yaml").write_text(yaml.safe_dump({"state_url": url}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("VINTAGE_SECRET__")}
    res = subprocess.run(
        [VINTAGE, "runs", "list"], cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env
    )
    assert res.returncode != 0
    assert "secret ci/state_password not found" in res.stderr
    assert "Traceback" not in res.stderr

    from support.scoring import free_port

    closed = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    res = subprocess.run(
        [VINTAGE, "runs", "list"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "VINTAGE_STATE_URL": closed},
    )
    assert res.returncode == 1, res.stderr
    first = res.stderr.strip().splitlines()[0]
    assert f"cannot reach the shared state at {closed}" in first
    assert "Connection refused" in first or "connection refused" in first.lower()
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize(
    "url, needle",
    [
        ("postgresql://vintage:hunter22@db:5432/vintage", "literal password"),
        ("mysql://vintage@db/vintage", "must be a PostgreSQL URL"),
        ("postgresql://vintage@db:5432", "needs a host and a database"),
    ],
)
def test_bad_state_urls_are_config_errors(tmp_path, url, needle):
    (tmp_path / "vintage.yaml").write_text(yaml.safe_dump({"state_url": url}))
    res = subprocess.run([VINTAGE, "runs", "list"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2, res.stderr
    assert needle in res.stderr and "state_url" in res.stderr
    assert "hunter22" not in res.stderr


def test_the_lock_key_is_stable_and_distinct():
    assert statedb.lock_key("env-production") == statedb.lock_key("env-production")
    assert statedb.lock_key("env-production") != statedb.lock_key("env-staging")
    assert -(2**63) <= statedb.lock_key("run-x") < 2**63


def test_a_role_that_may_only_append_to_the_audit_trail_runs_the_pipeline_state(state_db, tmp_path):
    """The hardening docs/security.md recommends: tables made by an administrator, and a CI role with no
    CREATE, no UPDATE or DELETE on the audit table. vintage works with it; the role cannot rewrite history."""
    from sqlalchemy import create_engine, text

    admin = _machine(tmp_path / "admin", state_db)
    assert admin.runs() == []  # the administrator's first use creates the schema and tables
    engine = create_engine(
        state_db.replace("postgresql://", "postgresql+psycopg2://"), isolation_level="AUTOCOMMIT"
    )
    role = f"vintage_ci_{os.getpid()}_{tmp_path.name[-6:].replace('-', '_').lower()}"
    with engine.connect() as conn:
        for sql in (
            "CREATE ROLE {role} LOGIN PASSWORD 'ci-password-0123456789'",
            "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
            "GRANT USAGE ON SCHEMA vintage TO {role}",
            "GRANT SELECT, INSERT, UPDATE, DELETE ON vintage.runs, vintage.stages, vintage.steps,"
            " vintage.approvals, vintage.releases, vintage.waiters TO {role}",
            "GRANT SELECT, INSERT ON vintage.events TO {role}",
            "GRANT USAGE ON ALL SEQUENCES IN SCHEMA vintage TO {role}",
        ):
            conn.execute(text(sql.format(role=role)))
    engine.dispose()
    ci_url = state_db.replace("postgresql://postgres@", f"postgresql://{role}@")
    ci = _machine(tmp_path / "ci", ci_url)
    ci.create_run("ci-1", "bob", "d", [("build", None, ["train"])], {})
    ci.set_step("ci-1", "build", "train", st.SUCCEEDED, output={"ok": 1})
    ci.wait_for("ci-1", "staging")
    ci.done_waiting("ci-1", "staging")
    ci.update_release("ci-1", version=1)
    audit.record(ci.state_dir, "deploy", "staging", "ok", actor="bob")
    assert [e.action for e in audit.events(ci.state_dir)] == ["deploy"]
    shared = statedb.bound(ci.state_dir)
    assert shared is not None
    for forbidden in ("DELETE FROM events", "UPDATE events SET actor = 'mallory'"):
        with pytest.raises(statedb.StateDBError, match="permission denied"), shared.write() as tx:
            tx(forbidden)
    assert [e.actor for e in audit.events(admin.state_dir)] == ["bob"]
