"""How good is the model vintage registers? Duplicate-grouped cross-validation beside plain baselines.

Run from the repo::

    .venv/bin/python benchmarks/model_quality.py [--datasets red white] [--folds 5] [--repeats 4] [--json]

For each data set, ``vintage -c CONFIG train`` runs examples/wine-search.yaml (its ``data.dataset`` set to
that data set) cold into a temporary state directory, as a user runs it; the version it registers is loaded
and cloned (same class and parameters, unfitted). That model and plain scikit-learn baselines are then
evaluated under one protocol, on the whole data set (features and target as in the example):

- rows with identical features and target form one group, and a group never straddles a fold: the wine data
  has 15-19% exact duplicate rows, and a model that meets a row's copy in training predicts it with no error;
- ``GroupKFold(folds, shuffle=True, random_state=r)`` for each repeat ``r``: every model sees the same folds;
- per fold: RMSE, MAE and acc_0.5 (the share of rows predicted within 0.5 of the true grade, as the data set's
  paper reports it).

The baselines: the original pipeline's ElasticNet point (alpha 0.1, l1_ratio 0.1), LinearRegression, an RBF
SVR on standardised features, and RandomForest and ExtraTrees with 300 trees and scikit-learn's other
defaults.

The table gives each model's mean over all folds (and the standard deviation across folds) and marks the
lowest RMSE per data set; the goal line says whether vintage's choice is that row on every data set.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "wine-search.yaml"
VINTAGE = str(Path(sys.executable).with_name("vintage"))
TRAIN_TIMEOUT_S = 1800
CHOICE = "vintage's choice"


@dataclass
class Row:
    """One model's fold metrics on one data set."""

    dataset: str
    model: str
    rmse: list[float] = field(default_factory=list)
    mae: list[float] = field(default_factory=list)
    acc_05: list[float] = field(default_factory=list)

    def mean(self, name: str) -> float:
        """The mean of one metric over the folds."""
        return statistics.fmean(getattr(self, name))

    def sd(self, name: str) -> float:
        """The standard deviation of one metric across the folds."""
        values = getattr(self, name)
        return statistics.stdev(values) if len(values) > 1 else 0.0


def baselines() -> dict[str, Any]:
    """The plain scikit-learn models every data set is scored with, by label."""
    from sklearn.ensemble import ExtraTreesRegressor, RandomForestRegressor
    from sklearn.linear_model import ElasticNet, LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVR

    return {
        "ElasticNet(0.1, 0.1) (original)": ElasticNet(alpha=0.1, l1_ratio=0.1, random_state=42),
        "LinearRegression": LinearRegression(),
        "StandardScaler + SVR": make_pipeline(StandardScaler(), SVR()),
        "RandomForest (300)": RandomForestRegressor(n_estimators=300, random_state=0, n_jobs=1),
        "ExtraTrees (300)": ExtraTreesRegressor(n_estimators=300, random_state=0, n_jobs=1),
    }


