"""Over Spark Connect the server saves the native Spark model on its own file system: when that is not
the client's, the point still succeeds (the exported model is what is registered) without a
``spark-model`` artifact, and a warning says why. No Spark here: the fit is faked."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

import vintage.training.mllib as mllib
from vintage.config import DataSpec
from vintage.config.models import SparkSpec
from vintage.training.grid import GridPoint


class _Writer:
    def __init__(self, creates: bool) -> None:
        self.creates = creates

    def overwrite(self) -> _Writer:
        return self

    def save(self, path: str) -> None:
        if self.creates:  # same file system as the client (local mode, or a Connect server on this host)
            Path(path).mkdir(parents=True)
            (Path(path) / "metadata").write_text("{}")


class _Model:
    def __init__(self, creates: bool) -> None:
        self.creates = creates

    def write(self) -> _Writer:
        return _Writer(self.creates)

    def extractParamMap(self) -> dict[Any, Any]:  # noqa: N802 - the MLlib name
        return {}


@pytest.mark.parametrize("same_file_system", [True, False])
def test_the_spark_model_artifact_only_when_saved_here(
    same_file_system: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    model = _Model(same_file_system)
    monkeypatch.setattr(mllib, "fit_mllib", lambda *a, **k: (model, {"rmse": 0.7}, 0.1))
    monkeypatch.setattr(mllib, "to_sklearn", lambda m, f: "exported")
    point = GridPoint(
        0, "LinearRegression", "pyspark.ml.regression.LinearRegression", {"regParam": 0.1}, {"regParam": 0.1}
    )
    executor = mllib.MllibExecutor([point], DataSpec(), SparkSpec(master="sc://127.0.0.1:15002"))
    executor._tmp = tmp_path
    with caplog.at_level(logging.WARNING, logger="vintage.training.mllib"):
        result = executor._fit_one(None, None, ["a"], point, 0.25, 40)
    assert result.ok and result.model == "exported"
    if same_file_system:
        assert executor.artifact_dirs == {0: str(tmp_path / "point-0")}
        assert not caplog.records
    else:
        assert executor.artifact_dirs == {}
        assert "saved on the Spark Connect server's file system" in caplog.text
