"""The ``mlflow_server_url`` fixture serves a real MLflow: tracking, proxied artifacts, registry."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import mlflow
import mlflow.pyfunc
import mlflow.sklearn
import numpy as np
import pytest
from sklearn.linear_model import LinearRegression


@pytest.fixture
def tracking_uri(mlflow_server_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Point MLflow's global state at the server for one test, then put everything back."""
    downloads = tmp_path / "tmp"
    downloads.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(downloads))  # MLflow leaves download dirs behind
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server_url)
    previous = mlflow.tracking._tracking_service.utils._tracking_uri
    mlflow.set_tracking_uri(mlflow_server_url)
    try:
        yield mlflow_server_url
    finally:
        mlflow.set_tracking_uri(previous)  # None unsets MLFLOW_TRACKING_URI; monkeypatch then restores it


@pytest.mark.integration
@pytest.mark.slow
def test_real_server_tracks_stores_artifacts_and_serves_registry(tracking_uri: str) -> None:
    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    suffix = uuid.uuid4().hex[:8]
    experiment_id = client.create_experiment(f"fixture-check-{suffix}")
    run = client.create_run(experiment_id)
    run_id = run.info.run_id
    client.log_metric(run_id, "rmse", 0.5)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/"), run.info.artifact_uri

    x = np.array([[0.0], [1.0], [2.0], [3.0]])
    model = LinearRegression().fit(x, 2.0 * x.ravel() + 1.0)
    with mlflow.start_run(run_id=run_id):
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            pip_requirements=["scikit-learn"],
            serialization_format="cloudpickle",
        )
    client.set_terminated(run_id)

    name = f"fixture-check-model-{suffix}"
    client.create_registered_model(name)
    version = client.create_model_version(name, source=info.model_uri, run_id=run_id, model_id=info.model_id)
    client.set_registered_model_alias(name, "candidate", version.version)

    by_alias = client.get_model_version_by_alias(name, "candidate")
    assert by_alias.version == version.version
    assert by_alias.run_id == run_id
    assert client.get_run(run_id).data.metrics == {"rmse": 0.5}

    loaded = mlflow.pyfunc.load_model(f"models:/{name}@candidate")
    prediction = loaded.predict(np.array([[4.0]]))
    assert prediction == pytest.approx([9.0])