def train_choice(dataset: str, workdir: Path) -> tuple[Any, str, float]:
    """Run ``vintage train`` on the example with ``dataset``; the registered model (cloned, unfitted), its
    description and the training wall time."""
    import mlflow
    from sklearn.base import clone

    spec = yaml.safe_load(EXAMPLE.read_text())
    spec["data"]["dataset"] = dataset
    config = workdir / f"wine-search-{dataset}.yaml"
    config.write_text(yaml.safe_dump(spec, sort_keys=False))
    state = workdir / f"state-{dataset}"
    # mlflow.set_tracking_uri (below, for the previous data set) exports MLFLOW_TRACKING_URI, which vintage
    # would follow: each run gets its own store
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["VINTAGE_STATE_DIR"] = str(state)
    started = time.monotonic()
    res = subprocess.run(
        [VINTAGE, "-c", str(config), "train", "--json"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=TRAIN_TIMEOUT_S,
    )
    seconds = time.monotonic() - started
    if res.returncode != 0:
        raise SystemExit(f"vintage train on {dataset} failed (exit {res.returncode}):\n{res.stderr[-2000:]}")
    registered = json.loads(res.stdout)["registered"]
    if not registered:
        raise SystemExit(f"vintage train on {dataset} registered nothing:\n{res.stdout[-2000:]}")
    mlflow.set_tracking_uri(f"sqlite:///{state / 'mlflow.db'}")
    model = mlflow.sklearn.load_model(f"models:/{registered['name']}/{registered['version']}")
    return clone(model), _describe(model), seconds


def _describe(model: Any) -> str:
    params = model.get_params(deep=False)
    shown = {
        k: v
        for k, v in params.items()
        if k in ("alpha", "l1_ratio", "max_features", "min_samples_leaf", "learning_rate", "max_leaf_nodes")
        and v is not None
    }
    return f"{type(model).__name__}({', '.join(f'{k}={v}' for k, v in sorted(shown.items()))})"


def load(dataset: str) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Features, target and duplicate groups (identical features and target: one group) of a packaged set."""
    import pandas as pd

    from vintage.config import DataSpec
    from vintage.data.load import load_dataset

    spec = yaml.safe_load(EXAMPLE.read_text())["data"]
    data = load_dataset(DataSpec(dataset=dataset, target=spec["target"], features=tuple(spec["features"])))
    frame = data.frame[[*spec["features"], spec["target"]]]
    groups = frame.groupby(list(frame.columns), sort=False).ngroup().to_numpy()
    x = frame[spec["features"]].to_numpy(np.float64)
    y = pd.to_numeric(frame[spec["target"]]).to_numpy(np.float64)
    return x, y, groups


def folds(y: np.ndarray[Any, Any], groups: np.ndarray[Any, Any], n_folds: int, repeats: int) -> list[Any]:
    """The (train, test) index pairs of every repeat; no duplicate group straddles a pair (checked)."""
    from sklearn.model_selection import GroupKFold

    pairs = []
    for repeat in range(repeats):
        splitter = GroupKFold(n_splits=n_folds, shuffle=True, random_state=repeat)
        for train, test in splitter.split(np.zeros(len(y)), y, groups):
            assert not set(groups[train]) & set(groups[test]), "a duplicate group straddles a fold"
            pairs.append((train, test))
    return pairs


def _fit_score(model: Any, x: Any, y: Any, train: Any, test: Any) -> tuple[float, float, float]:
    from sklearn.base import clone

    fitted = clone(model).fit(x[train], y[train])
    err = y[test] - fitted.predict(x[test])
    return float(np.sqrt(np.mean(err**2))), float(np.mean(np.abs(err))), float(np.mean(np.abs(err) <= 0.5))


def evaluate(dataset: str, models: dict[str, Any], n_folds: int, repeats: int, jobs: int) -> list[Row]:
    """Every model's fold metrics on ``dataset``, all models on the same folds."""
    from joblib import Parallel, delayed

    x, y, groups = load(dataset)
    pairs = folds(y, groups, n_folds, repeats)
    rows = []
    for label, model in models.items():
        scores = Parallel(n_jobs=jobs)(delayed(_fit_score)(model, x, y, tr, te) for tr, te in pairs)
        row = Row(dataset, label)
        for rmse, mae, acc in scores:
            row.rmse.append(rmse)
            row.mae.append(mae)
            row.acc_05.append(acc)
        rows.append(row)
        print(f"  {dataset}: {label}: rmse {row.mean('rmse'):.4f}", file=sys.stderr, flush=True)
    return rows


def table(rows: list[Row], n_folds: int, repeats: int) -> str:
    """The printed table, with the lowest RMSE per data set marked and the goal line."""
    lines = [
        f"duplicate-grouped CV, {n_folds} folds x {repeats} repeats, mean (sd across folds); * = lowest RMSE",
        f"{'data':6} {'model':66} {'rmse':>16} {'mae':>16} {'acc_0.5':>16}",
    ]
    met = True
    for dataset in dict.fromkeys(r.dataset for r in rows):
        mine = [r for r in rows if r.dataset == dataset]
        best = min(mine, key=lambda r: r.mean("rmse"))
        met = met and best.model.startswith(CHOICE)
        for r in mine:
            mark = "*" if r is best else " "
            cells = " ".join(f"{r.mean(m):8.4f} ({r.sd(m):.3f})" for m in ("rmse", "mae", "acc_05"))
            lines.append(f"{dataset:6} {mark}{r.model[:65]:65} {cells}")
    verdict = "met" if met else "missed"
    lines.append(f"goal: vintage's choice has the lowest RMSE on every data set: {verdict}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["red", "white"], choices=["red", "white"])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=2, help="parallel fits (default 2)")
    parser.add_argument("--json", action="store_true", help="print the fold metrics as JSON instead")
    args = parser.parse_args()

    rows: list[Row] = []
    trained: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="vintage-quality-") as tmp:
        for dataset in args.datasets:
            choice, described, seconds = train_choice(dataset, Path(tmp))
            trained[dataset] = seconds
            print(f"{dataset}: vintage train {seconds:.0f} s, registered {described}", file=sys.stderr)
            models = {f"{CHOICE}: {described}": choice, **baselines()}
            rows += evaluate(dataset, models, args.folds, args.repeats, args.jobs)
    if args.json:
        print(json.dumps({"train_seconds": trained, "rows": [asdict(r) for r in rows]}, indent=2))
    else:
        print(table(rows, args.folds, args.repeats))


if __name__ == "__main__":
    main()
