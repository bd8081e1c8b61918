"""load_dataset / read_table: packaged sets, CSV and Parquet files, digests, file errors."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from vintage.config import WINE_FEATURES, DataSpec
from vintage.data import Dataset, load_dataset, packaged_path
from vintage.data.load import UCI_URL
from vintage.errors import DataError

COLUMNS = [*WINE_FEATURES, "quality"]
N_SAMPLE = 20


@pytest.fixture(scope="module")
def red() -> Dataset:
    return load_dataset(DataSpec(dataset="red"))


@pytest.fixture
def sample() -> pd.DataFrame:
    """The first rows of the packaged red set, as the UCI file has them."""
    return pd.read_csv(packaged_path("red"), sep=";", nrows=N_SAMPLE)


def from_path(path: Path) -> Dataset:
    return load_dataset(DataSpec(path=path))


def data_error(path: Path) -> DataError:
    with pytest.raises(DataError) as exc:
        from_path(path)
    return exc.value


# --- packaged sets ------------------------------------------------------------------------------


def test_packaged_red_has_1599_rows_and_spec_columns(red: Dataset) -> None:
    assert red.n_rows == 1599
    assert list(red.frame.columns) == COLUMNS
    assert red.features == WINE_FEATURES
    assert red.target == "quality"
    assert (red.frame.dtypes == "float64").all()


def test_packaged_red_mean_quality_matches_uci(red: Dataset) -> None:
    assert red.frame["quality"].mean() == pytest.approx(5.636, abs=5e-4)


def test_packaged_white_has_4898_rows() -> None:
    white = load_dataset(DataSpec(dataset="white"))

    assert white.n_rows == 4898
    assert white.source == "wine-quality-white"


def test_packaged_source_is_label_and_uri_is_uci_page(red: Dataset) -> None:
    assert red.source == "wine-quality-red"
    assert red.source_uri == UCI_URL
    assert "/" not in red.source  # never a machine path


def test_packaged_path_points_at_existing_files() -> None:
    assert packaged_path("red").is_file()
    assert packaged_path("white").is_file()


# --- digest -------------------------------------------------------------------------------------


def test_digest_is_stable_across_loads(red: Dataset) -> None:
    again = load_dataset(DataSpec(dataset="red"))

    assert again.digest == red.digest
    assert len(red.digest) == 16
    int(red.digest, 16)  # hex


def test_digest_differs_between_red_and_white(red: Dataset) -> None:
    assert load_dataset(DataSpec(dataset="white")).digest != red.digest


def test_digest_changes_when_one_value_changes(tmp_path: Path, sample: pd.DataFrame) -> None:
    sample.to_csv(tmp_path / "a.csv", index=False)
    changed = sample.copy()
    changed.loc[7, "pH"] += 0.01
    changed.to_csv(tmp_path / "b.csv", index=False)

    a, b = from_path(tmp_path / "a.csv"), from_path(tmp_path / "b.csv")

    assert a.digest != b.digest
    assert a.digest == from_path(tmp_path / "a.csv").digest


def test_digest_changes_when_rows_are_reordered(tmp_path: Path, sample: pd.DataFrame) -> None:
    sample.to_csv(tmp_path / "a.csv", index=False)
    sample.iloc[::-1].to_csv(tmp_path / "b.csv", index=False)

    assert from_path(tmp_path / "a.csv").digest != from_path(tmp_path / "b.csv").digest


# --- file formats -------------------------------------------------------------------------------


def test_uci_comma_csv_and_parquet_load_to_the_same_frame(tmp_path: Path, sample: pd.DataFrame) -> None:
    uci_lines = packaged_path("red").read_text(encoding="utf-8").splitlines()[: N_SAMPLE + 1]
    assert uci_lines[0].startswith('"fixed acidity";')  # really the semicolon + quoted header format
    (tmp_path / "uci.csv").write_text("\n".join(uci_lines) + "\n", encoding="utf-8")
    sample.to_csv(tmp_path / "plain.csv", index=False)
    sample.to_parquet(tmp_path / "wines.parquet", index=False)

    uci = from_path(tmp_path / "uci.csv")
    plain = from_path(tmp_path / "plain.csv")
    parquet = from_path(tmp_path / "wines.parquet")

    assert uci.n_rows == N_SAMPLE
    assert list(uci.frame.columns) == COLUMNS
    assert_frame_equal(plain.frame, uci.frame)
    assert_frame_equal(parquet.frame, uci.frame)
    assert uci.digest == plain.digest == parquet.digest
    assert_frame_equal(uci.frame, sample.astype("float64"))


def test_csv_without_extension_and_pq_extension_load(tmp_path: Path, sample: pd.DataFrame) -> None:
    sample.to_csv(tmp_path / "wines", index=False)
    sample.to_parquet(tmp_path / "wines.pq", index=False)

    assert from_path(tmp_path / "wines").n_rows == N_SAMPLE
    assert from_path(tmp_path / "wines.pq").n_rows == N_SAMPLE


def test_column_order_in_file_does_not_matter(tmp_path: Path, sample: pd.DataFrame) -> None:
    sample.to_csv(tmp_path / "ordered.csv", index=False)
    shuffled = sample[list(reversed(sample.columns))]
    shuffled.to_csv(tmp_path / "reversed.csv", index=False)

    a, b = from_path(tmp_path / "ordered.csv"), from_path(tmp_path / "reversed.csv")

    assert list(b.frame.columns) == COLUMNS
    assert_frame_equal(a.frame, b.frame)
    assert a.digest == b.digest


def test_extra_columns_are_dropped(tmp_path: Path, sample: pd.DataFrame) -> None:
    sample.assign(color="red", id=range(N_SAMPLE)).to_csv(tmp_path / "w.csv", index=False)

    ds = from_path(tmp_path / "w.csv")

    assert list(ds.frame.columns) == COLUMNS


def test_path_source_is_file_name(tmp_path: Path, sample: pd.DataFrame) -> None:
    sample.to_csv(tmp_path / "mine.csv", index=False)

    ds = from_path(tmp_path / "mine.csv")

    assert ds.source == "mine.csv"
    assert ds.source_uri == str(tmp_path / "mine.csv")


def test_subset_of_features_keeps_spec_order(tmp_path: Path, sample: pd.DataFrame) -> None:
    sample.to_csv(tmp_path / "w.csv", index=False)

    ds = load_dataset(DataSpec(path=tmp_path / "w.csv", features=("pH", "alcohol"), target="quality"))

    assert list(ds.frame.columns) == ["pH", "alcohol", "quality"]
    assert ds.features == ("pH", "alcohol")


# --- file errors --------------------------------------------------------------------------------


def test_missing_file_is_data_error(tmp_path: Path) -> None:
    err = data_error(tmp_path / "nope.csv")

    assert err.exit_code == 1
    assert "not found" in err.headline
    assert "nope.csv" in err.headline


@pytest.mark.parametrize("name", ["wines.xlsx", "wines.json"])
def test_unsupported_extension_is_data_error(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_text("{}", encoding="utf-8")

    err = data_error(tmp_path / name)

    assert err.exit_code == 1
    assert "unsupported" in err.headline
    assert repr(Path(name).suffix) in err.headline


def test_corrupt_parquet_is_data_error(tmp_path: Path) -> None:
    (tmp_path / "bad.parquet").write_bytes(b"this is not parquet")

    err = data_error(tmp_path / "bad.parquet")

    assert err.exit_code == 1
    assert "cannot read data file bad.parquet" in err.headline


def test_empty_csv_file_is_data_error(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("", encoding="utf-8")

    err = data_error(tmp_path / "empty.csv")

    assert "empty.csv" in err.headline


def test_header_only_csv_is_zero_rows_data_error(tmp_path: Path) -> None:
    (tmp_path / "w.csv").write_text(",".join(COLUMNS) + "\n", encoding="utf-8")

    err = data_error(tmp_path / "w.csv")

    assert err.headline == "invalid data in w.csv: the data set has no rows"


def test_split_is_deterministic_and_partitions_rows(red: Dataset) -> None:
    train, test = red.split(0.25, 40)
    train2, test2 = red.split(0.25, 40)
    _, test_other = red.split(0.25, 41)

    assert len(test) == 400
    assert len(train) == 1199
    assert set(train.index).isdisjoint(test.index)
    assert list(test.index) == list(test2.index)
    assert list(train.index) == list(train2.index)
    assert list(test.index) != list(test_other.index)
