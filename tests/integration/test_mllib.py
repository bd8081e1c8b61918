"""The Spark MLlib trainer (``pyspark.ml.regression.LinearRegression``) end to end on ``local[2]``:
``vintage train`` as a subprocess, the registered model loaded without Spark (pyfunc, the scoring server's
loader) predicting exactly what the native Spark model predicts.

The MLlib run is guarded (``support.spark.guarded_vintage``): data validated and digested in 200-row
chunks, and any load of the whole data set into the driver (pandas read of the file, ``Dataset.frame``,
a large ``toPandas``) fails it; the same guard fails the scikit-learn grid, which needs the whole frame."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from support.spark import MEMORY_GUARD, guarded_vintage, spark_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

VINTAGE = str(Path(sys.executable).with_name("vintage"))
REPO = Path(__file__).resolve().parents[2]

RED_DIGEST = "89cb82b56745eaa1"  # load_dataset's digest of the packaged red set (local engine)

MLLIB = """estimator:
  class: pyspark.ml.regression.LinearRegression
  params: {PARAMS}
  grid:
    - {regParam: 0.1, elasticNetParam: 0.5}
    - {regParam: 0.01, elasticNetParam: 0.0}
"""


def _project(path: Path, params: str = "{maxIter: 100}", engine: str | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    text = (REPO / "vintage.yaml").read_text()
    start = text.index("estimator:\n")
    end = text.index("\n\n", start)
    text = text[:start] + MLLIB.replace("{PARAMS}", params) + text[end:]
    lines = [
        line.split("threshold:")[0] + "threshold: null" if line.strip().startswith("threshold:") else line
        for line in text.splitlines()
        if not line.strip().startswith("cv:")  # MLlib points are scored on the holdout only
    ]
    text = "\n".join(lines) + "\n"
    if engine:
        text += f"compute:\n  engine: {engine}\n"
    (path / "vintage.yaml").write_text(text)
    return path


def _run(project: Path, work: Path, *args: str, guarded: bool = False) -> subprocess.CompletedProcess[str]:
    command = guarded_vintage(work) if guarded else [VINTAGE]
    return subprocess.run(
        [*command, "train", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=600,
        env={**spark_env(work), "PYTHONPATH": str(REPO / "tests")},
    )


def test_mllib_grid_trains_registers_and_serves_without_spark(tmp_path, monkeypatch):
    import mlflow
    import numpy as np
    import pandas as pd

    project = _project(tmp_path / "p")
    res = _run(project, tmp_path / "w", "--engine", "spark", "--master", "local[2]", "--json", guarded=True)
    assert res.returncode == 0, res.stderr[-3000:]
    assert MEMORY_GUARD not in res.stderr
    out = json.loads(res.stdout)
    assert out["training"]["data"]["digest"] == RED_DIGEST  # the local engine's digest of the same data
    runs = out["training"]["runs"]
    assert len(runs) == 2 and all(r["status"] == "FINISHED" for r in runs)
    assert all(0.3 < r["metrics"]["rmse"] < 0.8 for r in runs), runs
    assert out["registered"]["version"] == 1

    client = mlflow.MlflowClient(f"sqlite:///{project / '.vintage' / 'mlflow.db'}")
    mlflow.set_tracking_uri(client.tracking_uri)
    mlflow.set_registry_uri(client.tracking_uri)  # models:/ resolves through the registry URI
    run_id = out["registered"]["run_id"]
    run = client.get_run(run_id)
    (data_input,) = run.inputs.dataset_inputs
    assert data_input.dataset.digest == RED_DIGEST and '"num_rows": 1599' in data_input.dataset.profile
    assert run.data.params["regParam"] == "0.01" and run.data.params["standardization"] == "True"
    assert [a.path for a in client.list_artifacts(run_id)] == ["spark-model"]
    spark_dir = Path(client.download_artifacts(run_id, "spark-model", str(tmp_path / "dl")))

    model_dir = Path(
        mlflow.artifacts.download_artifacts("models:/winequality/1", dst_path=str(tmp_path / "m"))
    )
    requirements = (model_dir / "requirements.txt").read_text()
    assert "pyspark" not in requirements  # the export needs no Spark to serve
    pyfunc = mlflow.pyfunc.load_model(str(model_dir))

    wine = pd.read_csv(REPO / "src/vintage/data/wine_quality/winequality-red.csv", sep=";")
    rows = wine.drop(columns=["quality"]).sample(50, random_state=1).reset_index(drop=True)
    ours = np.asarray(pyfunc.predict(rows), dtype="float64")

    from vintage.model.load import load_model_dir

    loaded = load_model_dir(model_dir)
    assert loaded.predictor == "linear"

    # The native Spark model (from the run's artifact) on the same rows.
    for key, value in spark_env(tmp_path / "w2").items():
        monkeypatch.setenv(key, value)
    from pyspark.ml.feature import VectorAssembler
    from pyspark.ml.regression import LinearRegressionModel

    from vintage.compute.spark import session
    from vintage.config.models import SparkSpec

    spark = session(SparkSpec(master="local[1]"), app_name="vintage-test-mllib")
    try:
        native = LinearRegressionModel.load(str(spark_dir))
        frame = VectorAssembler(inputCols=list(rows.columns), outputCol="features").transform(
            spark.createDataFrame(rows)
        )
        theirs = np.asarray(native.transform(frame).select("prediction").toPandas()["prediction"])
    finally:
        spark.stop()
    np.testing.assert_allclose(ours, theirs, rtol=1e-9)


def test_unknown_mllib_param_is_a_usage_error(tmp_path):
    project = _project(tmp_path / "p", params="{maxIter: 100, alpha: 0.5}")
    res = _run(project, tmp_path / "w", "--engine", "spark", "--master", "local[2]")
    assert res.returncode == 2, res.stderr[-2000:]
    assert "alpha" in res.stderr and "elasticNetParam" in res.stderr


def test_mllib_on_the_local_engine_is_a_clear_error(tmp_path):
    project = _project(tmp_path / "p", engine="local")
    res = _run(project, tmp_path / "w")
    assert res.returncode == 2, res.stderr[-2000:]
    assert "compute.engine spark" in res.stderr, res.stderr[-2000:]


def test_the_memory_guard_fails_a_whole_frame_load(tmp_path):
    """The scikit-learn grid needs the whole frame in memory: the guard must stop it."""
    project = tmp_path / "p"
    project.mkdir()
    (project / "vintage.yaml").write_text((REPO / "vintage.yaml").read_text())
    res = _run(project, tmp_path / "w", guarded=True)
    assert res.returncode != 0
    assert MEMORY_GUARD in res.stderr, res.stderr[-2000:]
