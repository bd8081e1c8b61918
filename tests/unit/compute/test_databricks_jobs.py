"""``engine: databricks``: a stage as a one-time job run, through the real databricks-sdk to a fake workspace.

Every request goes over HTTP to ``support.fake_databricks_jobs`` on 127.0.0.1 (or to a closed port
there): nothing leaves the machine and no real pause is taken (the poll sleep is injected and recorded).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.fake_databricks_jobs import (
    RUN_ID,
    TASK_RUN_ID,
    USER,
    FakeJobsWorkspace,
    State,
    fake_databricks_jobs,
)
from support.servers import free_port
from vintage.compute.databricks import DatabricksJobError, DatabricksJobRunner
from vintage.errors import ConfigError, Interrupted, SparkError, VintageError

CLUSTER = {
    "spark_version": "15.4.x-cpu-ml-scala2.12",
    "node_type_id": "Standard_DS3_v2",
    "autoscale": {"min_workers": 1, "max_workers": 4},
}
CONFIG_TEXT = "project: demo\ncompute:\n  engine: databricks\n"
WHEEL_BYTES = b"PK\x03\x04 not really a zip \x00\xff"


@pytest.fixture(autouse=True)
def _no_databricks_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in list(os.environ):
        if var.startswith(("DATABRICKS_", "ARM_")):
            monkeypatch.delenv(var)
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(tmp_path / "no-databrickscfg"))


@pytest.fixture
def wheel(tmp_path: Path) -> Path:
    path = tmp_path / "vintage-0.1.0-py3-none-any.whl"
    path.write_bytes(WHEEL_BYTES)
    return path


class Sleeps:
    """Records the poll pauses; optionally sets a stop event at the first one."""

    def __init__(self, stop: threading.Event | None = None) -> None:
        self.durations: list[float] = []
        self.stop = stop

    def __call__(self, seconds: float) -> None:
        self.durations.append(seconds)
        if self.stop is not None:
            self.stop.set()


def _runner(ws: FakeJobsWorkspace, sleeps: Sleeps, **kwargs: Any) -> DatabricksJobRunner:
    return DatabricksJobRunner(ws.url, ws.token, CLUSTER, sleep=sleeps, **kwargs)


def _submit(runner: DatabricksJobRunner, wheel: Path, **kwargs: Any) -> dict[str, Any]:
    return runner.submit_stage("build", wheel=wheel, config_text=CONFIG_TEXT, run_id="ci-77", **kwargs)


@pytest.fixture
def ws() -> Iterator[FakeJobsWorkspace]:
    with fake_databricks_jobs() as workspace:
        yield workspace


# --------------------------------------------------------------------------------------------------
# The happy path: exact requests
# --------------------------------------------------------------------------------------------------


def test_success_uploads_submits_polls_and_returns_the_task_output(
    ws: FakeJobsWorkspace, wheel: Path
) -> None:
    said: list[str] = []
    sleeps = Sleeps()
    result = _submit(_runner(ws, sleeps), wheel, say=said.append)

    assert ws.calls() == [
        "GET /api/2.0/preview/scim/v2/Me",
        "POST /api/2.0/workspace/mkdirs",
        "POST /api/2.0/workspace/import",
        "POST /api/2.0/workspace/import",
        "POST /api/2.2/jobs/runs/submit",
        "GET /api/2.2/jobs/runs/get",
        "GET /api/2.2/jobs/runs/get",
        "GET /api/2.2/jobs/runs/get",
        "GET /api/2.2/jobs/runs/get-output",
    ]
    assert all(r.authorization == f"Bearer {ws.token}" for r in ws.api_requests())

    # One folder per submission, under the user's home.
    (folder,) = ws.dirs
    assert re.fullmatch(rf"/Users/{re.escape(USER)}/\.vintage/jobs/ci-77-[0-9a-f]{{12}}", folder)
    wheel_up, config_up = ws.uploads
    assert (wheel_up.path, wheel_up.content) == (f"{folder}/{wheel.name}", WHEEL_BYTES)
    assert (config_up.path, config_up.content) == (f"{folder}/vintage.yaml", CONFIG_TEXT.encode())
    assert {(u.format, u.overwrite) for u in ws.uploads} == {("AUTO", "true")}

    submit = next(r for r in ws.api_requests() if r.path.endswith("/runs/submit"))
    nonce = folder.rsplit("-", 1)[1]
    assert submit.body == {
        "run_name": "vintage build ci-77",
        "idempotency_token": nonce,
        "tasks": [
            {
                "task_key": "vintage_build",
                "new_cluster": CLUSTER,
                "libraries": [{"whl": f"/Workspace{folder}/{wheel.name}"}],
                "python_wheel_task": {
                    "package_name": "vintage",
                    "entry_point": "vintage",
                    "parameters": [
                        "-c",
                        f"/Workspace{folder}/vintage.yaml",
                        "stage",
                        "build",
                        "--run-id",
                        "ci-77",
                    ],
                },
            }
        ],
    }
    gets = [r for r in ws.api_requests() if r.path.endswith("/runs/get")]
    assert [r.query for r in gets] == [{"run_id": str(RUN_ID)}] * 3
    output = ws.api_requests()[-1]
    assert output.query == {"run_id": str(TASK_RUN_ID)}  # the task's run, not the parent run

    assert result["databricks_run_id"] == RUN_ID
    assert result["task_run_id"] == TASK_RUN_ID
    assert (result["life_cycle_state"], result["result_state"]) == ("TERMINATED", "SUCCESS")
    assert result["logs"] == ws.logs
    assert result["wheel"] == f"/Workspace{folder}/{wheel.name}"
    assert result["run_page_url"].endswith(f"/run/{RUN_ID}")


def test_state_changes_are_streamed_in_order(ws: FakeJobsWorkspace, wheel: Path) -> None:
    ws.states = [
        State("PENDING", None, "Waiting for cluster"),
        State("PENDING", None, "Waiting for cluster"),  # no change: not repeated
        State("RUNNING", None, "In run"),
        State("TERMINATED", "SUCCESS", ""),
    ]
    said: list[str] = []
    _submit(_runner(ws, Sleeps()), wheel, say=said.append)
    states = [s for s in said if s.startswith(f"Databricks run {RUN_ID}:")]
    assert states == [
        f"Databricks run {RUN_ID}: PENDING - Waiting for cluster",
        f"Databricks run {RUN_ID}: RUNNING - In run",
        f"Databricks run {RUN_ID}: TERMINATED/SUCCESS",
    ]
    assert said.index(f"submitted Databricks run {RUN_ID} (stage build, run ci-77)") < said.index(states[0])


def test_polls_back_off_exponentially_up_to_the_cap(ws: FakeJobsWorkspace, wheel: Path) -> None:
    ws.states = [State("PENDING")] * 3 + [State("RUNNING")] * 5 + [State("TERMINATED", "SUCCESS")]
    sleeps = Sleeps()
    _submit(_runner(ws, sleeps), wheel)
    assert sleeps.durations == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert ws.polls == 9


def test_upload_root_may_be_given_with_or_without_the_workspace_prefix(
    ws: FakeJobsWorkspace, wheel: Path
) -> None:
    result = _submit(_runner(ws, Sleeps(), upload_root="/Workspace/Shared/ml/"), wheel)
    assert "GET /api/2.0/preview/scim/v2/Me" not in ws.calls()
    assert ws.dirs[0].startswith("/Shared/ml/ci-77-")
    assert result["config"] == f"/Workspace{ws.dirs[0]}/vintage.yaml"


def test_num_workers_and_other_cluster_fields_pass_through(ws: FakeJobsWorkspace, wheel: Path) -> None:
    cluster = {
        "spark_version": "15.4.x",
        "node_type_id": "i3.xlarge",
        "num_workers": 2,
        "spark_conf": {"spark.x": "1"},
        "custom_tags": {"team": "ml"},
    }
    runner = DatabricksJobRunner(ws.url, ws.token, cluster, sleep=Sleeps())
    _submit(runner, wheel)
    submit = next(r for r in ws.api_requests() if r.path.endswith("/runs/submit"))
    assert submit.body["tasks"][0]["new_cluster"] == cluster


# --------------------------------------------------------------------------------------------------
# Failures
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("final", "shown"),
    [
        (
            State("TERMINATED", "FAILED", "Task vintage_build failed with message: exit code 1."),
            "TERMINATED/FAILED",
        ),
        (State("TERMINATED", "TIMEDOUT", "Run timed out after 3600 seconds."), "TERMINATED/TIMEDOUT"),
        (State("TERMINATED", "CANCELED", "Run cancelled by user."), "TERMINATED/CANCELED"),
        (State("SKIPPED", None, "Run skipped: maximum concurrent runs reached."), "SKIPPED"),
        (
            State("INTERNAL_ERROR", "FAILED", "Cluster could not be created:\nquota exceeded"),
            "INTERNAL_ERROR/FAILED",
        ),
    ],
)
def test_failed_runs_raise_one_line_errors_naming_run_state_and_message(
    ws: FakeJobsWorkspace, wheel: Path, final: State, shown: str
) -> None:
    ws.states = [State("PENDING"), final]
    ws.error = f"Traceback: boom with {ws.token}" if final.result_state == "FAILED" else None
    with pytest.raises(DatabricksJobError) as caught:
        _submit(_runner(ws, Sleeps()), wheel)
    err = caught.value
    assert isinstance(err, SparkError)
    headline = err.headline
    assert "\n" not in headline
    assert str(RUN_ID) in headline and shown in headline
    assert " ".join(final.state_message.split()) in headline
    text = f"{headline}\n{err.hint or ''}"
    assert ws.token not in text
    if ws.error:
        assert "Traceback: boom" in (err.hint or "")
    assert not ws.cancelled


def test_wrong_token_is_a_clear_error_without_the_token(ws: FakeJobsWorkspace, wheel: Path) -> None:
    runner = DatabricksJobRunner(ws.url, "dapi-wrong-token-0000", CLUSTER, sleep=Sleeps())
    with pytest.raises(DatabricksJobError, match="did not accept the token") as caught:
        _submit(runner, wheel)
    assert "dapi-wrong-token-0000" not in f"{caught.value.headline}{caught.value.hint}"
    assert not any(r.path.endswith("/runs/submit") for r in ws.requests)


@pytest.mark.slow
def test_unreachable_host_fails_fast_and_clearly(wheel: Path) -> None:
    host = f"http://127.0.0.1:{free_port()}"
    runner = DatabricksJobRunner(host, "dapi0123456789abcdef", CLUSTER, sleep=Sleeps())
    started = time.monotonic()
    with pytest.raises(VintageError) as caught:
        _submit(runner, wheel)
    assert time.monotonic() - started < 15
    assert "cannot reach the Databricks workspace" in caught.value.headline
    assert host in caught.value.headline
    assert "dapi0123456789abcdef" not in caught.value.headline


def test_unknown_cluster_fields_are_refused_before_any_request(ws: FakeJobsWorkspace, wheel: Path) -> None:
    runner = DatabricksJobRunner(ws.url, ws.token, {**CLUSTER, "num_workerz": 2}, sleep=Sleeps())
    with pytest.raises(ConfigError, match="num_workerz"):
        _submit(runner, wheel)
    assert ws.api_requests() == []


def test_a_missing_wheel_is_refused(ws: FakeJobsWorkspace, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no wheel"):
        _submit(_runner(ws, Sleeps()), tmp_path / "nope.whl")
    assert ws.api_requests() == []


# --------------------------------------------------------------------------------------------------
# Ctrl-C and time limits
# --------------------------------------------------------------------------------------------------


def test_stop_after_the_first_poll_cancels_the_run(ws: FakeJobsWorkspace, wheel: Path) -> None:
    ws.states = [State("PENDING"), State("RUNNING")]
    stop = threading.Event()
    said: list[str] = []
    with pytest.raises(Interrupted):
        _submit(_runner(ws, Sleeps(stop)), wheel, stop=stop, say=said.append)
    cancels = [r for r in ws.api_requests() if r.path == "/api/2.2/jobs/runs/cancel"]
    assert [r.body for r in cancels] == [{"run_id": RUN_ID}]
    assert ws.polls == 1
    assert f"cancelling Databricks run {RUN_ID}" in said
    assert ws.calls()[-1] == "POST /api/2.2/jobs/runs/cancel"


def test_stop_before_submit_sends_no_run(ws: FakeJobsWorkspace, wheel: Path) -> None:
    stop = threading.Event()
    stop.set()
    with pytest.raises(Interrupted):
        _submit(_runner(ws, Sleeps()), wheel, stop=stop)
    assert not any("jobs/runs" in c for c in ws.calls())


def test_real_wait_wakes_up_on_stop(ws: FakeJobsWorkspace, wheel: Path) -> None:
    ws.states = [State("RUNNING")]
    stop = threading.Event()
    runner = DatabricksJobRunner(ws.url, ws.token, CLUSTER, first_delay_s=30.0)  # waits on the event
    threading.Timer(0.5, stop.set).start()
    started = time.monotonic()
    with pytest.raises(Interrupted):
        _submit(runner, wheel, stop=stop)
    assert time.monotonic() - started < 10
    assert ws.cancelled


def test_max_wait_cancels_and_fails(ws: FakeJobsWorkspace, wheel: Path) -> None:
    ws.states = [State("RUNNING")]
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    runner = DatabricksJobRunner(ws.url, ws.token, CLUSTER, sleep=sleep, clock=lambda: now[0], max_wait_s=20)
    with pytest.raises(DatabricksJobError, match=f"run {RUN_ID} did not end within 20 s"):
        _submit(runner, wheel)
    assert ws.cancelled


def test_importing_the_module_does_not_import_the_sdk() -> None:
    code = "import sys, vintage.compute.databricks; print('databricks.sdk' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_the_runner_repr_hides_the_token() -> None:
    assert "secret-token" not in repr(DatabricksJobRunner("https://x", "secret-token", CLUSTER))


# --------------------------------------------------------------------------------------------------
# The CLI command
# --------------------------------------------------------------------------------------------------


def test_cli_submit_resolves_secrets_and_runs_the_stage(
    project: Path,
    wheel: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from vintage.cli import databricks_cmd

    with fake_databricks_jobs([State("TERMINATED", "SUCCESS")]) as ws:
        config = project / "vintage.yaml"
        config.write_text(
            config.read_text()
            + "compute:\n  engine: databricks\n  databricks:\n"
            + "    host: ${secret:ci/databricks_host}\n    token: ${secret:ci/databricks_token}\n"
        )
        monkeypatch.setenv("VINTAGE_SECRET__CI__DATABRICKS_HOST", ws.url)
        monkeypatch.setenv("VINTAGE_SECRET__CI__DATABRICKS_TOKEN", ws.token)
        databricks_cmd.submit("build", run_id="ci-9", wheel=wheel, upload_to="/Shared/x")
        captured = capsys.readouterr()
        assert all(r.authorization == f"Bearer {ws.token}" for r in ws.api_requests())
        assert ws.uploads[1].content == config.read_bytes()  # references unresolved
        submit = next(r for r in ws.api_requests() if r.path.endswith("/runs/submit"))
        assert submit.body["tasks"][0]["new_cluster"]["autoscale"] == {"min_workers": 1, "max_workers": 4}
        assert submit.body["tasks"][0]["python_wheel_task"]["parameters"][2:] == [
            "stage",
            "build",
            "--run-id",
            "ci-9",
        ]
        assert ws.logs in captured.out
        assert ws.token not in captured.out + captured.err
