"""Wall-clock cost of vintage's build stage, each figure from a cold process.

Run from the repo (any working directory works)::

    .venv/bin/python benchmarks/build_stage.py [--repeat 5] [--warmup 1] [--json]

What it measures (each sample is one new process started with ``subprocess``, timed by the wall clock
from start to exit, so Python start-up and every import are included):

* ``vintage --help``: CLI start-up alone.
* ``vintage train (fresh store)``: the default workload (the repo's vintage.yaml, 3-point ElasticNet
  grid) into a state directory that does not exist yet, so the sqlite store and its schema are created
  on first use: the worst case, and what a first ``make demo`` or a CI job sees.
* ``vintage train (warm store)``: the same command run again into the store the fresh run just made.
* ``plain MLflow (anchor)``: what the original pipeline's notebook did, as a script: fit the same three
  ElasticNet points one after the other, ``mlflow.start_run()``, log params and metrics,
  ``mlflow.sklearn.log_model`` with MLflow's default pip requirement inference, then
  ``mlflow.register_model`` for the best run, into a fresh sqlite store.

How to read it: the table gives median, min and max seconds over ``--repeat`` samples (after
``--warmup`` untimed runs of each command, which only warm the OS file cache). Quote medians: on a shared
machine single samples swing by seconds. The ratio line is vintage train (fresh store) / anchor, both
medians: below 1 means vintage's whole build stage (validation, grid, selection, registration) costs
less than the hand-written MLflow loop it replaces. The target lines compare medians with the issue's
targets (``vintage --help`` < 0.3 s, fresh-store ``vintage train`` <= 8 s).

Every run happens in temporary directories (a copy of vintage.yaml as the working directory, the state
directory and MLflow's artifacts inside it), which are removed afterwards. ``MLFLOW_*`` and ``VINTAGE_*``
variables are dropped from the children's environment so none of them can point a run elsewhere.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "vintage.yaml"
RED_WINE_CSV = REPO / "src" / "vintage" / "data" / "wine_quality" / "winequality-red.csv"
TIMEOUT_S = 600

HELP = "vintage --help"
FRESH = "vintage train (fresh store)"
WARM = "vintage train (warm store)"
ANCHOR = "plain MLflow (anchor)"

# Targets from the build-stage issue: median wall clock on the 2-core machine, (comparison, seconds).
TARGETS: dict[str, tuple[str, float]] = {HELP: ("<", 0.3), FRESH: ("<=", 8.0)}

# The original notebook's loop as a stand-alone script (argv: csv path, tracking URI).
ANCHOR_SCRIPT = """\
import sys

import mlflow
import mlflow.sklearn
import numpy as np
import pandas as pd
from sklearn.linear_model import ElasticNet
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from sklearn.model_selection import train_test_split

csv_path, uri = sys.argv[1], sys.argv[2]
mlflow.set_tracking_uri(uri)
mlflow.set_experiment("DrinksQuality")
np.random.seed(40)
data = pd.read_csv(csv_path, sep=";")
train, test = train_test_split(data, test_size=0.25, random_state=40)
train_x, test_x = train.drop(["quality"], axis=1), test.drop(["quality"], axis=1)
train_y, test_y = train[["quality"]], test[["quality"]]
best = None
for alpha, l1_ratio in [(0.5, 0.5), (0.3, 0.3), (0.1, 0.1)]:
    lr = ElasticNet(alpha=alpha, l1_ratio=l1_ratio, random_state=42)
    lr.fit(train_x, train_y)
    pred = lr.predict(test_x)
    rmse = float(np.sqrt(mean_squared_error(test_y, pred)))
    with mlflow.start_run():
        mlflow.log_param("alpha", alpha)
        mlflow.log_param("l1_ratio", l1_ratio)
        mlflow.log_metric("rmse", rmse)
        mlflow.log_metric("r2", r2_score(test_y, pred))
        mlflow.log_metric("mae", mean_absolute_error(test_y, pred))
        info = mlflow.sklearn.log_model(lr, name="model")
    if rmse < 0.8 and (best is None or rmse < best[0]):
        best = (rmse, info.model_uri)
if best is None:
    sys.exit("no run met rmse < 0.8")
