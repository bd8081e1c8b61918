"""selection.cv with data.split.group_duplicates: the flag reaches the worker and keeps copies out of the
fold that scores them."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from vintage.data.load import split_rows
from vintage.training.fit import fit_point, init_worker
from vintage.training.grid import GridPoint

FEATURES = ["a", "b"]
# A 1-nearest-neighbour model memorises rows: it scores a row with a copy in its training folds exactly.
NN1 = GridPoint(0, "KNN", "sklearn.neighbors.KNeighborsRegressor", {"n_neighbors": 1}, {})


@pytest.fixture(scope="module")
def copies() -> pd.DataFrame:
    """60 random rows with a random target, each present 4 times."""
    rng = np.random.default_rng(7)
    base = pd.DataFrame(rng.normal(size=(60, 2)), columns=FEATURES)
    base["y"] = rng.normal(size=60)
    return base.loc[base.index.repeat(4)].sample(frac=1.0, random_state=7).reset_index(drop=True)


def _cv_rmse(frame: pd.DataFrame, group_duplicates: bool) -> dict[str, float]:
    train, test = split_rows(frame, 0.25, 40, group_duplicates=group_duplicates)
    init_worker(train, test, FEATURES, "y", 5, 40, group_duplicates)
    result = fit_point(NN1)
    assert result.ok, result.error
    return result.metrics


def test_grouped_cv_and_holdout_do_not_score_a_memorised_copy(copies: pd.DataFrame) -> None:
    spread = float(copies["y"].std())

    rows = _cv_rmse(copies, group_duplicates=False)
    grouped = _cv_rmse(copies, group_duplicates=True)

    # Split by rows, nearly every scored row has a copy on the fitting side: almost no error.
    assert rows["cv_rmse"] < 0.2 * spread and rows["rmse"] < 0.2 * spread
    # Grouped, no scored row has one: the error of predicting an unrelated row's target.
    assert grouped["cv_rmse"] > 0.8 * spread and grouped["rmse"] > 0.8 * spread


def test_training_keys_tell_the_splits_apart() -> None:
    from vintage.training.grid import training_key

    def key(mode: str) -> str:
        return training_key(NN1, "d1g3st", 0.25, 40, "1.9.1", split_mode=mode)

    keys = {mode: key(mode) for mode in ("", "grouped", "refit")}

    assert len(set(keys.values())) == 3  # a grouped or refit model never reuses a row-split version
    # The row split keeps the keys versions registered before the switch carry (same blob as then).
    before = {
        "class": NN1.class_path,
        "params": NN1.params,
        "data": "d1g3st",
        "split": [0.25, 40],
        "lib": "1.9.1",
    }
    old = hashlib.sha256(json.dumps(before, sort_keys=True, default=str).encode()).hexdigest()[:24]
    assert keys[""] == training_key(NN1, "d1g3st", 0.25, 40, "1.9.1") == old
