"""The Spark MLlib path never holds the whole data set in driver memory: ``load_dataset`` validates,
digests and counts it chunk by chunk (same digest as the whole-frame one), and ``train_grid`` for an MLlib
grid logs the dataset input, the input example and the signature without touching ``Dataset.frame``.

No Spark here: the MLlib executor is replaced by a fake that yields fitted linear models.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import vintage.data.load as load
import vintage.training.mllib as mllib
from vintage.config import DataSpec, Spec
from vintage.data import load_dataset, packaged_path
from vintage.errors import DataError
from vintage.training.fit import FitResult

RED = pd.read_csv(packaged_path("red"), sep=";")
GUARD = "the whole data set was loaded into pandas"


def _refuse(*_args: Any, **_kwargs: Any) -> Any:
    raise AssertionError(GUARD)


@pytest.fixture
def guarded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 200 rows; reading the whole file or asking for the whole frame fails the test."""
    monkeypatch.setattr(load, "SCAN_ROWS", 200)
    monkeypatch.setattr(load, "read_table", _refuse)
    monkeypatch.setattr(load.Dataset, "frame", property(_refuse))
    monkeypatch.setattr(load.Dataset, "split", _refuse)


def _parts(directory: Path, frame: pd.DataFrame, rows: int) -> Path:
    directory.mkdir()
    for i, start in enumerate(range(0, len(frame), rows)):
        frame.iloc[start : start + rows].to_parquet(directory / f"part-{i:05d}.parquet", index=False)
    return directory


def test_the_guard_catches_a_whole_frame_load(guarded: None) -> None:
    ds = load_dataset(DataSpec(dataset="red"))
    with pytest.raises(AssertionError, match=GUARD):
        _ = ds.frame


@pytest.mark.parametrize("kind", ["packaged", "csv", "parquet-dir"])
def test_chunked_digest_and_count_equal_the_whole_frame_ones(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if kind == "packaged":
        spec = DataSpec(dataset="red")
    elif kind == "csv":
        RED.to_csv(tmp_path / "red.csv", index=False)
        spec = DataSpec(path=tmp_path / "red.csv")
    else:
        spec = DataSpec(path=_parts(tmp_path / "red.parquet", RED, 500))
    whole = load_dataset(spec)  # one chunk: the frame is kept from the scan
    assert whole._frame, "a file that fits one chunk is read once"
    monkeypatch.setattr(load, "SCAN_ROWS", 170)
    chunked = load_dataset(spec)
    assert not chunked._frame  # more than one chunk: nothing but the first rows kept
    assert whole.digest == "89cb82b56745eaa1"  # the packaged red set's digest, unchanged
    assert chunked.digest == whole.digest == load.frame_digest(chunked.frame)
    assert chunked.n_rows == whole.n_rows == 1599
    pd.testing.assert_frame_equal(chunked.head(7), chunked.frame.head(7))
    pd.testing.assert_frame_equal(chunked.frame, whole.frame)


def test_a_bad_value_in_a_later_chunk_is_reported_at_its_file_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = RED.copy()
    bad["pH"] = bad["pH"].astype(object)
    bad.loc[1234, "pH"] = "n/a?"
    bad.to_csv(tmp_path / "bad.csv", index=False)
    monkeypatch.setattr(load, "SCAN_ROWS", 200)
    with pytest.raises(DataError) as exc:
        load_dataset(DataSpec(path=tmp_path / "bad.csv"))
    assert (
        exc.value.headline
        == "invalid data in bad.csv: column 'pH': non-numeric values at row 1235 (e.g. 'n/a?')"
    )


def test_an_empty_parquet_directory_part_and_header_only_data(tmp_path: Path) -> None:
    empty = _parts(tmp_path / "empty.parquet", RED.iloc[:0], 1)  # no part at all
    with pytest.raises(DataError):
        load_dataset(DataSpec(path=empty))
    RED.iloc[:0].to_parquet(tmp_path / "none.parquet", index=False)
    with pytest.raises(DataError, match="the data set has no rows"):
        load_dataset(DataSpec(path=tmp_path / "none.parquet"))


class _FakeMllib:
    """Stands in for MllibExecutor: one fitted linear model per point, no Spark."""

    def __init__(self, points: list[Any], data: DataSpec, spark: Any) -> None:
        del data, spark
        self.points = points
        self.artifact_dirs: dict[int, str] = {}

    @property
    def n_jobs(self) -> int:
        return 1

    def start(self) -> None:
        pass

    def results(self, stop: Any = None) -> Iterator[FitResult]:
        from sklearn.linear_model import LinearRegression

        features = list(RED.columns[:-1])
        for point in self.points:
            model = LinearRegression().fit(RED[features].head(100), RED["quality"].head(100))
            yield FitResult(point.index, {"rmse": 0.7, "mae": 0.5, "r2": 0.3}, model, {"regParam": 0.1})

    def close(self, kill: bool = False) -> None:
        pass


def test_mllib_grid_logs_data_input_example_and_signature_without_the_frame(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, guarded: None
) -> None:
    import mlflow

    from vintage.tracking import open_session
    from vintage.training.runner import train_grid

    monkeypatch.setattr(mllib, "MllibExecutor", _FakeMllib)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    spec = Spec.model_validate(
        {
            "state_dir": str(tmp_path / "state"),
            "estimator": {
                "class": "pyspark.ml.regression.LinearRegression",
                "grid": [{"regParam": 0.1}, {"regParam": 0.01}],
            },
            "selection": {"threshold": None},
            "compute": {"engine": "spark", "spark": {"master": "local[1]"}},
        }
    )
    dataset = load_dataset(spec.data)
    session, report = train_grid(spec, dataset, lambda: open_session(spec))

    assert report.data_digest == "89cb82b56745eaa1"
    assert [r.status for r in report.runs] == ["FINISHED", "FINISHED"]
    run = session.client.get_run(report.runs[0].run_id)
    (data_input,) = run.inputs.dataset_inputs
    assert data_input.dataset.digest == "89cb82b56745eaa1"
    assert data_input.dataset.name == "wine-quality-red"
    assert '"num_rows": 1599' in data_input.dataset.profile
    assert "fixed acidity" in data_input.dataset.schema
    mlflow.set_tracking_uri(session.client.tracking_uri)
    info = mlflow.models.get_model_info(report.runs[0].model_uri)
    assert info.signature.inputs.input_names() == list(RED.columns[:-1])
    example = mlflow.pyfunc.load_model(report.runs[0].model_uri).input_example
    np.testing.assert_array_equal(example.to_numpy(), RED[RED.columns[:-1]].head(5).to_numpy())
