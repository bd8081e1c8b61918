"""training.refit: the chosen point fitted again on every row is the registered model, logged as such."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from vintage.config import load_spec
from vintage.data import load_dataset


def _spec(project: Path, refit: bool):
    data = yaml.safe_load((project / "vintage.yaml").read_text())
    data["training"] = {**data.get("training", {}), "refit": refit, "n_jobs": 1}
    (project / "vintage.yaml").write_text(yaml.safe_dump(data))
    return load_spec(project / "vintage.yaml")


@pytest.fixture
def built(project: Path):
    from vintage.pipeline.build import run_build

    spec = _spec(project, refit=True)
    return spec, run_build(spec)


def test_refit_run_is_registered_and_tagged_with_no_holdout_metrics(built) -> None:
    from mlflow import MlflowClient

    spec, result = built
    client = MlflowClient()
    assert result.refit is not None
    refit = client.get_run(result.refit.run_id)
    parent = client.get_run(result.report.parent_run_id)

    assert result.version.run_id == refit.info.run_id != result.selected.run_id
    assert refit.data.tags["vintage.role"] == "refit"
    assert refit.data.tags["vintage.refit_of"] == result.selected.run_id
    assert refit.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert parent.data.tags["vintage.refit_run_id"] == refit.info.run_id
    assert "refit on all rows" in refit.data.tags["mlflow.runName"]
    assert set(refit.data.metrics) == {"fit_seconds"}  # no rmse/mae/r2/cv_*: it has seen every row
    version = client.get_model_version(spec.model_name, str(result.version.version))
    assert not any(k.startswith("metric.") for k in version.tags)
    assert version.tags["vintage.training_key"] != result.selected.training_key


def test_refit_model_is_fitted_on_every_row(built) -> None:
    import mlflow.sklearn
    from sklearn.linear_model import ElasticNet

    spec, result = built
    assert result.refit is not None and result.selected.model_uri is not None
    frame = load_dataset(spec.data).frame
    x, y = frame[list(spec.data.features)], frame[spec.data.target]
    refit = mlflow.sklearn.load_model(result.refit.model_uri)
    chosen = mlflow.sklearn.load_model(result.selected.model_uri)
    expected = ElasticNet(**chosen.get_params()).fit(x, y)

    np.testing.assert_allclose(refit.coef_, expected.coef_)
    assert not np.allclose(chosen.coef_, expected.coef_)  # the chosen run saw the training part only


def test_without_refit_the_chosen_run_is_registered(project: Path) -> None:
    from vintage.pipeline.build import run_build

    result = run_build(_spec(project, refit=False))

    assert result.refit is None
    assert result.version.run_id == result.selected.run_id


def test_split_is_logged_on_runs_and_dataset_inputs(built) -> None:
    from mlflow import MlflowClient

    _, result = built
    client = MlflowClient()
    chosen = client.get_run(result.selected.run_id)
    parent = client.get_run(result.report.parent_run_id)
    assert result.refit is not None
    refit = client.get_run(result.refit.run_id)

    for run in (parent, chosen, refit):
        assert run.data.tags["vintage.split"] == "duplicate-groups"
        assert run.data.tags["vintage.split.duplicate_groups"] == "220"
        assert run.data.tags["vintage.split.duplicate_rows"] == "240"
    [chosen_input] = chosen.inputs.dataset_inputs
    chosen_tags = {t.key: t.value for t in chosen_input.tags}
    assert chosen_tags["vintage.split"] == "duplicate-groups" and "vintage.refit_of" not in chosen_tags
    [refit_input] = refit.inputs.dataset_inputs
    assert {t.key: t.value for t in refit_input.tags}["vintage.refit_of"] == chosen.info.run_id


def test_row_split_is_logged_as_such(project: Path) -> None:
    from mlflow import MlflowClient

    from vintage.pipeline.build import run_build

    spec = _spec(project, refit=False)
    data = yaml.safe_load((project / "vintage.yaml").read_text())
    data["data"]["split"]["group_duplicates"] = False
    (project / "vintage.yaml").write_text(yaml.safe_dump(data))
    result = run_build(load_spec(project / "vintage.yaml"))
    chosen = MlflowClient().get_run(result.selected.run_id)

    assert chosen.data.tags["vintage.split"] == "rows"
    [found] = chosen.inputs.dataset_inputs
    assert {t.key: t.value for t in found.tags}["vintage.split"] == "rows"
    assert spec.data.split.group_duplicates  # the project's default


def test_a_remote_stage_reports_the_refit_as_the_registered_run(built, tmp_path: Path) -> None:
    """A stage run on Databricks is read back from the tracking store: the refit is what it registered."""
    from types import SimpleNamespace

    from vintage.pipeline import remote
    from vintage.tracking import open_session

    spec, result = built
    assert result.refit is not None
    session = open_session(spec)
    session.client.set_tag(result.report.parent_run_id, "vintage.pipeline_run", "run-1")
    job = {"databricks_run_id": 7}

    outcome = remote.read_outcome(session, spec, "run-1", job)
    said: list[str] = []
    ctx: Any = SimpleNamespace(say=said.append, state_dir=tmp_path, run_id="run-1")
    trained = remote.train_step(ctx, outcome)
    registered = remote.register_step(ctx, outcome)

    assert outcome.runs == 3  # the grid points; the refit is not one
    assert trained.selected.run_id == result.selected.run_id
    assert trained.refit is not None and trained.refit.run_id == result.refit.run_id
    assert trained.refit.metrics == {}
    assert registered.run_id == result.refit.run_id and registered.reproduced_by_run_id is None
