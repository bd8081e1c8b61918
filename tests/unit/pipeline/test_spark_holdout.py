"""The champion gate's Spark holdout score (an MLlib run): every selection metric equals the pandas
formula on the same holdout rows (the MLlib trainer's ``holdout_frame``), and a model predicting
infinity refuses the gate instead of passing it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from vintage.config import load_spec

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]
RED = REPO / "src/vintage/data/wine_quality/winequality-red.csv"


def _save(model: Any, x: pd.DataFrame, where: Path) -> Path:
    import mlflow.sklearn
    from mlflow.models import infer_signature

    mlflow.sklearn.save_model(model, str(where), signature=infer_signature(x, np.zeros(len(x))))
    return where


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    from vintage.compute.spark import session
    from vintage.config.models import SparkSpec

    spark = session(SparkSpec(master="local[1]"), app_name="vintage-test-gate")
    yield spark
    spark.stop()


@pytest.fixture
def spec(tmp_path: Path) -> Any:
    text = (REPO / "vintage.yaml").read_text() + "compute:\n  spark: {master: 'local[1]'}\n"
    (tmp_path / "vintage.yaml").write_text(text)
    return load_spec(tmp_path / "vintage.yaml")


def _pandas_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    ss_res = float(np.sum((y - pred) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return {
        "rmse": float(np.sqrt(np.mean((y - pred) ** 2))),
        "mae": float(np.mean(np.abs(y - pred))),
        "r2": 1.0 - ss_res / ss_tot,
    }


def test_every_metric_equals_the_pandas_formula_on_the_trainers_holdout(spark, spec, tmp_path, monkeypatch):
    from sklearn.linear_model import LinearRegression

    from vintage.pipeline import gates
    from vintage.training.mllib import holdout_frame, read_frame

    wine = pd.read_csv(RED, sep=";")
    features = list(spec.data.features)
    model = LinearRegression().fit(wine[features].to_numpy(), wine["quality"])
    model_dir = _save(model, wine[features], tmp_path / "m")
    monkeypatch.setattr(gates, "materialize_version", lambda ctx, n, v: model_dir)

    split = spec.data.split
    holdout = holdout_frame(read_frame(spark, spec.data), features, "quality", split.test_size, split.seed)
    rows = holdout.toPandas()
    assert 350 < len(rows) < 450  # a quarter of 1599
    expected = _pandas_metrics(rows["quality"].to_numpy(), model.predict(rows[features].to_numpy()))
    for metric in ("rmse", "mae", "r2"):
        selection = spec.selection.model_copy(update={"metric": metric})
        ctx = SimpleNamespace(spec=spec.model_copy(update={"selection": selection}))
        got = gates._SparkHoldout(ctx).score("winequality", 1)  # type: ignore[arg-type]
        assert got == pytest.approx(expected[metric], rel=1e-12, abs=0), metric


def test_a_non_finite_holdout_metric_refuses_the_gate(spark, spec, tmp_path, monkeypatch):
    from sklearn.linear_model import LinearRegression

    from vintage.pipeline import gates

    wine = pd.read_csv(RED, sep=";")
    features = list(spec.data.features)
    model = LinearRegression().fit(wine[features].to_numpy(), wine["quality"])
    model.coef_ = np.full(len(features), 1e308)  # every prediction overflows to infinity
    model_dir = _save(model, wine[features], tmp_path / "m")
    monkeypatch.setattr(gates, "materialize_version", lambda ctx, n, v: model_dir)
    with pytest.raises(gates.GateRefused, match="holdout rmse is not finite"):
        gates._SparkHoldout(SimpleNamespace(spec=spec)).score("winequality", 1)  # type: ignore[arg-type]