mlflow.register_model(best[1], "winequality")
"""


@dataclass
class Result:
    """Samples of one measured command (seconds)."""

    name: str
    samples: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "median_s": round(self.median, 3),
            "min_s": round(min(self.samples), 3),
            "max_s": round(max(self.samples), 3),
            "n": len(self.samples),
            "samples_s": [round(s, 3) for s in self.samples],
        }


@dataclass
class Machine:
    """Where the figures were taken."""

    cores: int
    python: str
    mlflow: str
    scikit_learn: str
    platform: str


def machine() -> Machine:
    """Describe this machine without importing MLflow or scikit-learn."""
    return Machine(
        cores=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0,
        python=platform.python_version(),
        mlflow=_dist_version("mlflow"),
        scikit_learn=_dist_version("scikit-learn"),
        platform=platform.platform(),
    )


def _dist_version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def vintage_cli() -> str:
    """The ``vintage`` console script next to this interpreter (the venv's), else the one on PATH."""
    beside = Path(sys.executable).parent / "vintage"
    if beside.exists():
        return str(beside)
    found = shutil.which("vintage")
    if found is None:
        raise SystemExit("cannot find the `vintage` command; run this with the project's .venv/bin/python")
    return found


def child_env(state_dir: Path | None = None) -> dict[str, str]:
    """This environment without MLflow/vintage overrides, plus the state directory to use."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "VINTAGE_"))}
    if state_dir is not None:
        env["VINTAGE_STATE_DIR"] = str(state_dir)
    return env


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    """Run ``cmd`` to completion in a new process; its wall-clock seconds.

    Raises:
        RuntimeError: the command failed (its stderr tail is in the message).
    """
    started = time.perf_counter()
    proc = subprocess.run(
        cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=TIMEOUT_S
    )
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace")[-2000:]
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{tail}")
    return elapsed


def project_dir(root: Path) -> Path:
    """A new working directory under ``root`` holding a copy of the repo's vintage.yaml."""
    work = Path(tempfile.mkdtemp(prefix="project-", dir=root))
    shutil.copy2(CONFIG, work / "vintage.yaml")
    return work


def measure_help(root: Path, cli: str) -> float:
    return timed([cli, "--help"], project_dir(root), child_env())


def measure_train_pair(root: Path, cli: str) -> tuple[float, float]:
    """``vintage train`` into a new state directory, then again into the same (now warm) store."""
    work = project_dir(root)
    env = child_env(work / "state")
    fresh = timed([cli, "train"], work, env)
    warm = timed([cli, "train"], work, env)
    return fresh, warm


def measure_anchor(root: Path, script: Path) -> float:
    work = project_dir(root)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    return timed([sys.executable, str(script), str(RED_WINE_CSV), uri], work, child_env())


def run_all(repeat: int, warmup: int, progress: Callable[[str], None]) -> list[Result]:
    """Interleave the four measurements ``warmup + repeat`` times; keep the last ``repeat``."""
    cli = vintage_cli()
    names = [HELP, FRESH, WARM, ANCHOR]
    samples: dict[str, list[float]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory(prefix="vintage-bench-") as tmp:
        root = Path(tmp)
        script = root / "anchor.py"
        script.write_text(ANCHOR_SCRIPT, encoding="utf-8")
        for i in range(warmup + repeat):
            label = f"warm-up {i + 1}/{warmup}" if i < warmup else f"repeat {i - warmup + 1}/{repeat}"
            progress(label)
            fresh, warm = measure_train_pair(root, cli)
            row = [measure_help(root, cli), fresh, warm, measure_anchor(root, script)]
            if i >= warmup:
                for name, value in zip(names, row, strict=True):
                    samples[name].append(value)
    return [Result(n, s) for n, s in samples.items()]


def ratio(results: list[Result]) -> float:
    """Median of vintage train (fresh store) over median of the plain-MLflow anchor."""
    by_name = {r.name: r for r in results}
    return by_name[FRESH].median / by_name[ANCHOR].median


def target_rows(results: list[Result]) -> list[dict[str, object]]:
    """Each target with the measured median and whether it is met."""
    by_name = {r.name: r for r in results}
    rows: list[dict[str, object]] = []
    for name, (op, limit) in TARGETS.items():
        median = by_name[name].median
        met = median < limit if op == "<" else median <= limit
        rows.append({"name": name, "target": f"{op} {limit} s", "median_s": round(median, 3), "met": met})
    return rows


def render_table(results: list[Result], box: Machine) -> str:
    """Plain-text report: machine line, the table, the ratio and the targets."""
    lines = [
        f"machine: {box.cores} cores, Python {box.python}, mlflow {box.mlflow}, "
        f"scikit-learn {box.scikit_learn}",
        f"{'what':<30} {'median s':>9} {'min s':>8} {'max s':>8} {'n':>3}",
    ]
    for r in results:
        lines.append(
            f"{r.name:<30} {r.median:>9.2f} {min(r.samples):>8.2f} {max(r.samples):>8.2f} {len(r.samples):>3}"
        )
    lines.append(f"ratio vintage train (fresh store) / plain MLflow (anchor): {ratio(results):.2f}")
    for row in target_rows(results):
        verdict = "met" if row["met"] else "NOT met"
        lines.append(f"target {row['name']} {row['target']}: median {row['median_s']} s, {verdict}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=5, help="timed samples per command (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.warmup < 0:
        parser.error("--repeat must be >= 1 and --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    box = machine()
    results = run_all(args.repeat, args.warmup, lambda msg: print(msg, file=sys.stderr, flush=True))
    if args.json:
        payload = {
            "machine": asdict(box),
            "results": [r.as_dict() for r in results],
            "ratio_train_fresh_to_anchor": round(ratio(results), 3),
            "targets": target_rows(results),
        }
        print(json.dumps(payload, indent=2))
    else:
        print(render_table(results, box))
    return 0


if __name__ == "__main__":
    sys.exit(main())
