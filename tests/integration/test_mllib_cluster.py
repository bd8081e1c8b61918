"""The Spark MLlib trainer on a real Spark standalone cluster (master + 2 workers, 1 core each, on
127.0.0.1; the session-wide ``spark_master`` of tests/integration/conftest.py) and through a Spark Connect
server on that cluster: ``vintage train`` (under the driver memory guard, ``support.spark.guarded_vintage``)
gives the metrics of the ``local[2]`` run and registers a model that predicts what the ``local[2]`` one
predicts.

The packaged data is one 100 KiB CSV, read as one partition everywhere, so ``randomSplit`` picks the same
rows and the fits see the same data in the same order: metrics and predictions were bit-equal to the local
run's on this machine (both points, both tests); asserted at rel 1e-12.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from support.spark import MEMORY_GUARD, connect_server, guarded_vintage, spark_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
RTOL = 1e-12  # measured: 0.0 (bit-equal); rounding-level slack only
MLLIB = """estimator:
  class: pyspark.ml.regression.LinearRegression
  params: {maxIter: 100}
  grid:
    - {regParam: 0.1, elasticNetParam: 0.5}
    - {regParam: 0.01, elasticNetParam: 0.0}
"""


def _project(path: Path) -> Path:
    path.mkdir(parents=True)
    text = (REPO / "vintage.yaml").read_text()
    start = text.index("estimator:\n")
    text = text[:start] + MLLIB + text[text.index("\n\n", start) :]
    text = "\n".join(
        line.split("threshold:")[0] + "threshold: null" if line.strip().startswith("threshold:") else line
        for line in text.splitlines()
        if not line.strip().startswith("cv:")  # MLlib points are scored on the holdout only
    )
    (path / "vintage.yaml").write_text(text + "\n")
    return path


def _train(project: Path, work: Path, master: str) -> dict:
    res = subprocess.run(
        [*guarded_vintage(work), "train", "--json", "--engine", "spark", "--master", master],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=600,
        env={**spark_env(work), "PYTHONPATH": str(REPO / "tests")},
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert MEMORY_GUARD not in res.stderr
    out = json.loads(res.stdout)
    assert out["registered"]["version"] == 1
    return out


def _metrics(out: dict) -> dict[str, float]:
    return {f"{r['name']} {k}": v for r in out["training"]["runs"] for k, v in r["metrics"].items()}


def _predictions(project: Path, dest: Path):
    """What the registered version 1 predicts (pyfunc, no Spark) on 50 packaged rows."""
    import mlflow
    import pandas as pd

    uri = f"sqlite:///{project / '.vintage' / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri, registry_uri=uri)
    version = client.get_model_version("winequality", "1")
    assert [a.path for a in client.list_artifacts(version.run_id)] == ["spark-model"]
    model_dir = mlflow.artifacts.download_artifacts(
        artifact_uri=client.get_model_version_download_uri("winequality", "1"), dst_path=str(dest)
    )
    wine = pd.read_csv(REPO / "src/vintage/data/wine_quality/winequality-red.csv", sep=";")
    rows = wine.drop(columns=["quality"]).sample(50, random_state=1).reset_index(drop=True)
    return mlflow.pyfunc.load_model(model_dir).predict(rows), client.get_run(version.run_id)


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("mllib-local")
    project = _project(root / "p")
    return _train(project, root / "w", "local[2]"), _predictions(project, root / "m")[0]


def _check_same(out: dict, project: Path, dest: Path, local) -> None:
    import numpy as np

    local_out, local_pred = local
    assert _metrics(out) == pytest.approx(_metrics(local_out), rel=RTOL)
    assert out["training"]["data"] == local_out["training"]["data"]  # source and digest
    pred, run = _predictions(project, dest)
    np.testing.assert_allclose(pred, local_pred, rtol=RTOL)
    assert run.data.params["regParam"] == "0.01"  # the same point wins


def _apps(cluster) -> set[Path]:
    return set((cluster.work / "work").glob("app-*"))


def test_mllib_on_the_standalone_cluster_matches_local(spark_master, local, tmp_path):
    import mlflow

    project = _project(tmp_path / "p")
    before = _apps(spark_master)
    out = _train(project, tmp_path / "w", spark_master.master)
    _check_same(out, project, tmp_path / "m", local)
    client = mlflow.MlflowClient(f"sqlite:///{project / '.vintage' / 'mlflow.db'}")
    parent = client.get_run(out["training"]["parent_run_id"])
    assert parent.data.tags["vintage.engine"] == f"spark {spark_master.master}"
    # The fits ran on the workers: the one application this run started had an executor on each.
    (app,) = _apps(spark_master) - before
    assert sorted(p.name for p in app.iterdir() if (p / "stderr").exists()) == ["0", "1"]


def test_mllib_through_spark_connect_matches_local(spark_master, local, tmp_path):
    project = _project(tmp_path / "p")
    with connect_server(spark_master) as remote:
        out = _train(project, tmp_path / "w", remote)
    _check_same(out, project, tmp_path / "m", local)
