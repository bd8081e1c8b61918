"""`vintage monitor ENV`: exit 0 on the training distribution, 4 naming the feature on a shifted one, 1 with
no log, 2 on a bad --since; against the repo's data and a real model directory (no server: the log files
are written by the server's own writer class)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vintage.config import load_spec
from vintage.data.load import load_dataset
from vintage.model.load import load_model_dir
from vintage.serving.inference_log import InferenceLog, InferenceLogSettings, log_dir


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ElasticNet trained on the training split of the repo's data, saved as an MLflow model."""
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.linear_model import ElasticNet

    spec = load_spec(Path(__file__).resolve().parents[3] / "vintage.yaml")
    train, _ = load_dataset(spec.data).split(
        spec.data.split.test_size, spec.data.split.seed, group_duplicates=spec.data.split.group_duplicates
    )
    x = train[list(spec.data.features)]
    model = ElasticNet(alpha=0.1, l1_ratio=0.1).fit(x, train[spec.data.target])
    path = tmp_path_factory.mktemp("model") / "m"
    mlflow.sklearn.save_model(model, path, signature=infer_signature(x, model.predict(x)))
    return path


def _log_holdout(project: Path, model_dir: Path, shift: dict[str, float]) -> int:
    spec = load_spec(project / "vintage.yaml")
    _, holdout = load_dataset(spec.data).split(
        spec.data.split.test_size, spec.data.split.seed, group_duplicates=spec.data.split.group_duplicates
    )
    model = load_model_dir(model_dir)
    columns = model.info.columns
    rows = holdout[list(columns)].copy()
    for name, delta in shift.items():
        rows[name] += delta
    log = InferenceLog(
        InferenceLogSettings(str(log_dir(project / ".vintage", "staging")), sample=1.0), columns
    )
    log.start()
    log.note_model(model.info.version, model_dir, None)
    for row in rows.to_numpy(np.float64):
        x = row.reshape(1, -1)
        log.offer(model, x, model.predict(x), time.perf_counter())
    log.close()
    return len(rows)


def test_the_unshifted_holdout_is_not_drift(project: Path, model_dir: Path, cli: Any) -> None:
    logged = _log_holdout(project, model_dir, {})
    result = cli("monitor", "staging", "--json", "--html", "report.html")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert doc["flagged"] is False and doc["sampled_rows"] == logged
    assert (project / "report.html").stat().st_mode & 0o777 == 0o600


def test_alcohol_plus_three_is_drift_naming_alcohol(project: Path, model_dir: Path, cli: Any) -> None:
    _log_holdout(project, model_dir, {"alcohol": 3.0})
    result = cli("monitor", "staging", "--since", "1h")
    assert result.code == 4
    headline = result.err.strip().splitlines()[0]
    assert headline.startswith("drift: staging: alcohol drifted (PSI ")
    assert "alcohol" in result.out and "prediction" in result.out


def test_no_log_yet_is_exit_1_and_a_bad_duration_exit_2(project: Path, cli: Any) -> None:
    result = cli("monitor", "staging")
    assert result.code == 1
    assert "no inference log" in result.err and "hint:" in result.err
    assert cli("monitor", "staging", "--since", "soon").code == 2
    assert cli("monitor", "nowhere").code == 2
