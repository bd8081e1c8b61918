"""What surprised a new user, end to end as real processes: `vintage ui` stopped with SIGTERM, approvals
decided twice, unknown stage and environment names, rollback alias moves in the audit trail, `release show`
without --json, and the curl example outside an activated venv."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.test_pipeline import Project, version_at
from support.scoring import free_port

pytestmark = pytest.mark.slow

VINTAGE = str(Path(sys.executable).with_name("vintage"))
REPO = Path(__file__).resolve().parents[2]


def _proc_stat(pid: int) -> tuple[int, int, str] | None:
    """(ppid, pgid, state) of a process from /proc, ``None`` when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()
    return int(fields[1]), int(fields[2]), fields[0]


def _processes() -> dict[int, tuple[int, int, str]]:
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _proc_stat(int(entry.name))) is not None:
            found[int(entry.name)] = stat
    return found


def _descendants(root: int) -> dict[int, int]:
    """pid -> process group of every live descendant of ``root``."""
    procs = _processes()
    out: dict[int, int] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, pgid, state) in procs.items():
            if ppid == parent and pid not in out and state != "Z":
                out[pid] = pgid
                frontier.append(pid)
    return out


def _live_in_groups(groups: set[int]) -> list[int]:
    return [pid for pid, (_, pgid, state) in _processes().items() if pgid in groups and state != "Z"]


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.HTTPError):
        return False


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_ui_stopped_with_sigterm_leaves_no_mlflow_server(tmp_path: Path) -> None:
    (tmp_path / "vintage.yaml").write_text((REPO / "vintage.yaml").read_text())
    port = free_port()
    ui = subprocess.Popen(
        [VINTAGE, "ui", "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own group, so the test can find everything it started
    )
    groups = {ui.pid}
    try:
        deadline = time.monotonic() + 180
        while not _answers(port):
            assert ui.poll() is None, ui.stderr.read().decode() if ui.stderr else ""
            assert time.monotonic() < deadline, "the MLflow UI never answered"
            time.sleep(0.5)
        started = _descendants(ui.pid)
        assert started, "vintage ui started no server process"
        groups |= set(started.values())

        ui.send_signal(signal.SIGTERM)
        ui.wait(timeout=60)

        assert _live_in_groups(groups) == []
        assert [pid for pid in started if (s := _proc_stat(pid)) is not None and s[2] != "Z"] == []
        assert not _port_open(port)
    finally:
        for group in groups:  # never leave a server behind, whatever failed above
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            ui.wait(timeout=10)


# ------------------------------------------------------------------------------ pipeline commands


@pytest.fixture
def pipeline_project(tmp_path: Path) -> Iterator[Project]:
    proj = Project(tmp_path)
    assert proj.vintage("secrets", "create-scope", "production/serving").returncode == 0
    put = proj.vintage("secrets", "put", "-s", "production/serving", "-k", "primary", "--generate")
    assert put.returncode == 0, put.stderr
    yield proj
    for env in ("staging", "production"):
        proj.vintage("stop", env, timeout=60)


def _decisions(project: Project, run_id: str) -> list[tuple[str, str]]:
    with sqlite3.connect(project.root / ".vintage" / "pipeline.db") as db:
        rows = db.execute("SELECT decision, actor FROM approvals WHERE run_id = ? ORDER BY id", (run_id,))
        return [(str(d), str(a)) for d, a in rows]


def test_a_gate_is_decided_once_and_a_rejection_is_final(pipeline_project: Project) -> None:
    project = pipeline_project
    assert project.vintage("run").returncode == 3
    [run] = project.runs()
    rid = run["id"]
    assert project.vintage("approve", rid, "production", "--as", "alice").returncode == 0
    recorded = _decisions(project, rid)

    again = project.vintage("approve", rid, "production", "--as", "bob")
    assert again.returncode == 1
    assert f"stage production of run {rid} was already approved by alice at " in again.stderr
    assert _decisions(project, rid) == recorded  # nothing new recorded
    assert len(project.audit("approval.approved")) == 1

    # an approval not yet acted on can still be revoked by a rejection; the rejection is final
    assert project.vintage("reject", rid, "production", "--as", "carol", "-m", "wrong data").returncode == 0
    recorded = _decisions(project, rid)
    for verb in ("approve", "reject"):
        late = project.vintage(verb, rid, "production", "--as", "bob")
        assert late.returncode == 1, late.stderr
        assert f"stage production of run {rid} was rejected by carol at " in late.stderr
        assert "(wrong data)" in late.stderr and "pending" not in late.stderr
    assert project.vintage("resume", rid).returncode == 1  # a rejected run does not resume
    after_resume = project.vintage("approve", rid, "production")
    assert after_resume.returncode == 1 and "was rejected by carol" in after_resume.stderr
    assert _decisions(project, rid) == recorded
    assert len(project.audit("approval.rejected")) == 1
    assert version_at(project.url("production")) is None


def test_unknown_stage_or_environment_names_are_usage_errors(pipeline_project: Project) -> None:
    project = pipeline_project
    cases = [
        (("stage", "prod", "--run-id", "ci-1"), "the pipeline has no stage 'prod'"),
        (("approve", "no-such-run", "prod"), "the pipeline has no stage 'prod'"),
        (("reject", "no-such-run", "prod"), "the pipeline has no stage 'prod'"),
        (("databricks", "submit", "prod"), "the pipeline has no stage 'prod'"),
        (("stop", "prod"), "no environment 'prod'"),
        (("rollback", "prod"), "no environment 'prod'"),
        (("serve", "--environment", "prod", "--port", str(free_port())), "no environment 'prod'"),
    ]
    for args, headline in cases:
        res = project.vintage(*args, timeout=120)
        assert res.returncode == 2, (args, res.stderr)
        assert headline in res.stderr, (args, res.stderr)
        assert "stages: build, staging, production" in res.stderr or "environments: staging, production" in (
            res.stderr
        )
    assert project.runs() == []  # `vintage stage` created no run for an unknown stage
    assert not (project.root / ".vintage" / "locks" / "env-prod.lock").exists()


def _complete(cwd: Path, line: str) -> list[str]:
    """What bash completion offers for ``line`` (the last word being completed), asked for as the bash
    script of ``vintage --show-completion`` asks."""
    words = line.split(" ")
    env = {
        **os.environ,
        "COMP_WORDS": line,
        "COMP_CWORD": str(len(words) - 1),
        "_VINTAGE_COMPLETE": "complete_bash",
    }
    env.pop("VINTAGE_CONFIG", None)
    out = subprocess.run([VINTAGE], cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.split()


def test_shell_completion_offers_commands_and_the_projects_environments_and_stages(tmp_path: Path) -> None:
    # The script `vintage --show-completion` prints for bash, asked for directly: --show-completion detects
    # the calling shell, and under sh (as in CI) it says "Shell sh not supported".
    env = {**os.environ, "_VINTAGE_COMPLETE": "source_bash"}
    script = subprocess.run([VINTAGE], env=env, capture_output=True, text=True, check=True)
    assert "complete -o default -F _vintage_completion vintage" in script.stdout
    assert _complete(tmp_path, "vintage st") == ["stage", "status", "start", "stop"]
    assert _complete(tmp_path, "vintage start ") == ["staging", "production"]  # no vintage.yaml: built-ins
    (tmp_path / "vintage.yaml").write_text(
        "environments: {qa: {port: 9300}}\n"
        "pipeline:\n  stages:\n    - {name: build, steps: [validate, train, register]}\n"
        "    - {name: qa, environment: qa, depends_on: [build], steps: [deploy]}\n"
    )
    assert _complete(tmp_path, "vintage stop ") == ["staging", "production", "qa"]
    assert _complete(tmp_path, "vintage serve -e q") == ["qa"]
    assert _complete(tmp_path, "vintage stage ") == ["build", "qa"]
    assert _complete(tmp_path, "vintage approve RUN ") == ["build", "qa"]
    (tmp_path / "other.yaml").write_text("environments: {dev: {port: 9400}}\n")
    assert _complete(tmp_path, "vintage -c other.yaml start d") == ["dev"]
    (tmp_path / "vintage.yaml").write_text("environments: [not: a: mapping\n")  # unreadable: built-ins
    assert _complete(tmp_path, "vintage rollback p") == ["production"]


def test_init_starts_a_project_that_trains(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VINTAGE_", "MLFLOW_"))}

    def cli(*args: str, cwd: Path = tmp_path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([VINTAGE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)

    made = cli("init", "wines")
    assert made.returncode == 0, made.stderr
    created = "created wines/vintage.yaml and .gitignore (.vintage/, __pycache__/, *.pyc)"
    assert made.stderr.startswith(created), made.stderr
    assert "\n  cd wines\n" in made.stderr and "vintage run" in made.stderr
    project = tmp_path / "wines"
    trained = cli("train", "--json", cwd=project)
    assert trained.returncode == 0, trained.stderr
    assert (project / ".vintage" / "mlflow.db").is_file()
    again = cli("init", "wines")
    assert again.returncode == 2
    assert again.stderr.startswith("error: wines/vintage.yaml already exists; nothing was changed")
