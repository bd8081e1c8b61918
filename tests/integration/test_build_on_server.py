"""The build stage end to end against a real `mlflow server` on PostgreSQL (proxied artifacts)."""

from __future__ import annotations

import json
import math
import tempfile
import uuid
from pathlib import Path

import pytest
import yaml


@pytest.fixture
def server_project(
    project: Path, mlflow_server_url: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, str]:
    """The default workload pointed at the server, with names unique to this test."""
    suffix = uuid.uuid4().hex[:8]
    spec = yaml.safe_load((project / "vintage.yaml").read_text())
    spec["experiment"] = f"DrinksQuality-{suffix}"
    spec["model_name"] = f"winequality-{suffix}"
    (project / "vintage.yaml").write_text(yaml.safe_dump(spec))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server_url)
    downloads = project / "downloads"
    downloads.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(downloads))  # MLflow's download dirs
    return project, spec["model_name"]


@pytest.mark.integration
@pytest.mark.slow
def test_build_stage_on_postgres_backed_server(server_project, mlflow_server_url, cli):
    project, model_name = server_project
    result = cli("train", "--json")
    assert result.code == 0, result.err
    out = json.loads(result.out)
    assert out["tracking_uri"] == mlflow_server_url
    assert out["registered"]["version"] == 1
    assert not (project / ".vintage" / "mlflow.db").exists()  # nothing went to the embedded store

    # A stock MLflow client reads the run, the version and the alias back from the server.
    import mlflow.pyfunc
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server_url, registry_uri=mlflow_server_url)
    version = client.get_model_version_by_alias(model_name, "candidate")
    assert int(version.version) == 1
    run = client.get_run(version.run_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
    assert run.data.params["estimator"] == "sklearn.linear_model.ElasticNet"
    assert math.isclose(float(version.tags["metric.rmse"]), run.data.metrics["rmse"], rel_tol=1e-5)
    model = mlflow.pyfunc.load_model(f"models:/{model_name}@candidate")
    preds = model.predict(model.input_example)
    assert len(preds) == 5

    # Idempotent on the server too: a second build adds runs, not versions.
    second = cli("train", "--json")
    assert second.code == 0, second.err
    again = json.loads(second.out)
    assert again["registered"]["version"] == 1 and again["registered"]["reused"] is True
    assert len(client.search_model_versions(f"name='{model_name}'")) == 1
    listed = cli("runs", "grid", "--json", "-n", "50")
    assert listed.code == 0, listed.err
    assert len(json.loads(listed.out)) == 6
