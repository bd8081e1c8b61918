"""The local batch-scoring engine, in process: formats, chunking, equality with MLflow, every bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vintage.data import packaged_path
from vintage.errors import ConfigError, DataError
from vintage.model.load import load_model_dir
from vintage.plugins import SCORING_ENGINES
from vintage.scoring import ScoreJob, check_paths, get_engine
from vintage.scoring.local import score_file, score_table

UCI = packaged_path("red")


@pytest.fixture(scope="module")
def expected(models: dict[str, Path], red: pd.DataFrame, features: list[str]) -> dict[str, np.ndarray]:
    import mlflow.pyfunc

    return {
        kind: np.asarray(mlflow.pyfunc.load_model(str(path)).predict(red[features]), dtype=np.float64)
        for kind, path in models.items()
    }


class Recorder:
    """A progress sink that remembers what it was told."""

    def __init__(self) -> None:
        self.totals: list[int | None] = []
        self.advances: list[int] = []

    def start(self, total: int | None) -> None:
        self.totals.append(total)

    def advance(self, rows: int) -> None:
        self.advances.append(rows)


def run(model: Path, src: Path, dst: Path, chunk_rows: int = 131_072, progress: Recorder | None = None):
    return score_file(ScoreJob(model, src, dst, chunk_rows), progress)


def read(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path) if path.suffix in (".parquet", ".pq") else pd.read_csv(path)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


# --- round trips -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["elasticnet", "forest"])
@pytest.mark.parametrize("out_name", ["out.csv", "out.parquet", "out.pq"])
def test_uci_semicolon_file_scores_equal_to_mlflow(models, expected, red, tmp_path, kind, out_name):
    out = tmp_path / out_name
    result = run(models[kind], UCI, out)
    got = read(out)
    assert result.rows == len(red) == len(got) and result.output == out
    assert list(got.columns) == [*red.columns, "prediction"]
    assert got["prediction"].dtype == np.float64
    np.testing.assert_allclose(got["prediction"].to_numpy(), expected[kind], rtol=1e-12, atol=0)
    pd.testing.assert_frame_equal(got.drop(columns="prediction"), red, check_dtype=False)
    assert leftovers(tmp_path) == []


def test_parquet_to_parquet_keeps_types_extra_columns_and_order(models, expected, red, features, tmp_path):
    frame = red.assign(id=np.arange(len(red)) * 7, colour="red")[["id", "colour", *reversed(red.columns)]]
    src = tmp_path / "in.parquet"
    frame.to_parquet(src, index=False)
    out = tmp_path / "out.parquet"
    recorder = Recorder()
    result = run(models["elasticnet"], src, out, chunk_rows=100, progress=recorder)
    got = pd.read_parquet(out)
    assert list(got.columns) == [*frame.columns, "prediction"]
    assert got["id"].dtype == np.int64 and got["colour"].tolist() == ["red"] * len(red)
    np.testing.assert_array_equal(got["id"].to_numpy(), frame["id"].to_numpy())
    np.testing.assert_allclose(got["prediction"].to_numpy(), expected["elasticnet"], rtol=1e-12, atol=0)
    assert result.rows == len(red)
    assert recorder.totals == [len(red)]  # Parquet metadata gives the total
    assert len(recorder.advances) == 16 and max(recorder.advances) <= 100 and sum(recorder.advances) == 1599


def test_comma_csv_with_extra_columns_in_another_order_over_many_chunks(models, expected, red, tmp_path):
    frame = red.assign(id=np.arange(len(red)), note="x")[["note", *reversed(red.columns), "id"]]
    src = tmp_path / "in.csv"
    frame.to_csv(src, index=False)
    out = tmp_path / "out.parquet"
    recorder = Recorder()
    run(models["forest"], src, out, chunk_rows=37, progress=recorder)
    got = pd.read_parquet(out)
    assert list(got.columns) == [*frame.columns, "prediction"]
    np.testing.assert_array_equal(got["id"].to_numpy(), np.arange(len(red)))  # order and count kept
    np.testing.assert_allclose(got["prediction"].to_numpy(), expected["forest"], rtol=1e-12, atol=0)
    assert recorder.totals == [None]  # a CSV's row count is unknown up front
    assert len(recorder.advances) >= len(red) // 37 and max(recorder.advances) <= 37


def test_integer_features_and_csv_to_csv(models, red, features, tmp_path):
    frame = red.head(20).copy()
    frame["free sulfur dioxide"] = frame["free sulfur dioxide"].astype(np.int64)
    src = tmp_path / "ints.parquet"
    frame.to_parquet(src, index=False)
    out = tmp_path / "out.csv"
    run(models["elasticnet"], src, out)
    expected = load_model_dir(models["elasticnet"]).predict(frame[features].to_numpy(np.float64))
    np.testing.assert_allclose(pd.read_csv(out)["prediction"].to_numpy(), expected, rtol=1e-12)


def test_extra_column_whose_type_changes_late_is_read_as_text(models, red, tmp_path):
    frame = red.assign(ref=[str(i) for i in range(len(red) - 1)] + ["A-17"])
    src = tmp_path / "in.csv"
    frame.to_csv(src, index=False)
    out = tmp_path / "out.csv"
    result = run(models["elasticnet"], src, out, chunk_rows=50)
    got = pd.read_csv(out, dtype={"ref": str})
    assert result.rows == len(red) and got["ref"].iloc[-1] == "A-17" and got["ref"].iloc[3] == "3"


def test_score_table_is_the_same_code_path(models, red, tmp_path):
    model = load_model_dir(models["elasticnet"])
    table = pa.Table.from_pandas(red, preserve_index=False)
    scored = score_table(model, table, chunk_rows=500)
    out = tmp_path / "out.parquet"
    run(models["elasticnet"], UCI, out)
    assert scored.num_rows == len(red)
    np.testing.assert_array_equal(
        scored.column("prediction").to_numpy(), pq.read_table(out).column("prediction").to_numpy()
    )


def test_empty_csv_gives_an_empty_output(models, red, tmp_path):
    src = tmp_path / "empty.csv"
    red.head(0).to_csv(src, index=False)
    out = tmp_path / "out.parquet"
    assert run(models["elasticnet"], src, out).rows == 0
    assert pq.read_table(out).num_rows == 0 and "prediction" in pq.read_table(out).column_names


# --- bad input -------------------------------------------------------------------------------------


def test_missing_feature_columns_are_named_with_did_you_mean(models, red, tmp_path):
    src = tmp_path / "in.csv"
    red.drop(columns=["alcohol"]).rename(columns={"pH": "ph", "density": "densty"}).to_csv(src, index=False)
    out = tmp_path / "out.csv"
    with pytest.raises(DataError) as exc:
        run(models["elasticnet"], src, out)
    assert exc.value.headline == (
        "in.csv lacks 3 feature columns the model needs: 'density', 'pH', 'alcohol'"
    )
    assert exc.value.details == [
        "required column 'density' is missing (did you mean 'densty'?)",
        "required column 'pH' is missing (did you mean 'ph'?)",
        "required column 'alcohol' is missing",
    ]
    assert not out.exists() and leftovers(tmp_path) == []


def _with_bad_value(red: pd.DataFrame, row: int, column: str, value: str) -> pd.DataFrame:
    frame = red.astype({column: object})
    frame.loc[row - 1, column] = value
    return frame


def test_non_numeric_value_deep_in_a_csv_fails_without_touching_the_output(models, red, tmp_path):
    src = tmp_path / "in.csv"
    _with_bad_value(red, 1500, "density", "heavy").to_csv(src, index=False)
    out = tmp_path / "out.parquet"
    out.write_bytes(b"previous results")
    recorder = Recorder()
    with pytest.raises(DataError) as exc:
        run(models["elasticnet"], src, out, chunk_rows=100, progress=recorder)
    assert exc.value.headline == "column 'density' of in.csv: non-numeric value 'heavy' at row 1500"
    assert sum(recorder.advances) >= 1000  # the failure came after many chunks were written
    assert out.read_bytes() == b"previous results"
    assert leftovers(tmp_path) == []


def test_non_numeric_value_in_the_first_block(models, red, tmp_path):
    src = tmp_path / "in.csv"
    _with_bad_value(red, 2, "pH", "3,1").to_csv(src, index=False)
    with pytest.raises(DataError, match=r"column 'pH' of in.csv: non-numeric value '3,1' at row 2$"):
        run(models["elasticnet"], src, tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()


def test_non_numeric_string_in_a_parquet_feature(models, red, tmp_path):
    src = tmp_path / "in.parquet"
    frame = red.astype({"alcohol": str})
    frame.loc[700, "alcohol"] = "strong"
    frame.to_parquet(src, index=False)
    with pytest.raises(
        DataError, match=r"column 'alcohol' of in.parquet: non-numeric value 'strong' at row 701"
    ):
        run(models["elasticnet"], src, tmp_path / "out.parquet", chunk_rows=256)


@pytest.mark.parametrize(
    ("value", "what"), [("", "missing value"), ("NaN", "missing value"), ("inf", "infinite")]
)
def test_missing_and_infinite_values_name_column_and_row(models, red, tmp_path, value, what):
    src = tmp_path / "in.csv"
    _with_bad_value(red, 1234, "chlorides", value).to_csv(src, index=False)
    with pytest.raises(DataError) as exc:
        run(models["forest"], src, tmp_path / "out.csv", chunk_rows=500)
    assert exc.value.headline.startswith(f"column 'chlorides' of in.csv: {what}")
    assert exc.value.headline.endswith("at row 1234")
    assert leftovers(tmp_path) == []


def test_nan_in_a_parquet_float_column(models, red, tmp_path):
    src = tmp_path / "in.parquet"
    frame = red.copy()
    frame.loc[[10, 11], "sulphates"] = np.nan
    frame.to_parquet(src, index=False)
    with pytest.raises(
        DataError, match=r"'sulphates' of in.parquet: missing value .* at row 11 \(and 1 more"
    ):
        run(models["elasticnet"], src, tmp_path / "out.parquet")


def test_non_numeric_parquet_type_is_refused_up_front(models, red, tmp_path):
    src = tmp_path / "in.parquet"
    red.assign(pH=pd.Timestamp("2024-01-01")).to_parquet(src, index=False)
    with pytest.raises(DataError, match=r"column 'pH' of in.parquet holds timestamp"):
        run(models["elasticnet"], src, tmp_path / "out.parquet")


def test_input_with_a_prediction_column_is_refused(models, red, tmp_path):
    src = tmp_path / "in.csv"
    red.assign(prediction=1.0).to_csv(src, index=False)
    with pytest.raises(DataError, match="already has a column named 'prediction'"):
        run(models["elasticnet"], src, tmp_path / "out.csv")


@pytest.mark.parametrize(
    ("src_name", "dst_name", "error", "needle"),
    [
        ("in.csv", "out.json", ConfigError, "unsupported output file type '.json'"),
        ("in.xlsx", "out.csv", ConfigError, "unsupported input file type '.xlsx'"),
        ("in.csv", "in.csv", ConfigError, "--input and --output are the same file"),
        ("missing.csv", "out.csv", DataError, "input file not found"),
        ("in.csv", "nodir/out.csv", ConfigError, "output directory"),
    ],
)
def test_bad_paths(red, tmp_path, src_name, dst_name, error, needle):
    red.head(3).to_csv(tmp_path / "in.csv", index=False)
    (tmp_path / "in.xlsx").write_bytes(b"")
    with pytest.raises(error, match=needle):
        check_paths(tmp_path / src_name, tmp_path / dst_name)


def test_engines_resolve_lazily():
    assert get_engine("local") is score_file
    assert SCORING_ENGINES.row("local") == "vintage.scoring.local:score_file"
    assert get_engine("spark").__module__ == "vintage.scoring.spark"
    with pytest.raises(ConfigError, match="unknown scoring engine 'gpu'"):
        get_engine("gpu")
