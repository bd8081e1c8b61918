"""`vintage train` end to end on the embedded store, read back with a stock MLflow client."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

TUTORIAL_RMSE = 0.7932  # classic MLflow wine tutorial, alpha=0.5 l1_ratio=0.5, np.random.seed(40) split
# The project's vintage.yaml keeps exact duplicate rows on one side of the split (docs/data.md): the same
# point's holdout rmse there, and the chosen point's (alpha=0.1 l1_ratio=0.1) 5-fold CV and holdout rmse.
GROUPED_RMSE = 0.7176
CHOSEN_CV_RMSE, CHOSEN_HOLDOUT_RMSE = 0.6985, 0.6305


def _client(project: Path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{project / '.vintage' / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _edit(project: Path, **changes: object) -> None:
    path = project / "vintage.yaml"
    data = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        node = data
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    path.write_text(yaml.safe_dump(data))


def test_train_logs_three_runs_and_registers_candidate(project, cli):
    result = cli("train", "--json")
    assert result.code == 0, result.err
    out = json.loads(result.out)
    runs = out["training"]["runs"]
    assert [(r["params"]["alpha"], r["params"]["l1_ratio"]) for r in runs] == [
        (0.5, 0.5),
        (0.3, 0.3),
        (0.1, 0.1),
    ]
    assert all(r["status"] == "FINISHED" for r in runs)
    assert math.isclose(runs[0]["metrics"]["rmse"], GROUPED_RMSE, abs_tol=1e-3)
    assert out["selection_metric"] == "cv_rmse"  # chosen by CV within the training part
    best = min(runs, key=lambda r: r["metrics"]["cv_rmse"])
    assert out["selected_run_id"] == best["run_id"]
    assert out["registered"]["version"] == 1
    assert out["registered"]["aliases"] == ["candidate"]
    assert out["registered"]["reused"] is False


def test_row_split_reproduces_the_tutorial(project, cli):
    _edit(project, data__split__group_duplicates=False)
    out = json.loads(cli("train", "--json").out)
    runs = out["training"]["runs"]
    assert math.isclose(runs[0]["metrics"]["rmse"], TUTORIAL_RMSE, abs_tol=5e-4)
    tags = _client(project).get_run(out["selected_run_id"]).data.tags
    assert tags["vintage.split"] == "rows"


def test_stock_mlflow_client_reads_everything_written(project, cli):
    assert cli("train").code == 0
    import mlflow.pyfunc

    client = _client(project)
    exp = client.get_experiment_by_name("DrinksQuality")
    assert exp is not None
    found = client.search_runs([exp.experiment_id], filter_string="tags.`vintage.role` = 'grid-point'")
    assert len(found) == 3
    run = next(r for r in found if r.data.params["alpha"] == "0.5")
    assert run.info.status == "FINISHED"
    assert run.data.params["l1_ratio"] == "0.5"
    assert run.data.params["estimator"] == "sklearn.linear_model.ElasticNet"
    assert set(run.data.metrics) >= {"rmse", "mae", "r2"}
    assert run.data.tags["vintage.version"]
    parent_id = run.data.tags["mlflow.parentRunId"]
    assert client.get_run(parent_id).data.tags["vintage.role"] == "grid"
    ds = run.inputs.dataset_inputs[0].dataset
    assert ds.digest and ds.source
    assert ds.name == "wine-quality-red"
    version = client.get_model_version_by_alias("winequality", "candidate")
    assert int(version.version) == 1
    assert version.tags["vintage.data_digest"] == ds.digest
    assert float(version.tags["metric.rmse"]) == pytest.approx(
        min(r.data.metrics["rmse"] for r in found), rel=1e-5
    )
    model = mlflow.pyfunc.load_model("models:/winequality@candidate")
    assert model.metadata.signature is not None
    example = model.input_example
    assert example is not None and len(example) == 5
    preds = model.predict(example)
    assert len(preds) == 5 and all(math.isfinite(p) for p in preds)


def test_train_twice_adds_runs_but_not_a_version(project, cli):
    first = json.loads(cli("train", "--json").out)
    second = cli("train", "--json")
    assert second.code == 0
    second_out = json.loads(second.out)
    assert {r["run_id"] for r in first["training"]["runs"]}.isdisjoint(
        r["run_id"] for r in second_out["training"]["runs"]
    )
    assert [r["metrics"] for r in first["training"]["runs"]] == [
        r["metrics"] for r in second_out["training"]["runs"]
    ]
    assert second_out["registered"]["version"] == 1
    assert second_out["registered"]["reused"] is True
    client = _client(project)
    assert len(client.search_model_versions("name='winequality'")) == 1
    exp = client.get_experiment_by_name("DrinksQuality")
    assert (
        len(client.search_runs([exp.experiment_id], filter_string="tags.`vintage.role` = 'grid-point'")) == 6
    )


def test_new_best_run_gets_new_version_and_moves_alias(project, cli):
    assert cli("train").code == 0
    _edit(project, estimator__grid=[{"alpha": 0.01, "l1_ratio": 0.01}])
    result = cli("train", "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["registered"]["version"] == 2
    client = _client(project)
    assert int(client.get_model_version_by_alias("winequality", "candidate").version) == 2
    models = json.loads(cli("models", "--json").out)
    assert [(m["version"], m["aliases"]) for m in models] == [(2, ["candidate"]), (1, [])]


def test_human_output_shows_runs_choice_and_version(project, cli):
    result = cli("train")
    assert result.code == 0
    assert "alpha=0.5 l1_ratio=0.5" in result.out and f"{GROUPED_RMSE:.4f}" in result.out
    assert "chosen: ElasticNet alpha=0.1 l1_ratio=0.1" in result.out
    assert f"cv_rmse = {CHOSEN_CV_RMSE:.4f}, holdout rmse = {CHOSEN_HOLDOUT_RMSE:.4f}" in result.out
    assert "registered: winequality version 1, alias: candidate" in result.out


def test_runs_and_models_list_what_was_trained(project, cli):
    trained = json.loads(cli("train", "--json").out)
    runs = json.loads(cli("runs", "grid", "--json").out)
    assert {r["run_id"] for r in runs} == {r["run_id"] for r in trained["training"]["runs"]}
    assert all(r["metrics"]["rmse"] > 0 for r in runs)
    table = cli("runs", "grid")
    assert table.code == 0 and "alpha=0.3 l1_ratio=0.3" in table.out
    models = cli("models")
    assert models.code == 0 and "candidate" in models.out


def test_same_seed_same_metrics_different_seed_different_split(project, cli):
    a = json.loads(cli("train", "--json").out)["training"]["runs"]
    _edit(project, data__split__seed=7)
    b = json.loads(cli("train", "--json").out)["training"]["runs"]
    assert [r["metrics"]["rmse"] for r in a] != [r["metrics"]["rmse"] for r in b]
    _edit(project, data__split__seed=40)
    c = json.loads(cli("train", "--json").out)["training"]["runs"]
    assert [r["metrics"] for r in a] == [r["metrics"] for r in c]


def test_git_commit_is_recorded_when_project_is_a_repo(project, cli):
    import subprocess

    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], cwd=project, check=True)
    subprocess.run([*git, "add", "vintage.yaml"], cwd=project, check=True)
    subprocess.run([*git, "commit", "-qm", "x"], cwd=project, check=True)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True
    ).stdout.strip()
    out = json.loads(cli("train", "--json").out)
    run = _client(project).get_run(out["selected_run_id"])
    assert run.data.tags["mlflow.source.git.commit"] == head


def test_cv_selects_on_cross_validated_metric(project, cli):
    _edit(project, selection__cv=3)
    out = json.loads(cli("train", "--json").out)
    assert out["selection_metric"] == "cv_rmse"
    runs = out["training"]["runs"]
    assert all({"rmse", "cv_rmse", "cv_rmse_std"} <= set(r["metrics"]) for r in runs)
    best = min(runs, key=lambda r: r["metrics"]["cv_rmse"])
    assert out["selected_run_id"] == best["run_id"]


def test_several_estimators_compete(project, cli):
    _edit(
        project,
        estimator=[
            {"class": "sklearn.linear_model.ElasticNet", "grid": [{"alpha": 0.5, "l1_ratio": 0.5}]},
            {"class": "sklearn.tree.DecisionTreeRegressor", "grid": {"max_depth": [2, 4]}},
        ],
    )
    out = json.loads(cli("train", "--json").out)
    estimators = [r["estimator"] for r in out["training"]["runs"]]
    assert estimators == ["sklearn.linear_model.ElasticNet"] + ["sklearn.tree.DecisionTreeRegressor"] * 2
    assert out["registered"]["version"] == 1


@pytest.mark.parametrize("model_format", ["skops", "pickle"])
def test_every_model_format_registers_a_loadable_model(project, cli, model_format):
    _edit(
        project,
        training__model_format=model_format,
        estimator={
            "class": "sklearn.ensemble.RandomForestRegressor",
            "params": {"n_estimators": 5},
            "grid": [{}],
        },
    )
    result = cli("train")
    assert result.code == 0, result.err
    import mlflow.pyfunc

    mlflow.set_tracking_uri(f"sqlite:///{project / '.vintage' / 'mlflow.db'}")
    try:
        model = mlflow.pyfunc.load_model("models:/winequality@candidate")
        assert model.metadata.flavors["sklearn"]["serialization_format"] == model_format
        assert len(model.predict(model.input_example)) == 5
    finally:
        mlflow.set_tracking_uri(None)


def _tiny(project: Path, n: int) -> None:
    lines = "".join(f"{i},{2 * i + 1}\n" for i in range(n))
    (project / "tiny.csv").write_text("a,y\n" + lines, encoding="utf-8")
    _edit(project, data={"path": "tiny.csv", "features": ["a"], "target": "y"})


def test_data_too_small_to_split_is_a_data_error_and_trains_nothing(project, cli):
    # 3 rows used to train on 2 and score one holdout row (r2 = nan); 1 row crashed inside sklearn.
    _tiny(project, 3)
    result = cli("train")
    assert result.code == 1, result.err
    assert "the data set tiny.csv has 3 rows, too few to split and train: at least 5 are needed" in result.err
    assert "data.split.test_size" in result.err
    assert not (project / ".vintage").exists()  # nothing reached training or the store


def test_cv_needs_two_rows_per_fold_of_the_training_part(project, cli):
    _tiny(project, 13)  # 9 training rows: fewer than 2 per fold for 5 folds
    _edit(project, selection__cv=5, selection__threshold=None)
    result = cli("train")
    assert result.code == 1, result.err
    assert "has 13 rows, too few to split and train: at least 14 are needed" in result.err
    assert "selection.cv = 5 folds of 2 rows" in result.err
    _tiny(project, 14)
    assert cli("train").code == 0


def test_a_fifo_as_data_path_is_a_data_error_not_a_hang(project, cli):
    import os

    os.mkfifo(project / "wines.csv")
    _edit(project, data={"path": "wines.csv"})
    result = cli("train")
    assert result.code == 1
    assert "wines.csv is a named pipe (FIFO), not a regular file" in result.err


def test_duplicate_column_in_the_training_csv_is_a_data_error(project, cli):
    (project / "w.csv").write_text("a,a,y\n" + "1,2,3\n" * 20, encoding="utf-8")
    _edit(project, data={"path": "w.csv", "features": ["a"], "target": "y"})
    result = cli("train")
    assert result.code == 1
    assert "invalid data in w.csv: duplicate column name 'a' (columns 1, 2)" in result.err


def test_a_grid_over_the_cap_is_a_config_error_before_anything_runs(project, cli):
    _edit(project, estimator__grid={"alpha": list(range(200)), "l1_ratio": list(range(60))})
    result = cli("train")
    assert result.code == 2
    assert "the grid has 12,000 points" in result.err and "training.max_grid_points = 10,000" in result.err
    assert not (project / ".vintage").exists()
