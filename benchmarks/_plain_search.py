"""The plain scikit-learn loop that benchmarks/training_vs_sklearn.py times beside ``vintage train``.

What a scikit-learn user writes without a tracking tool, with the same fits as vintage: every grid point
of a vintage.yaml (classes, fixed params and grids read from it) is fitted on the training part,
scored on the holdout and cross-validated with the same duplicate-grouped folds (``GroupKFold``,
shuffled, the split seed), over ``joblib.Parallel`` with as many workers as vintage uses (joblib
caps each worker's native threads as vintage does). The fitted models come back to the main process;
the best by mean CV RMSE is saved with ``joblib.dump``.

Usage (the benchmark prepares the directory)::

    python benchmarks/_plain_search.py CONFIG SPLIT_DIR N_JOBS

``SPLIT_DIR`` holds ``train.csv``, ``test.csv`` (the rows vintage's split gives) and ``groups.npy`` (the
training rows' duplicate groups). It imports nothing from vintage.
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import yaml
from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error
from sklearn.model_selection import GroupKFold, ParameterGrid, cross_validate

SCORING = {"rmse": "neg_root_mean_squared_error", "mae": "neg_mean_absolute_error", "r2": "r2"}


def points(config: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(class path, params) of every grid point, in the config's order."""
    out = []
    for entry in config["estimator"]:
        grid = entry.get("grid") or [{}]
        combos = grid if isinstance(grid, list) else list(ParameterGrid(grid))
        out.extend((entry["class"], {**entry.get("params", {}), **combo}) for combo in combos)
    return out


def fit_one(
    class_path: str,
    params: dict[str, Any],
    train: pd.DataFrame,
    test: pd.DataFrame,
    groups: np.ndarray,
    features: list[str],
    target: str,
    folds: int,
    seed: int,
) -> tuple[dict[str, Any], dict[str, float], Any]:
    module, _, name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    model = cls(**params).fit(train[features], train[target])
    pred = model.predict(test[features])
    y = test[target]
    metrics = {
        "rmse": root_mean_squared_error(y, pred),
        "mae": mean_absolute_error(y, pred),
        "r2": r2_score(y, pred),
    }
    cv = GroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    res = cross_validate(cls(**params), train[features], train[target], cv=cv, groups=groups, scoring=SCORING)
    for key in SCORING:
        vals = res[f"test_{key}"] * (1 if key == "r2" else -1)
        metrics[f"cv_{key}"] = float(vals.mean())
    return params, metrics, model


def main() -> None:
    config_path, split_dir, n_jobs = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    started = time.perf_counter()
    config = yaml.safe_load(config_path.read_text())
    features, target = config["data"]["features"], config["data"]["target"]
    train = pd.read_csv(split_dir / "train.csv")
    test = pd.read_csv(split_dir / "test.csv")
    groups = np.load(split_dir / "groups.npy")
    folds, seed = config["selection"]["cv"], config["data"]["split"]["seed"]
    results = joblib.Parallel(n_jobs=n_jobs)(
        joblib.delayed(fit_one)(c, p, train, test, groups, features, target, folds, seed)
        for c, p in points(config)
    )
    best = min(results, key=lambda r: r[1]["cv_rmse"])
    joblib.dump(best[2], split_dir / "best.joblib")
    print(f"{len(results)} points, best cv_rmse {best[1]['cv_rmse']:.4f} holdout rmse {best[1]['rmse']:.4f}")
    print(f"{time.perf_counter() - started:.2f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
