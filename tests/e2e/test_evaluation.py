"""Evaluation files and metrics of a tiny grid trained by `vintage train` into the embedded sqlite store,
read back with a stock MLflow client; `vintage ui`'s address of the experiment's runs view."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from support.scoring import free_port

pytestmark = pytest.mark.slow

VINTAGE = str(Path(sys.executable).with_name("vintage"))
PLOTS = {"predicted_vs_actual.png", "residuals_vs_predicted.png", "residual_histogram.png"}
GRID = [
    {"class": "sklearn.linear_model.ElasticNet", "params": {"random_state": 42}, "grid": [{"alpha": 0.1}]},
    {
        "class": "sklearn.tree.DecisionTreeRegressor",
        "params": {"random_state": 0},
        "grid": [{"max_depth": 3}, {"max_depth": 5}],
    },
    {"class": "sklearn.neighbors.KNeighborsRegressor", "grid": [{"n_neighbors": 15}]},
]


def _client(project: Path) -> Any:
    from mlflow import MlflowClient

    uri = f"sqlite:///{project / '.vintage' / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _files(client: Any, run_id: str, tmp: Path) -> dict[str, bytes]:
    where = Path(client.download_artifacts(run_id, "evaluation", str(tmp / run_id)))
    return {p.name: p.read_bytes() for p in where.iterdir()}


@pytest.fixture
def trained(project: Path, cli: Any) -> dict[str, Any]:
    spec = yaml.safe_load((project / "vintage.yaml").read_text())
    spec["estimator"] = GRID
    spec["training"]["n_jobs"] = 2  # worker processes render the plots
    (project / "vintage.yaml").write_text(yaml.safe_dump(spec))
    result = cli("train", "--json")
    assert result.code == 0, result.err
    out: dict[str, Any] = json.loads(result.out)
    return out


def test_every_point_logs_plots_weights_and_the_papers_accuracies(
    project: Path, trained: dict[str, Any], tmp_path: Path
) -> None:
    import mlflow.sklearn

    from vintage.config import load_spec
    from vintage.data import load_dataset

    client = _client(project)
    spec = load_spec(project / "vintage.yaml")
    ds = load_dataset(spec.data)
    _, test = ds.split(
        spec.data.split.test_size, spec.data.split.seed, group_duplicates=spec.data.split.group_duplicates
    )
    y = test[ds.target].to_numpy(dtype="float64")
    for point in trained["training"]["runs"]:
        run = client.get_run(point["run_id"])
        files = _files(client, point["run_id"], tmp_path)
        model = mlflow.sklearn.load_model(run.data.tags["vintage.model_uri"])
        err = np.abs(y - model.predict(test[list(ds.features)]))
        assert run.data.metrics["acc_0.5"] == pytest.approx(float(np.mean(err <= 0.5)), abs=1e-12)
        assert run.data.metrics["acc_1.0"] == pytest.approx(float(np.mean(err <= 1.0)), abs=1e-12)
        assert all(files[name].startswith(b"\x89PNG") for name in PLOTS)
        estimator = run.data.params["estimator"].rsplit(".", 1)[1]
        if estimator == "ElasticNet":
            assert set(files) == PLOTS | {"coefficients.csv", "coefficients.png"}
            rows = {
                r["feature"]: float(r["coefficient"])
                for r in csv.DictReader(io.StringIO(files["coefficients.csv"].decode()))
            }
            assert rows == dict(zip(ds.features, model.coef_, strict=True))
        elif estimator == "DecisionTreeRegressor":
            assert set(files) == PLOTS | {"feature_importances.csv", "feature_importances.png"}
            rows = {
                r["feature"]: float(r["importance"])
                for r in csv.DictReader(io.StringIO(files["feature_importances.csv"].decode()))
            }
            assert rows == dict(zip(ds.features, model.feature_importances_, strict=True))
        else:  # k-NN has neither
            assert set(files) == PLOTS


def test_the_parent_run_carries_the_grids_best_values_and_the_chosen_plots(
    project: Path, trained: dict[str, Any], tmp_path: Path
) -> None:
    client = _client(project)
    runs = [client.get_run(p["run_id"]) for p in trained["training"]["runs"]]
    parent = client.get_run(runs[0].data.tags["mlflow.parentRunId"])
    children = [r.data.metrics for r in runs]

    assert parent.data.metrics["rmse"] == min(m["rmse"] for m in children)
    assert parent.data.metrics["mae"] == min(m["mae"] for m in children)
    assert parent.data.metrics["r2"] == max(m["r2"] for m in children)
    assert parent.data.metrics["acc_0.5"] == max(m["acc_0.5"] for m in children)
    assert parent.data.metrics["acc_1.0"] == max(m["acc_1.0"] for m in children)
    assert "fit_seconds" not in parent.data.metrics  # no "best" fit time
    chosen = trained["selected_run_id"]
    assert parent.data.tags["vintage.selected_run_id"] == chosen
    assert _files(client, parent.info.run_id, tmp_path / "parent") == _files(client, chosen, tmp_path)


def test_ui_prints_and_serves_the_experiments_runs_view(project: Path, trained: dict[str, Any]) -> None:
    experiment = _client(project).get_experiment_by_name("DrinksQuality").experiment_id
    port = free_port()
    proc = subprocess.Popen(
        [VINTAGE, "ui", "--port", str(port)],
        cwd=project,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert line.startswith("MLflow UI: "), line
        url = line.split()[2]
        assert url == f"http://127.0.0.1:{port}/#/experiments/{experiment}/runs"
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "the UI never answered"
                time.sleep(0.5)
        # The route is the served UI's own: its bundle (linked from the page the hash route runs in)
        # defines /experiments/:experimentId/runs.
        base = url.split("#")[0]
        with urllib.request.urlopen(base, timeout=10) as resp:
            page = resp.read().decode()
        bundle = re.search(r'src="/?(static-files/static/js/main\.[0-9a-f]+\.js)"', page)
        assert bundle, page[:500]
        with urllib.request.urlopen(base + bundle.group(1), timeout=30) as resp:
            assert b'"/experiments/:experimentId/runs"' in resp.read()
        api = f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/experiments/get?experiment_id={experiment}"
        with urllib.request.urlopen(api, timeout=10) as resp:
            assert json.load(resp)["experiment"]["name"] == "DrinksQuality"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def _write(project: Path, grid: list[dict[str, Any]]) -> None:
    spec = yaml.safe_load((project / "vintage.yaml").read_text())
    spec["estimator"] = {
        "class": "sklearn.linear_model.ElasticNet",
        "params": {"random_state": 42},
        "grid": grid,
    }
    spec["pipeline"] = {"stages": [{"name": "build", "steps": ["validate", "train", "register", "release"]}]}
    (project / "vintage.yaml").write_text(yaml.safe_dump(spec))


def test_a_release_report_compares_the_candidate_with_the_production_model(
    project: Path, cli: Any, tmp_path: Path
) -> None:
    import mlflow.pyfunc

    from vintage.config import load_spec
    from vintage.data import load_dataset

    _write(project, [{"alpha": 0.5, "l1_ratio": 0.5}])
    assert cli("run").code == 0
    client = _client(project)
    client.set_registered_model_alias("winequality", "production", "1")  # v1 serves production
    _write(project, [{"alpha": 0.05, "l1_ratio": 0.1}])
    run = cli("run", "--json")
    assert run.code == 0, run.err
    run_id = json.loads(run.out)["id"]

    record = json.loads(cli("release", "show", run_id, "--json").out)
    evaluation = record["evaluation"]
    assert record["version"] == 2 and evaluation["champion_version"] == 1
    spec = load_spec(project / "vintage.yaml")
    ds = load_dataset(spec.data)
    _, test = ds.split(
        spec.data.split.test_size, spec.data.split.seed, group_duplicates=spec.data.split.group_duplicates
    )
    y = test[ds.target].to_numpy(dtype="float64")
    for side, version in (("candidate", 2), ("champion", 1)):
        model = mlflow.pyfunc.load_model(f"models:/winequality/{version}")
        err = np.abs(y - np.asarray(model.predict(test[list(ds.features)]), dtype="float64"))
        assert evaluation[side]["rmse"] == pytest.approx(float(np.sqrt(np.mean(err**2))), rel=1e-9)
        assert evaluation[side]["acc_1.0"] == pytest.approx(float(np.mean(err <= 1.0)), abs=1e-12)

    report = project / ".vintage" / evaluation["report"]
    page = report.read_text()
    assert (
        f"{evaluation['candidate']['rmse']:.4f}" in page and f"{evaluation['champion']['rmse']:.4f}" in page
    )
    assert "http://" not in page and "https://" not in page
    version = client.get_model_version("winequality", "2")
    assert version.tags["vintage.evaluation_report"] == evaluation["artifact_uri"]
    logged = Path(
        client.download_artifacts(record["mlflow_run_id"], f"evaluation/{report.name}", str(tmp_path))
    )
    assert logged.read_text() == page
    shown = cli("release", "show", run_id)
    assert f"evaluation report: {report.resolve()}" in shown.out
