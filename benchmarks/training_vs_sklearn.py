"""What `vintage train` costs over a plain scikit-learn loop with the same fits, side by side.

Run from the repo::

    .venv/bin/python benchmarks/training_vs_sklearn.py [--repeat 3] [--sets red white] [--max-load 1]

For each packaged data set, examples/wine-search.yaml (36 points of four families, 5-fold duplicate-
grouped CV) is run two ways, each as one cold process timed by the wall clock:

- ``vintage``: ``python -m vintage -c CONFIG train`` into a fresh state directory: the fits, plus
  everything vintage adds (MLflow store, one run per point with params, metrics, dataset input,
  evaluation plots and the model; selection; registration of the chosen model);
- ``plain``: benchmarks/_plain_search.py, the loop a scikit-learn user writes: the same points fitted
  on the same training rows (vintage's split, handed over as CSV files), scored on the holdout and
  cross-validated on the same folds, over ``joblib.Parallel`` with as many workers as vintage uses; the
  fitted models come back and the best is saved with ``joblib.dump``.

Samples alternate (plain, vintage, vintage, plain, ...), so a slow minute of a shared machine hits both.
The table gives the medians, the ratio vintage / plain of the wall-time medians (goal: <= 1.05), and the
CPU time of each (user + system of the process and all its descendants). ``--before REF`` adds vintage at
another commit (its ``src/`` extracted with ``git archive``, run with the same interpreter) to the same
rotation: a change to the training loop measured before and after in one run.
"""

from __future__ import annotations

import argparse
import json
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from training_overhead import adopt_orphans, env_for, extract, reap_descendants, wait_for_quiet

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "examples" / "wine-search.yaml"
PLAIN = Path(__file__).resolve().parent / "_plain_search.py"
TIMEOUT_S = 900
GOAL = 1.05


def prepare(dataset: str, into: Path) -> tuple[Path, Path]:
    """The config for ``dataset`` and the split directory the plain loop reads (vintage's rows)."""
    import numpy as np

    from vintage.config import load_spec
    from vintage.data import load_dataset
    from vintage.data.load import duplicate_groups

    raw = yaml.safe_load(CONFIG.read_text())
    raw["data"]["dataset"] = dataset
    config = into / f"wine-search-{dataset}.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    spec = load_spec(config)
    data = load_dataset(spec.data)
    split = spec.data.split
    train, test = data.split(split.test_size, split.seed, group_duplicates=split.group_duplicates)
    out = into / f"split-{dataset}"
    out.mkdir()
    train.to_csv(out / "train.csv", index=False)
    test.to_csv(out / "test.csv", index=False)
    np.save(out / "groups.npy", duplicate_groups(train[[*data.features, data.target]]))
    return config, out


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, str]:
    """Wall and CPU seconds (the process and its descendants) of ``cmd``, and its stdout."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )
    seconds = time.perf_counter() - started
    reap_descendants()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} failed:\n{proc.stderr[-2000:]}")
    cpu = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
    return seconds, cpu, proc.stdout


def run_vintage(config: Path, src: Path) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(prefix="vintage-bench-") as tmp:
        env = env_for(src) | {"VINTAGE_STATE_DIR": str(Path(tmp) / "state")}
        wall, cpu, out = timed(
            [sys.executable, "-m", "vintage", "-c", str(config), "train", "--json"], Path(tmp), env
        )
    report = json.loads(out)["training"]
    finished = [r for r in report["runs"] if r["status"] == "FINISHED"]
    if len(finished) != 36:
        raise SystemExit(f"vintage train finished {len(finished)} of 36 points")
    return wall, cpu


def run_plain(config: Path, split_dir: Path, n_jobs: int) -> tuple[float, float]:
    env = env_for(REPO / "src")
    env.pop("PYTHONPATH")  # the plain loop imports nothing from vintage
    wall, cpu, out = timed(
        [sys.executable, str(PLAIN), str(config), str(split_dir), str(n_jobs)], split_dir, env
    )
    if not out.startswith("36 points"):
        raise SystemExit(f"the plain loop did not fit 36 points: {out!r}")
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3, help="samples per variant and data set")
    parser.add_argument("--sets", nargs="+", default=["red", "white"], choices=["red", "white"])
    parser.add_argument("--json", action="store_true", help="print the samples as JSON")
    parser.add_argument("--max-load", type=float, default=0.0, help="wait for a 1-minute load below this")
    parser.add_argument(
        "--before",
        metavar="REF",
        help="also time vintage at this commit (its src/, via git archive)",
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    adopt_orphans()
    from vintage.training.executor import default_jobs

    n_jobs = default_jobs()
    variants = {"plain": None, "vintage": REPO / "src"}
    rows = []
    with tempfile.TemporaryDirectory(prefix="vintage-bench-split-") as tmp:
        if args.before:
            variants = {"plain": None, f"vintage {args.before}": extract(args.before, Path(tmp) / "before")}
            variants["vintage"] = REPO / "src"
        for dataset in args.sets:
            config, split_dir = prepare(dataset, Path(tmp))
            samples: dict[str, list[tuple[float, float]]] = {v: [] for v in variants}
            for i in range(args.repeat):
                order = list(variants) if i % 2 == 0 else list(reversed(variants))
                for variant in order:
                    if args.max_load:
                        wait_for_quiet(args.max_load)
                    src = variants[variant]
                    if src is None:
                        wall, cpu = run_plain(config, split_dir, n_jobs)
                    else:
                        wall, cpu = run_vintage(config, src)
                    samples[variant].append((wall, cpu))
                    print(f"  {dataset} {variant}: {wall:.2f} s, cpu {cpu:.2f} s", file=sys.stderr)
            rows.append((dataset, samples))
    if args.json:
        print(json.dumps(dict(rows), indent=2))
        return
    print(
        f"examples/wine-search.yaml (36 points), median (min-max) of {args.repeat} cold runs,"
        f" {n_jobs} workers; ratio = vintage / plain of the medians"
    )
    names = [v for v in variants if v != "plain"]
    print(f"{'data':<6} {'':<5} {'plain sklearn (s)':>20}" + "".join(f" {n:>20} {'ratio':>7}" for n in names))
    for dataset, samples in rows:
        for k, what in enumerate(("wall", "cpu")):
            plain = [s[k] for s in samples["plain"]]
            line = f"{dataset if k == 0 else '':<6} {what:<5} {_cell(plain):>20}"
            for name in names:
                ours = [s[k] for s in samples[name]]
                ratio = statistics.median(ours) / statistics.median(plain)
                line += f" {_cell(ours):>20} {ratio:>6.3f}x"
            print(line)
    print(f"goal: wall ratio <= {GOAL}")


def _cell(samples: list[float]) -> str:
    return f"{statistics.median(samples):.2f} ({min(samples):.2f}-{max(samples):.2f})"


if __name__ == "__main__":
    main()
