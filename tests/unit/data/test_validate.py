"""validate_frame and the validation errors load_dataset reports for a data file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vintage.config import WINE_FEATURES, DataSpec
from vintage.data import load_dataset, packaged_path, validate_frame
from vintage.errors import DataError

FEATURES = ("a", "b", "c")
TARGET = "y"


def frame(n: int = 10) -> pd.DataFrame:
    """A small valid frame: columns a, b, c, y with distinct float values."""
    rng = np.arange(n, dtype="float64")
    return pd.DataFrame({"a": rng, "b": rng * 2, "c": rng + 0.5, "y": rng % 3})


def invalid(df: pd.DataFrame, *, features: tuple[str, ...] = FEATURES, target: str = TARGET) -> DataError:
    with pytest.raises(DataError) as exc:
        validate_frame(df, features=features, target=target, source="wines.csv")
    return exc.value


def test_valid_frame_returns_features_and_target_as_float64() -> None:
    df = frame().astype({"a": "int64"}).assign(extra="x")[["y", "c", "extra", "b", "a"]]

    out = validate_frame(df, features=FEATURES, target=TARGET, source="wines.csv")

    assert list(out.columns) == ["a", "b", "c", "y"]
    assert (out.dtypes == "float64").all()
    assert out["b"].tolist() == frame()["b"].tolist()


def test_numeric_strings_are_accepted() -> None:
    df = frame(3).astype(str)

    out = validate_frame(df, features=FEATURES, target=TARGET, source="wines.csv")

    assert out["c"].tolist() == [0.5, 1.5, 2.5]


def test_result_has_fresh_index() -> None:
    df = frame(4)
    df.index = [10, 20, 30, 40]

    out = validate_frame(df, features=FEATURES, target=TARGET, source="wines.csv")

    assert list(out.index) == [0, 1, 2, 3]


# --- missing columns ----------------------------------------------------------------------------


def test_missing_column_is_data_error_with_suggestion() -> None:
    df = frame().rename(columns={"b": "bb"})

    err = invalid(df)

    assert err.exit_code == 1
    assert err.headline == "invalid data in wines.csv: required column 'b' is missing (did you mean 'bb'?)"


def test_missing_column_without_near_name_has_no_suggestion() -> None:
    df = frame().drop(columns=["c"]).assign(zzzzzz=1.0)

    err = invalid(df)

    assert "required column 'c' is missing" in err.headline
    assert "did you mean" not in err.headline


def test_every_missing_column_is_listed() -> None:
    df = frame().drop(columns=["a", "c", "y"])

    err = invalid(df)

    assert "(and 2 more problems)" in err.headline
    assert len(err.details) == 3
    joined = "\n".join(err.details)
    for col in ("'a'", "'c'", "'y'"):
        assert f"required column {col} is missing" in joined


def test_missing_wine_column_suggests_the_near_name(tmp_path: Path) -> None:
    df = pd.read_csv(packaged_path("red"), sep=";", nrows=5).rename(columns={"sulphates": "sulphate"})
    df.to_csv(tmp_path / "w.csv", index=False)

    with pytest.raises(DataError) as exc:
        load_dataset(DataSpec(path=tmp_path / "w.csv"))

    assert exc.value.headline.startswith("invalid data in w.csv: required column 'sulphates' is missing")
    assert "did you mean 'sulphate'?" in exc.value.headline


# --- bad values ---------------------------------------------------------------------------------


def test_non_numeric_value_names_column_and_row() -> None:
    df = frame().astype({"b": object})
    df.loc[3, "b"] = "abc"

    err = invalid(df)

    assert err.headline == "invalid data in wines.csv: column 'b': non-numeric values at row 4 (e.g. 'abc')"
    assert err.details == [err.headline.removeprefix("invalid data in wines.csv: ")]


def test_non_numeric_row_numbers_count_data_rows_from_one_in_a_csv(tmp_path: Path) -> None:
    lines = [",".join(["a", "b", "c", "y"]), "1,2,3,4", "1,2,3,4", "1,two,3,4", "1,2,3,4"]
    (tmp_path / "w.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")

    with pytest.raises(DataError) as exc:
        load_dataset(DataSpec(path=tmp_path / "w.csv", features=FEATURES, target=TARGET))

    assert "column 'b': non-numeric values at row 3 (e.g. 'two')" in exc.value.headline


def test_missing_target_names_rows() -> None:
    df = frame()
    df.loc[[0, 6], "y"] = np.nan

    err = invalid(df)

    assert err.headline == "invalid data in wines.csv: column 'y': missing target values at rows 1, 7"


def test_nan_feature_names_column_and_row() -> None:
    df = frame()
    df.loc[9, "c"] = np.nan

    err = invalid(df)

    assert err.headline == "invalid data in wines.csv: column 'c': missing values (NaN) at row 10"


@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_inf_feature_names_column_and_row(value: float) -> None:
    df = frame()
    df.loc[2, "a"] = value

    err = invalid(df)

    assert err.headline == "invalid data in wines.csv: column 'a': infinite values at row 3"


def test_many_bad_rows_show_first_five_and_count_the_rest() -> None:
    df = frame(20)
    bad_rows = [1, 3, 4, 8, 11, 12, 15, 19]  # 0-based -> rows 2, 4, 5, 9, 12, (13, 16, 20)
    df.loc[bad_rows, "b"] = np.inf

    err = invalid(df)

    assert err.headline.endswith("column 'b': infinite values at rows 2, 4, 5, 9, 12 and 3 more")


def test_exactly_five_bad_rows_have_no_more_suffix() -> None:
    df = frame(20)
    df.loc[[0, 1, 2, 3, 4], "b"] = np.nan

    err = invalid(df)

    assert err.headline.endswith("at rows 1, 2, 3, 4, 5")


def test_every_problem_is_listed_in_details() -> None:
    df = frame(12).astype({"a": object})
    df.loc[2, "a"] = "n/a?"
    df.loc[5, "b"] = np.nan
    df.loc[[1, 8], "c"] = np.inf
    df.loc[11, "y"] = np.nan

    err = invalid(df)

    assert err.headline.endswith("(and 3 more problems)")
    assert "column 'a': non-numeric values at row 3" in err.headline
    assert len(err.details) == 4
    assert err.details[1:] == [
        "column 'b': missing values (NaN) at row 6",
        "column 'c': infinite values at rows 2, 9",
        "column 'y': missing target values at row 12",
    ]
    assert err.hint


def test_two_problems_say_one_more_problem() -> None:
    df = frame()
    df.loc[0, "a"] = np.nan
    df.loc[0, "y"] = np.nan

    err = invalid(df)

    assert err.headline.endswith("(and 1 more problem)")


def test_zero_rows_is_data_error() -> None:
    err = invalid(frame().iloc[:0])

    assert err.exit_code == 1
    assert err.headline == "invalid data in wines.csv: the data set has no rows"


def test_missing_columns_reported_before_zero_rows() -> None:
    err = invalid(frame().iloc[:0].drop(columns=["a"]))

    assert "required column 'a' is missing" in err.headline


def test_packaged_red_passes_validation_unchanged() -> None:
    raw = pd.read_csv(packaged_path("red"), sep=";")

    out = validate_frame(raw, features=WINE_FEATURES, target="quality", source="red")

    assert len(out) == len(raw) == 1599
    assert np.array_equal(out.to_numpy(), raw[[*WINE_FEATURES, "quality"]].to_numpy(dtype="float64"))
