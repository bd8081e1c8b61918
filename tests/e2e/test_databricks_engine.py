"""``compute.engine: databricks`` end to end: `vintage train` and `vintage run` through the real CLI and
the real databricks-sdk, against the fake workspace of ``support.fake_databricks_jobs`` on 127.0.0.1.

Where a test needs the job to do its work, the fake plays the job cluster (``LocalCluster``): it runs the
submitted ``python_wheel_task`` as the local ``vintage`` command in a separate working directory (the
cluster's own state), with the uploaded vintage.yaml and ``DATABRICKS_RUNTIME_VERSION`` set, as Databricks
sets it on clusters. That is the wheel's entry point as the cluster would call it, except that it is the
installed source tree, not the uploaded wheel (whose build is tested in
``tests/unit/compute/test_databricks_wheel.py``). Both sides share one sqlite tracking store through
``tracking_uri``, as a workspace shares its MLflow store. No live workspace is involved.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.fake_databricks_jobs import (
    RUN_ID,
    FakeJobsWorkspace,
    LocalCluster,
    State,
    cluster_env,
    fake_databricks_jobs,
)
from support.scoring import free_port

VINTAGE = str(Path(sys.executable).with_name("vintage"))
REPO = Path(__file__).resolve().parents[2]
CLUSTER = {
    "spark_version": "15.4.x-cpu-ml-scala2.12",
    "node_type_id": "Standard_DS3_v2",
    "autoscale": {"min_workers": 1, "max_workers": 4},
}
ONE_POINT = {
    "class": "sklearn.linear_model.ElasticNet",
    "params": {"random_state": 42},
    "grid": [{"alpha": 0.1, "l1_ratio": 0.1}],
}
WHEEL_BYTES = b"PK\x03\x04 a stand-in wheel \x00\xff"


@pytest.fixture(autouse=True)
def _no_databricks_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(tmp_path / "no-databrickscfg"))


@pytest.fixture
def wheel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in wheel (VINTAGE_DATABRICKS_WHEEL): uploaded byte for byte, never built here."""
    path = tmp_path / "wheels" / "vintage-0.1.0-py3-none-any.whl"
    path.parent.mkdir()
    path.write_bytes(WHEEL_BYTES)
    monkeypatch.setenv("VINTAGE_DATABRICKS_WHEEL", str(path))
    return path


@pytest.fixture
def cluster(tmp_path_factory: pytest.TempPathFactory) -> LocalCluster:
    return LocalCluster(tmp_path_factory.mktemp("cluster"), cluster_env())


def _store(project: Path) -> str:
    return f"sqlite:///{project / '.vintage' / 'mlflow.db'}"


def _configure(project: Path, engine: str = "databricks", **changes: Any) -> dict[str, Any]:
    data = yaml.safe_load((REPO / "vintage.yaml").read_text())
    data["tracking_uri"] = _store(project)  # the store both sides share
    data["compute"] = {
        "engine": engine,
        "spark": {"master": "local[2]"},
        "databricks": {
            "host": "${secret:ci/databricks_host}",
            "token": "${secret:ci/databricks_token}",
            "job_cluster": CLUSTER,
        },
    }
    data.update(changes)
    (project / "vintage.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return data


def _credentials(monkeypatch: pytest.MonkeyPatch, ws: FakeJobsWorkspace) -> None:
    monkeypatch.setenv("VINTAGE_SECRET__CI__DATABRICKS_HOST", ws.url)
    monkeypatch.setenv("VINTAGE_SECRET__CI__DATABRICKS_TOKEN", ws.token)


def _submits(ws: FakeJobsWorkspace) -> list[dict[str, Any]]:
    return [r.body for r in ws.api_requests() if r.path == "/api/2.2/jobs/runs/submit"]


def _client(project: Path) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=_store(project), registry_uri=_store(project))


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


