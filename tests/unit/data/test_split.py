"""split_rows / duplicate_groups: exact duplicate rows never straddle the holdout split or a CV fold."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from vintage.config import DataSpec
from vintage.data import Dataset, load_dataset
from vintage.data.load import count_duplicates, duplicate_groups, split_rows
from vintage.errors import DataError
from vintage.training.fit import cv_splitter


@pytest.fixture(scope="module", params=["red", "white"])
def wine(request: pytest.FixtureRequest) -> Dataset:
    return load_dataset(DataSpec(dataset=request.param))


def synthetic(distinct: int = 40, seed: int = 0) -> pd.DataFrame:
    """``distinct`` random rows, each repeated 1 to 5 times, shuffled; plus two rows that share their
    features with another but not its target (not duplicates)."""
    rng = np.random.default_rng(seed)
    base = pd.DataFrame(rng.normal(size=(distinct, 3)), columns=["a", "b", "c"])
    base["y"] = rng.integers(3, 9, size=distinct).astype(float)
    repeated = base.loc[base.index.repeat(rng.integers(1, 6, size=distinct))]
    other_target = base.head(2).assign(y=base["y"].head(2) + 1)
    frame = pd.concat([repeated, other_target], ignore_index=True)
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def straddling(frame: pd.DataFrame, left: pd.Index, right: pd.Index) -> set[int]:
    """The duplicate groups with rows on both sides."""
    groups = pd.Series(duplicate_groups(frame), index=frame.index)
    return set(groups[left]) & set(groups[right])


def test_duplicate_groups_need_identical_features_and_target() -> None:
    frame = pd.DataFrame({"a": [1.0, 1.0, 1.0, 2.0], "y": [5.0, 5.0, 6.0, 5.0]})

    groups = duplicate_groups(frame)

    assert groups[0] == groups[1]
    assert len(set(groups)) == 3  # the same features with another target is another group


def test_duplicate_counts_of_the_wine_sets_match_the_published_figures() -> None:
    # issue 16: red 240 duplicate rows (15%), white 937 (19%)
    assert count_duplicates(load_dataset(DataSpec(dataset="red")).frame).rows == 240
    assert count_duplicates(load_dataset(DataSpec(dataset="white")).frame).rows == 937


@pytest.mark.parametrize("seed", [0, 1, 40])
@pytest.mark.parametrize("test_size", [0.1, 0.25, 0.5])
def test_no_group_straddles_the_synthetic_holdout(seed: int, test_size: float) -> None:
    frame = synthetic(seed=seed)

    train, test = split_rows(frame, test_size, seed, group_duplicates=True)

    assert straddling(frame, train.index, test.index) == set()
    assert sorted([*train.index, *test.index]) == list(frame.index)
    assert len(test) == math.ceil(test_size * len(frame))  # single rows are left to fill it exactly


def test_no_group_straddles_the_wine_holdout(wine: Dataset) -> None:
    frame = wine.frame

    train, test = wine.split(0.25, 40, group_duplicates=True)

    assert straddling(frame, train.index, test.index) == set()
    assert len(test) == math.ceil(0.25 * len(frame))
    assert set(train.index).isdisjoint(test.index) and len(train) + len(test) == len(frame)


def test_the_row_split_does_straddle_the_wine_groups(wine: Dataset) -> None:
    """What the grouping prevents happens without it (so the check above can fail)."""
    train, test = wine.split(0.25, 40, group_duplicates=False)

    assert len(straddling(wine.frame, train.index, test.index)) > 50


def test_group_duplicates_false_is_the_tutorial_split_exactly(wine: Dataset) -> None:
    from sklearn.model_selection import train_test_split

    train, test = wine.split(0.25, 40, group_duplicates=False)
    old_train, old_test = train_test_split(wine.frame, test_size=0.25, random_state=40)

    assert_frame_equal(train, old_train)
    assert_frame_equal(test, old_test)


def test_grouped_split_is_deterministic_and_follows_the_seed(wine: Dataset) -> None:
    _, test = wine.split(0.25, 40, group_duplicates=True)
    _, again = wine.split(0.25, 40, group_duplicates=True)
    _, other = wine.split(0.25, 41, group_duplicates=True)

    assert list(test.index) == list(again.index)
    assert set(test.index) != set(other.index)


def test_too_few_distinct_rows_to_group_is_a_data_error() -> None:
    frame = pd.DataFrame({"a": [1.0] * 9 + [2.0], "y": [5.0] * 10})

    with pytest.raises(DataError) as exc:
        split_rows(frame, 0.25, 0, group_duplicates=True)

    assert "2 distinct rows in 10" in exc.value.headline
    assert "group_duplicates: false" in (exc.value.hint or "")
    train, test = split_rows(frame, 0.25, 0, group_duplicates=False)  # the row split still works
    assert len(test) == 3 and len(train) == 7


@pytest.mark.parametrize("seed", [0, 40])
def test_no_group_straddles_a_cv_fold_of_the_wine_training_part(wine: Dataset, seed: int) -> None:
    train, _ = wine.split(0.25, seed, group_duplicates=True)
    x, y = train[list(wine.features)], train[wine.target]
    groups = duplicate_groups(train)

    folds = list(cv_splitter(5, seed, grouped=True).split(x, y, groups))

    assert len(folds) == 5
    for fit_rows, score_rows in folds:
        assert set(groups[fit_rows]).isdisjoint(groups[score_rows])
    scored = np.concatenate([s for _, s in folds])
    assert sorted(scored) == list(range(len(train)))  # every row is scored once


def test_no_group_straddles_a_cv_fold_of_a_synthetic_frame() -> None:
    frame = synthetic(seed=3)
    groups = duplicate_groups(frame)

    folds = list(cv_splitter(4, 3, grouped=True).split(frame[["a", "b", "c"]], frame["y"], groups))

    assert all(set(groups[f]).isdisjoint(groups[s]) for f, s in folds)
    row_folds = cv_splitter(4, 3, grouped=False).split(frame[["a", "b", "c"]], frame["y"])
    assert any(not set(groups[f]).isdisjoint(groups[s]) for f, s in row_folds)  # rows alone would
