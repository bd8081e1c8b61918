"""The distributed grid on a real Spark standalone cluster (master + 2 workers on 127.0.0.1) and on
``local[2]``: same seeds -> same metrics as the local engine, one MLflow run per point, tasks on the
workers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from support.spark import connect_server, spark_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

VINTAGE = str(Path(sys.executable).with_name("vintage"))
REPO = Path(__file__).resolve().parents[2]


def _train(project: Path, work: Path, *args: str) -> dict:
    res = subprocess.run(
        [VINTAGE, "train", "--json", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=600,
        env={**spark_env(work), "PYTHONPATH": str(REPO / "tests")},
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout)


def _project(tmp_path: Path) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "vintage.yaml").write_text((REPO / "vintage.yaml").read_text())
    return tmp_path


def _metrics(out: dict) -> dict[str, float]:
    return {f"{r['name']} {k}": v for r in out["training"]["runs"] for k, v in r["metrics"].items()}


def test_grid_on_the_standalone_cluster_matches_local(spark_master, tmp_path):
    import mlflow

    local = _train(_project(tmp_path / "local"), tmp_path / "w1")
    project = _project(tmp_path / "spark")
    spark = _train(project, tmp_path / "w2", "--master", spark_master.master)
    assert _metrics(spark) == pytest.approx(_metrics(local), rel=1e-12)  # same seeds -> same metrics
    assert spark["registered"]["version"] == 1
    client = mlflow.MlflowClient(f"sqlite:///{project / '.vintage' / 'mlflow.db'}")
    runs = [client.get_run(r["run_id"]) for r in spark["training"]["runs"]]
    assert len(runs) == 3 and all(r.info.status == "FINISHED" for r in runs)
    executors = {r.data.tags["vintage.executor"].split("/")[0] for r in runs}
    assert "driver" not in executors and executors <= {"0", "1"}, executors  # ran in the workers' executors
    parent = client.get_run(runs[0].data.tags["mlflow.parentRunId"])
    assert parent.data.tags["vintage.engine"] == f"spark {spark_master.master}"


def test_grid_on_local_spark_matches_local(tmp_path):
    local = _train(_project(tmp_path / "local"), tmp_path / "w1")
    spark = _train(_project(tmp_path / "spark"), tmp_path / "w2", "--engine", "spark", "--master", "local[2]")
    assert _metrics(spark) == pytest.approx(_metrics(local), rel=1e-12)


def test_unreachable_master_is_a_clear_error(tmp_path):
    res = subprocess.run(
        [VINTAGE, "train", "--master", "spark://127.0.0.1:9"],
        cwd=_project(tmp_path / "p"),
        capture_output=True,
        text=True,
        timeout=300,
        env=spark_env(tmp_path / "w"),
    )
    assert res.returncode == 1
    assert res.stderr.splitlines()[0] == (
        "error: cannot reach the Spark master at spark://127.0.0.1:9 (ConnectionRefusedError)"
    )
    assert "Traceback" not in res.stderr


def test_grid_through_spark_connect_matches_local(spark_master, tmp_path):
    local = _train(_project(tmp_path / "local"), tmp_path / "w1")
    with connect_server(spark_master) as remote:
        spark = _train(_project(tmp_path / "connect"), tmp_path / "w2", "--master", remote)
    assert _metrics(spark) == pytest.approx(_metrics(local), rel=1e-12)
    assert spark["registered"]["version"] == 1