# --------------------------------------------------------------------------------------------------
# vintage train
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_train_submits_one_job_run_that_trains_on_the_cluster_and_registers(
    project: Path, cli: Any, cluster: LocalCluster, wheel: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _configure(project, estimator=ONE_POINT)
    with fake_databricks_jobs(cluster=cluster) as ws:
        _credentials(monkeypatch, ws)
        result = cli("train", "--json")
    assert result.code == 0, f"{result.err}\n--- cluster ---\n{cluster.output}"

    # Exactly one run, with the task built from the config.
    (submit,) = _submits(ws)
    (folder,) = ws.dirs
    (task,) = submit["tasks"]
    assert task["new_cluster"] == CLUSTER
    assert task["libraries"] == [{"whl": f"/Workspace{folder}/{wheel.name}"}]
    wheel_task = task["python_wheel_task"]
    assert (wheel_task["package_name"], wheel_task["entry_point"]) == ("vintage", "vintage")
    params = wheel_task["parameters"]
    assert params[:5] == ["-c", f"/Workspace{folder}/vintage.yaml", "stage", "build", "--run-id"]
    run_id = params[5]
    assert re.fullmatch(r"train-\d{8}-\d{6}-[0-9a-f]{6}", run_id)
    assert [u.content for u in ws.uploads] == [WHEEL_BYTES, (project / "vintage.yaml").read_bytes()]

    # States streamed in order, then the outcome read back from the shared registry.
    states = [line for line in result.err.splitlines() if line.startswith(f"Databricks run {RUN_ID}:")]
    assert states == [
        f"Databricks run {RUN_ID}: PENDING - Waiting for cluster",
        f"Databricks run {RUN_ID}: RUNNING - In run",
        f"Databricks run {RUN_ID}: TERMINATED/SUCCESS",
    ]
    out = json.loads(result.out)
    assert out["engine"] == "databricks"
    assert out["databricks"]["databricks_run_id"] == RUN_ID
    assert out["databricks"]["run_page_url"].endswith(f"/run/{RUN_ID}")
    assert out["registered"]["version"] == 1
    assert out["registered"]["aliases"] == ["candidate"]
    assert out["runs"] == 1 and out["failed"] == 0

    # The job trained with the cluster's Spark (the in-job signal), in the shared store, and did not
    # submit itself again (one submit above; the cluster process never talked to the workspace).
    client = _client(project)
    (parent,) = client.search_runs(
        [client.get_experiment_by_name("DrinksQuality").experiment_id],
        filter_string="tags.`vintage.role` = 'grid'",
    )
    assert parent.data.tags["vintage.pipeline_run"] == run_id
    assert parent.data.tags["vintage.engine"] == "spark local[2]"
    version = client.get_model_version_by_alias("winequality", "candidate")
    assert (int(version.version), version.run_id) == (1, out["selected_run_id"])
    assert "submitted Databricks run" not in cluster.output
    assert ws.token not in result.out + result.err + cluster.output


def test_train_a_failed_job_run_exits_1_with_one_line_and_registers_nothing(
    project: Path, cli: Any, wheel: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _configure(project, engine="local")  # --engine databricks overrides it
    failed = State("TERMINATED", "FAILED", "Task vintage_build failed with message: Workload failed.")
    with fake_databricks_jobs([State("PENDING"), State("RUNNING"), failed]) as ws:
        ws.error = f"DataError: wine.csv: no such file (token {ws.token})"
        _credentials(monkeypatch, ws)
        result = cli("train", "--engine", "databricks")
    assert result.code == 1, result.err
    (line,) = _error_lines(result.err)
    assert line == (
        f"error: Databricks run {RUN_ID} ended TERMINATED/FAILED: Task vintage_build failed with message: "
        "Workload failed."
    )
    assert "hint: task error: DataError: wine.csv: no such file" in result.err
    assert "Traceback" not in result.err
    assert len(_submits(ws)) == 1
    assert ws.token not in result.out + result.err
    # Nothing was registered: the local side never opened the store.
    assert not (project / ".vintage" / "mlflow.db").exists()


def test_train_job_that_registers_nowhere_visible_is_a_clear_error(
    project: Path, cli: Any, wheel: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The run succeeds but wrote to another store (the scripted fake executes nothing).
    _configure(project)
    with fake_databricks_jobs([State("TERMINATED", "SUCCESS")]) as ws:
        _credentials(monkeypatch, ws)
        result = cli("train")
    assert result.code == 1
    (line,) = _error_lines(result.err)
    assert f"Databricks run {RUN_ID} succeeded, but no MLflow run of pipeline run train-" in line
    assert "the job and this machine must use the same tracking store" in result.err


@pytest.mark.parametrize(
    ("drop", "message"),
    [
        ("token", "compute.databricks.host and compute.databricks.token are not both set"),
        ("tracking_uri", "the MLflow store is the embedded one"),
    ],
)
def test_train_config_errors_exit_2_before_any_request(
    project: Path, cli: Any, wheel: Path, monkeypatch: pytest.MonkeyPatch, drop: str, message: str
) -> None:
    data = _configure(project)
    if drop == "token":
        del data["compute"]["databricks"]["token"]
    else:
        del data["tracking_uri"]
    (project / "vintage.yaml").write_text(yaml.safe_dump(data))
    with fake_databricks_jobs() as ws:
        _credentials(monkeypatch, ws)
        result = cli("train")
    assert result.code == 2, result.err
    assert message in result.err
    assert ws.requests == []


def test_train_ctrl_c_cancels_the_job_run_and_exits_130(
    project: Path, wheel: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _configure(project)
    with fake_databricks_jobs([State("PENDING", None, "Waiting for cluster"), State("RUNNING")]) as ws:
        env = {
            **os.environ,
            "VINTAGE_SECRET__CI__DATABRICKS_HOST": ws.url,
            "VINTAGE_SECRET__CI__DATABRICKS_TOKEN": ws.token,
        }
        proc = subprocess.Popen(
            [VINTAGE, "train"],
            cwd=project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 60
            while ws.polls < 1 and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert ws.polls >= 1, proc.communicate(timeout=30)
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 130, err
    assert f"cancelling Databricks run {RUN_ID}" in err
    cancels = [r.body for r in ws.api_requests() if r.path == "/api/2.2/jobs/runs/cancel"]
    assert cancels == [{"run_id": RUN_ID}]
    assert ws.token not in out + err


# --------------------------------------------------------------------------------------------------
# vintage run
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def staging_port(project: Path, cli: Any) -> Iterator[int]:
    port = free_port()
    yield port
    cli("stop", "staging")


@pytest.mark.slow
def test_run_submits_the_build_stage_fails_cleanly_then_resumes_and_deploys_staging_here(
    project: Path,
    cli: Any,
    cluster: LocalCluster,
    wheel: Path,
    monkeypatch: pytest.MonkeyPatch,
    staging_port: int,
) -> None:
    _configure(
        project,
        estimator=ONE_POINT,
        environments={"staging": {"port": staging_port}},
        pipeline={
            "stages": [
                {"name": "build", "steps": ["validate", "train", "register", "release"]},
                {
                    "name": "staging",
                    "environment": "staging",
                    "depends_on": ["build"],
                    "steps": ["deploy", "smoke_test", "promote"],
                },
            ]
        },
    )
    failed = State("TERMINATED", "FAILED", "Task vintage_build failed with message: Workload failed.")
    with fake_databricks_jobs([State("PENDING"), failed]) as ws:
        _credentials(monkeypatch, ws)
        first = cli("run", "--json")
        # The first job run fails: the build stage fails with one line, staging is skipped.
        assert first.code == 1, first.err
        (line,) = _error_lines(first.err)
        assert line.startswith(f"error: Databricks run {RUN_ID} ended TERMINATED/FAILED: Task vintage_build")
        failed_run = json.loads(first.out)
        run_id = failed_run["id"]
        assert [(s["name"], s["status"]) for s in failed_run["stages"]] == [
            ("build", "failed"),
            ("staging", "skipped"),
        ]
        assert not (project / ".vintage" / "mlflow.db").exists()  # nothing registered

        # `vintage resume` submits the stage again; this time the (fake) cluster runs it.
        ws.polls, ws.cluster = 0, cluster
        result = cli("resume", run_id, "--json")
    cluster.stop()
    assert result.code == 0, f"{result.err}\n--- cluster ---\n{cluster.output}"
    run = json.loads(result.out)
    assert run["id"] == run_id

    # Two job runs, both of the build stage of this very run id, on a cluster from the config.
    submits = _submits(ws)
    assert len(submits) == 2
    for submit in submits:
        (task,) = submit["tasks"]
        assert task["python_wheel_task"]["parameters"][2:] == ["stage", "build", "--run-id", run_id]
        assert task["new_cluster"] == CLUSTER
        assert submit["run_name"] == f"vintage build {run_id}"

    # The local record of the build stage holds what the job did; release ran here.
    stages = {s["name"]: s for s in run["stages"]}
    assert stages["build"]["status"] == stages["staging"]["status"] == "succeeded"
    steps = {s["name"]: s for s in stages["build"]["steps"]}
    assert steps["train"]["output"]["databricks"]["databricks_run_id"] == RUN_ID
    assert steps["register"]["output"]["version"] == 1
    assert steps["register"]["output"]["run_id"] == steps["train"]["output"]["selected"]["run_id"]
    assert f"submitted Databricks run {RUN_ID}" in steps["validate"]["log"]
    release = json.loads((project / ".vintage" / "releases" / f"{run_id}.json").read_text())
    assert release["version"] == 1
    assert release["databricks"]["run_page_url"].endswith(f"/run/{RUN_ID}")

    # The later stage ran here: staging serves the version the job registered.
    with urllib.request.urlopen(f"http://127.0.0.1:{staging_port}/version", timeout=10) as resp:
        assert int(json.loads(resp.read())["version"]) == 1
    assert int(_client(project).get_model_version_by_alias("winequality", "staging").version) == 1
    # The cluster ran the stage itself, without submitting again.
    assert "submitted Databricks run" not in cluster.output
    assert ws.token not in result.out + result.err + cluster.output


def test_a_stage_that_trains_and_deploys_is_refused_with_engine_databricks(
    project: Path, cli: Any, wheel: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _configure(
        project,
        environments={"staging": {"port": free_port()}},
        pipeline={
            "stages": [
                {
                    "name": "all",
                    "environment": "staging",
                    "steps": ["validate", "train", "register", "deploy"],
                }
            ]
        },
    )
    with fake_databricks_jobs() as ws:
        _credentials(monkeypatch, ws)
        result = cli("run")
    assert result.code == 2, result.err
    assert "stage all trains on Databricks (compute.engine: databricks) but also has the steps deploy" in (
        result.err
    )
    assert ws.requests == []
