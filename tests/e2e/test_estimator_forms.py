"""Composite estimators from vintage.yaml (Pipeline, TransformedTargetRegressor, Voting, Stacking):
`vintage train` on the packaged red data trains and registers each, the runs show the structure and the
flat grid parameters, and a registered Pipeline serves through vintage's own scoring server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

SCALER = "sklearn.preprocessing.StandardScaler"
ENET = "sklearn.linear_model.ElasticNet"
RIDGE = "sklearn.linear_model.Ridge"
TREE = "sklearn.tree.DecisionTreeRegressor"

FORMS: dict[str, tuple[dict[str, Any], str, str]] = {
    "pipeline": (
        {
            "name": "scaled-elasticnet",
            "steps": [{"class": SCALER}, {"class": ENET, "params": {"random_state": 42}}],
            "grid": {"elasticnet__alpha": [0.01, 0.1], "elasticnet__l1_ratio": [0.5]},
        },
        "Pipeline(StandardScaler, ElasticNet)",
        "elasticnet__alpha",
    ),
    "transformed-target": (
        {
            "class": "sklearn.compose.TransformedTargetRegressor",
            "regressor": {"steps": [SCALER, RIDGE]},
            "func": "numpy.log1p",
            "inverse_func": "numpy.expm1",
            "grid": {"regressor__ridge__alpha": [0.1, 10.0]},
        },
        "TransformedTargetRegressor(regressor=Pipeline(StandardScaler, Ridge), "
        "func=log1p, inverse_func=expm1)",
        "regressor__ridge__alpha",
    ),
    "voting": (
        {
            "class": "sklearn.ensemble.VotingRegressor",
            "estimators": [RIDGE, {"name": "tree", "class": TREE, "params": {"max_depth": 4}}],
            "grid": {"weights": [[1, 1], [1, 2]]},
        },
        "VotingRegressor(Ridge, tree=DecisionTreeRegressor)",
        "tree__max_depth",
    ),
    "stacking": (
        {
            "class": "sklearn.ensemble.StackingRegressor",
            "estimators": [{"steps": [SCALER, RIDGE]}, {"name": "tree", "class": TREE}],
            "final_estimator": "sklearn.linear_model.RidgeCV",
            "params": {"cv": 3},
            "grid": {"tree__max_depth": [3, 5]},
        },
        "StackingRegressor(Pipeline(StandardScaler, Ridge), tree=DecisionTreeRegressor, "
        "final_estimator=RidgeCV)",
        "pipeline__ridge__alpha",
    ),
}


def _set_estimator(project: Path, estimator: object) -> None:
    path = project / "vintage.yaml"
    data = yaml.safe_load(path.read_text())
    data["estimator"] = estimator
    path.write_text(yaml.safe_dump(data))


def _client(project: Path) -> Any:
    from mlflow import MlflowClient

    uri = f"sqlite:///{project / '.vintage' / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@pytest.mark.parametrize("form", list(FORMS))
def test_each_composite_form_trains_and_registers(project, cli, form):
    entry, text, nested_param = FORMS[form]
    _set_estimator(project, entry)

    result = cli("train", "--json")

    assert result.code == 0, result.err
    out = json.loads(result.out)
    runs = out["training"]["runs"]
    assert len(runs) == 2
    assert all(r["status"] == "FINISHED" for r in runs), [r.get("error") for r in runs]
    assert out["registered"]["version"] == 1
    run = _client(project).get_run(out["selected_run_id"])
    assert run.data.params["estimator"] == text
    assert nested_param in run.data.params  # flattened the scikit-learn way
    grid_key = next(iter(entry["grid"]))
    assert {
        run.data.params[grid_key] for run in map(_client(project).get_run, [r["run_id"] for r in runs])
    } == {str(v) for v in entry["grid"][grid_key]}
    assert "steps" not in run.data.params and "estimators" not in run.data.params
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(f"runs:/{out['selected_run_id']}/model")
    assert np.isfinite(model.predict(model.input_example)).all()
    # The logged model belongs to the run's experiment (not MLflow's default one) and carries its params.
    [output] = run.outputs.model_outputs
    logged = _client(project).get_logged_model(output.model_id)
    assert logged.experiment_id == run.info.experiment_id and logged.source_run_id == run.info.run_id
    assert logged.params["estimator"] == text
    assert {m.key for m in logged.metrics or []} >= {"rmse", "fit_seconds"}


def test_registered_pipeline_serves_through_the_scoring_server_like_scikit_learn(project, cli, tmp_path):
    import mlflow.artifacts
    import mlflow.sklearn

    from support.asgi import call
    from vintage.model.load import load_model_dir
    from vintage.serving.app import ServeConfig
    from vintage.serving.auth import ApiKeys
    from vintage.serving.server import build_app

    _set_estimator(project, FORMS["pipeline"][0])
    assert cli("train").code == 0
    uri = f"sqlite:///{project / '.vintage' / 'mlflow.db'}"
    client = _client(project)
    version = client.get_model_version_by_alias("winequality", "candidate")
    local = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/winequality/{version.version}",
            dst_path=str(tmp_path / "m"),
            tracking_uri=uri,
        )
    )
    sk_model = mlflow.sklearn.load_model(str(local))
    assert type(sk_model).__name__ == "Pipeline"

    loaded = load_model_dir(local)
    columns = list(loaded.info.columns)
    rng = np.random.default_rng(1)
    rows = rng.uniform(0.5, 1.5, size=(25, len(columns))) * np.asarray(sk_model[0].mean_)
    import pandas as pd

    expected = sk_model.predict(pd.DataFrame(rows, columns=columns))
    assert loaded.predictor == "estimator"  # a Pipeline never takes the plain linear fast path
    np.testing.assert_allclose(loaded.predict(rows), expected, rtol=1e-12, atol=1e-12)

    app = build_app(local, ApiKeys(), ServeConfig())
    body = json.dumps({"dataframe_split": {"columns": columns, "data": rows.tolist()}}).encode()
    answer = call(app, "POST", "/invocations", body=body, headers={"content-type": "application/json"})
    assert answer.status == 200, answer.text
    np.testing.assert_allclose(json.loads(answer.text)["predictions"], expected, rtol=1e-12, atol=1e-12)


def test_a_bad_pipeline_step_is_exit_2_naming_the_key(project, cli):
    _set_estimator(
        project,
        [
            {"class": RIDGE},
            {"steps": [{"class": RIDGE}, {"class": ENET}], "grid": {"elasticnet__alpha": [0.1]}},
        ],
    )

    for command in (("config", "validate"), ("train",)):
        result = cli(*command)
        assert result.code == 2, command
        assert "estimator[1].steps[0].class: every step but the last must transform" in result.err, result.err
    assert not (project / ".vintage" / "mlflow.db").exists()  # nothing ran


def test_a_classifier_is_scored_as_one_selected_on_accuracy_and_registered(project, cli):
    from vintage.evaluation.plots import ARTIFACT_DIR, CONFUSION_MATRIX

    _set_estimator(
        project,
        {
            "class": "sklearn.ensemble.ExtraTreesClassifier",
            "params": {"n_estimators": 20},
            "grid": {"max_depth": [4, 8]},
        },
    )
    path = project / "vintage.yaml"
    data = yaml.safe_load(path.read_text())
    data["selection"] = {"metric": "accuracy", "threshold": 0.5}
    path.write_text(yaml.safe_dump(data))

    result = cli("train", "--json")

    assert result.code == 0, result.err
    out = json.loads(result.out)
    runs = out["training"]["runs"]
    assert all(r["status"] == "FINISHED" for r in runs)
    assert all({"accuracy", "balanced_accuracy", "f1_5", "f1_6"} <= set(r["metrics"]) for r in runs)
    assert all("rmse" not in r["metrics"] for r in runs)
    best = max(runs, key=lambda r: r["metrics"]["accuracy"])
    assert out["selected_run_id"] == best["run_id"]
    assert out["registered"]["version"] == 1
    files = {f.path for f in _client(project).list_artifacts(best["run_id"], ARTIFACT_DIR)}
    assert f"{ARTIFACT_DIR}/{CONFUSION_MATRIX}" in files
