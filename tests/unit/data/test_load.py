"""load_dataset / read_table: packaged sets, CSV and Parquet files, digests, file errors."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from vintage.config import WINE_FEATURES, DataSpec, SplitSpec
from vintage.data import Dataset, load_dataset, packaged_path
from vintage.data.load import UCI_URL, read_table
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
    train, test = red.split(0.25, 40, group_duplicates=False)
    train2, test2 = red.split(0.25, 40, group_duplicates=False)
    _, test_other = red.split(0.25, 41, group_duplicates=False)

    assert len(test) == 400
    assert len(train) == 1199
    assert set(train.index).isdisjoint(test.index)
    assert list(test.index) == list(test2.index)
    assert list(train.index) == list(train2.index)
    assert list(test.index) != list(test_other.index)


# --- what the data path is ----------------------------------------------------------------------


def test_directory_of_parquet_parts_loads_skipping_marker_files(tmp_path: Path, sample: pd.DataFrame) -> None:
    parts = tmp_path / "wines"
    parts.mkdir()
    sample.iloc[:10].to_parquet(parts / "part-0.parquet", index=False)
    sample.iloc[10:].to_parquet(parts / "part-1.parquet", index=False)
    (parts / "_SUCCESS").write_text("", encoding="utf-8")  # what Spark leaves next to its parts
    (parts / ".part-0.parquet.crc").write_bytes(b"crc")

    ds = from_path(parts)

    assert ds.n_rows == N_SAMPLE
    assert_frame_equal(ds.frame, sample.astype("float64"))


@pytest.mark.parametrize("content", [None, "a.csv"])
def test_directory_without_parquet_files_is_data_error(
    tmp_path: Path, sample: pd.DataFrame, content: str | None
) -> None:
    folder = tmp_path / "exports"
    folder.mkdir()
    if content:
        sample.to_csv(folder / content, index=False)

    err = data_error(folder)

    assert err.exit_code == 1
    assert f"data path {folder} is a directory" in err.headline
    assert ("a.csv in it is not a Parquet file" if content else "no Parquet files") in err.headline
    assert err.hint and "data.path" in err.hint


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_character_device_is_refused_before_reading() -> None:
    # /dev/zero has no end and no newline: reading it would never finish.
    err = data_error(Path("/dev/zero"))

    assert err.headline == "data path /dev/zero is a character device, not a regular file"
    assert err.hint and "data.path" in err.hint


def test_named_pipe_is_refused_before_opening(tmp_path: Path) -> None:
    # Opening a FIFO nobody writes to blocks for ever.
    os.mkfifo(tmp_path / "wines.csv")

    err = data_error(tmp_path / "wines.csv")

    assert err.headline == f"data path {tmp_path / 'wines.csv'} is a named pipe (FIFO), not a regular file"


def test_socket_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # a relative name: socket paths are limited to ~100 characters
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind("wines.csv")

        err = data_error(Path("wines.csv"))

    assert err.headline == "data path wines.csv is a socket, not a regular file"


def test_named_pipe_inside_a_parquet_directory_is_refused(tmp_path: Path, sample: pd.DataFrame) -> None:
    parts = tmp_path / "wines"
    parts.mkdir()
    sample.to_parquet(parts / "part-0.parquet", index=False)
    os.mkfifo(parts / "part-1.parquet")

    err = data_error(parts)

    assert err.headline == f"data directory {parts} holds part-1.parquet, which is a named pipe (FIFO)"


# --- duplicate column names ---------------------------------------------------------------------


def test_csv_with_a_duplicate_column_is_data_error_naming_it(tmp_path: Path, sample: pd.DataFrame) -> None:
    # pandas would silently read the second 'alcohol' as 'alcohol.1' and train on the first.
    frame = sample.assign(extra=0)
    header = [*COLUMNS, "alcohol"]
    frame.to_csv(tmp_path / "w.csv", index=False, header=header)

    err = data_error(tmp_path / "w.csv")

    assert err.exit_code == 1
    assert (
        err.headline == f"invalid data in w.csv: duplicate column name 'alcohol' (columns 11, {len(header)})"
    )


def test_uci_format_csv_with_duplicate_columns_names_each(tmp_path: Path) -> None:
    text = '"pH";"quality";"pH";"x";"x"\n3.1;5;3.2;1;2\n'
    (tmp_path / "w.csv").write_text(text, encoding="utf-8")

    err = data_error(tmp_path / "w.csv")

    assert "duplicate column names 'pH' (columns 1, 3), 'x' (columns 4, 5)" in err.headline


def test_parquet_with_a_duplicate_column_is_data_error(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    values = [pa.array([float(i) for i in range(8)])] * 3
    pq.write_table(pa.Table.from_arrays(values, names=["pH", "pH", "quality"]), tmp_path / "w.parquet")

    with pytest.raises(DataError) as exc:
        load_dataset(DataSpec(path=tmp_path / "w.parquet", features=("pH",)))

    assert exc.value.headline == "invalid data in w.parquet: duplicate column name 'pH' (columns 1, 2)"


def test_blank_header_cells_are_not_duplicates(tmp_path: Path) -> None:
    (tmp_path / "w.csv").write_text(",a,,y\n" + "0,1,2,3\n" * 8, encoding="utf-8")

    ds = load_dataset(DataSpec(path=tmp_path / "w.csv", features=("a",), target="y"))

    assert ds.n_rows == 8


def test_read_table_refuses_duplicate_columns_too(tmp_path: Path) -> None:
    (tmp_path / "w.csv").write_text("a,a,y\n1,2,3\n", encoding="utf-8")

    with pytest.raises(DataError, match="duplicate column name 'a'"):
        read_table(tmp_path / "w.csv")


# --- too few rows -------------------------------------------------------------------------------


def _rows(path: Path, n: int) -> Path:
    path.write_text("a,y\n" + "".join(f"{i},{2 * i + 1}\n" for i in range(n)), encoding="utf-8")
    return path


@pytest.mark.parametrize("n", [1, 2, 4])
def test_too_few_rows_to_split_is_data_error_naming_count_and_minimum(tmp_path: Path, n: int) -> None:
    with pytest.raises(DataError) as exc:
        load_dataset(DataSpec(path=_rows(tmp_path / "w.csv", n), features=("a",), target="y"))

    err = exc.value
    assert err.exit_code == 1
    assert err.headline.startswith(f"the data set w.csv has {n} row{'s' if n > 1 else ''}, too few")
    assert "at least 5 are needed" in err.headline
    assert err.hint and "data.split.test_size" in err.hint


def test_the_minimum_follows_test_size(tmp_path: Path) -> None:
    path = _rows(tmp_path / "w.csv", 5)

    assert load_dataset(DataSpec(path=path, features=("a",), target="y")).n_rows == 5
    with pytest.raises(DataError, match=r"has 5 rows, too few .* at least 11 are needed"):
        load_dataset(DataSpec(path=path, features=("a",), target="y", split=SplitSpec(test_size=0.1)))


@pytest.mark.parametrize(
    ("test_size", "min_train", "expected"), [(0.25, 2, 5), (0.5, 2, 4), (0.1, 2, 11), (0.25, 10, 14)]
)
def test_min_rows_leaves_two_holdout_rows_and_the_training_rows(
    test_size: float, min_train: int, expected: int
) -> None:
    from sklearn.model_selection import train_test_split

    from vintage.data.load import min_rows

    n = min_rows(test_size, min_train)
    assert n == expected
    train, test = train_test_split(list(range(n)), test_size=test_size, random_state=0)
    assert len(test) >= 2 and len(train) >= min_train
    train, test = train_test_split(list(range(n - 1)), test_size=test_size, random_state=0)
    assert len(test) < 2 or len(train) < min_train
