"""materialize: a model registered by `vintage train` becomes a local directory the server loads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vintage.data import packaged_path
from vintage.errors import ServingError
from vintage.model.load import VINTAGE_META, load_model_dir
from vintage.model.materialize import materialize


def _uri(project: Path) -> str:
    return f"sqlite:///{project}/.vintage/mlflow.db"


def _rows() -> pd.DataFrame:
    return pd.read_csv(packaged_path("red"), sep=";").drop(columns="quality").head(50)


def _check(path: Path, run_id: str | None = None) -> dict[str, object]:
    """The directory loads, predicts like mlflow.pyfunc, and carries its vintage-model.json."""
    import mlflow.pyfunc

    assert path.is_dir() and (path / "MLmodel").is_file()
    model = load_model_dir(path)
    rows = _rows()
    expected = np.asarray(mlflow.pyfunc.load_model(str(path)).predict(rows), dtype=np.float64)
    np.testing.assert_allclose(model.predict(rows.to_numpy()), expected, rtol=1e-12, atol=0)
    assert model.predictor == "linear"  # the winning ElasticNet is served by NumPy alone
    assert model.info.columns == tuple(rows.columns)
    meta = json.loads((path / VINTAGE_META).read_text())
    assert meta["run_id"] and (run_id is None or meta["run_id"] == run_id)
    assert model.info.run_id == meta["run_id"]
    return dict(meta)


def test_materialize_alias_version_and_run(project, cli, tmp_path):
    assert cli("train").code == 0
    dest, uri = tmp_path / "served", _uri(project)

    by_alias = materialize("models:/winequality@candidate", dest, tracking_uri=uri)
    assert by_alias == dest / "winequality-v1"
    meta = _check(by_alias)
    assert (meta["name"], meta["version"], meta["model_uri"]) == (
        "winequality",
        "1",
        "models:/winequality@candidate",
    )
    assert meta["materialized_at"]
    run_id = str(meta["run_id"])
    info = load_model_dir(by_alias).info
    assert (info.name, info.version, info.model_uri) == ("winequality", "1", "models:/winequality@candidate")

    # idempotent: the same version is reused, not downloaded again
    marker = by_alias / "MLmodel"
    before = marker.stat().st_mtime_ns
    assert materialize("models:/winequality@candidate", dest, tracking_uri=uri) == by_alias
    assert materialize("models:/winequality/1", dest, tracking_uri=uri) == by_alias
    assert marker.stat().st_mtime_ns == before

    by_run = materialize(f"runs:/{run_id}/model", dest, tracking_uri=uri)
    assert by_run != by_alias
    meta = _check(by_run, run_id)
    assert (meta["name"], meta["version"]) == (None, None)

    # a local directory is only validated
    assert materialize(str(by_alias), dest, tracking_uri=uri) == by_alias
    # no half-downloaded leftovers, and MLflow created no store of its own in the working directory
    assert sorted(p.name for p in dest.iterdir()) == sorted([by_alias.name, by_run.name])
    assert not (project / "mlflow.db").exists() and not (project / "mlruns").exists()


def test_an_incomplete_directory_is_downloaded_again(project, cli, tmp_path):
    assert cli("train").code == 0
    dest = tmp_path / "served"
    path = materialize("models:/winequality/1", dest, tracking_uri=_uri(project))
    assert _check(path)["version"] == "1"
    (path / VINTAGE_META).unlink()  # incomplete: downloaded again, not reused
    assert materialize("models:/winequality/1", dest, tracking_uri=_uri(project)) == path
    assert (path / VINTAGE_META).is_file()


def test_unknown_names_fail_with_one_line_naming_them(project, cli, tmp_path):
    assert cli("train").code == 0
    dest, uri = tmp_path / "served", _uri(project)
    cases = {
        "models:/winequality@production": "registered model 'winequality' has no alias 'production'",
        "models:/winequality/7": "registered model 'winequality' has no version 7",
        "models:/nosuchmodel@candidate": "no registered model named 'nosuchmodel'",
        "runs:/0123456789abcdef/model": "no run 0123456789abcdef",
        "models:/winequality/Production": "malformed model URI",
        "s3://bucket/model": "unsupported model URI",
    }
    for model_uri, headline in cases.items():
        with pytest.raises(ServingError) as exc:
            materialize(model_uri, dest, tracking_uri=uri)
        assert headline in exc.value.headline, model_uri
        assert "\n" not in exc.value.headline
        assert exc.value.hint
    assert "vintage models" in str(_hint("models:/winequality@production", dest, uri))
    assert not dest.exists() or not any(dest.iterdir())


def test_missing_store_is_reported_not_created(tmp_path):
    store = tmp_path / "nothing" / "mlflow.db"
    with pytest.raises(ServingError, match="no tracking store"):
        materialize("models:/winequality@candidate", tmp_path / "served", tracking_uri=f"sqlite:///{store}")
    assert not store.exists()


def _hint(model_uri: str, dest: Path, uri: str) -> str | None:
    try:
        materialize(model_uri, dest, tracking_uri=uri)
    except ServingError as exc:
        return exc.hint
    return None
