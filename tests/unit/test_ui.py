"""`vintage ui`'s address: the experiment's runs view of MLflow 3's hash-routed UI."""

from __future__ import annotations

from pathlib import Path

from vintage.cli.ui import experiment_id, runs_view_url
from vintage.config import load_spec
from vintage.tracking import resolve_target


def test_runs_view_url() -> None:
    assert runs_view_url("http://127.0.0.1:5000", "7") == "http://127.0.0.1:5000/#/experiments/7/runs"
    assert runs_view_url("https://mlflow.example/", "12") == "https://mlflow.example/#/experiments/12/runs"
    assert runs_view_url("http://127.0.0.1:5000", None) == "http://127.0.0.1:5000/"


def test_before_any_training_there_is_no_experiment_and_no_store_is_created(project: Path) -> None:
    spec = load_spec(project / "vintage.yaml")
    target = resolve_target(spec)

    assert experiment_id(spec, target, lambda text: text) is None
    assert target.store_path is not None and not target.store_path.exists()
