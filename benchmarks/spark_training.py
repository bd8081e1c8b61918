"""Wall time and peak memory of the Spark MLlib trainer (:mod:`vintage.training.mllib`) on a large
synthetic data set, in ``local[2]``.

Run from the repo::

    .venv/bin/python benchmarks/spark_training.py [--rows 10000000] [--repeat 1] [--driver-memory 2g]

What it does:

1. In a child process (so its memory does not count as the trainer's), draws ``--rows`` rows from the
   packaged red wine data's distribution: the 11 features from a multivariate normal with the data's
   mean and covariance, clipped to the observed ranges; ``quality`` from an ordinary least-squares fit
   on the real data plus Gaussian noise with the fit's residual standard deviation, rounded and clipped
   to 3..8. Seed 0. Written in chunks of 500k rows (bounded memory) as Parquet part files in a
   temporary directory.
2. Runs what ``vintage train`` runs for an MLlib workload (``pipeline.build``'s first half), in this
   process, ``--repeat`` times: :func:`vintage.data.load_dataset` (validates, counts and digests the data
   in bounded-memory chunks; the whole frame is never loaded), then :func:`vintage.training.train_grid`
   with one ``pyspark.ml.regression.LinearRegression`` grid point (``--reg-param``,
   ``--elastic-net-param``, ``maxIter`` 100) on ``local[2]``: Spark reads the Parquet directory,
   VectorAssembler, ``randomSplit`` 0.75/0.25 seed 40, fit, holdout metrics, sklearn export, and the MLflow
   run (params, metrics, dataset input, model, ``spark-model`` artifact) in a throwaway sqlite store. The
   Spark session (driver memory ``--driver-memory``) is created first and timed on its own.
3. Reports per repeat the wall seconds of the load (validate + digest) and of the training, the holdout
   rmse, and at the end the peaks: the driver Python process's max RSS (``resource.getrusage``) next to
   the data's in-memory size (rows x 12 float64 columns), and the Spark driver JVM's ``VmHWM`` from
   ``/proc/<pid>/status`` (the JVM is this process's ``java`` child; in ``local`` mode it also runs the
   executors' tasks, so it is all of Spark's memory). Both are peaks over the whole run, session start-up
   included.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHUNK = 500_000


def generate(out: Path, rows: int, seed: int = 0) -> None:
    """Write ``rows`` synthetic wine rows to ``out`` (a directory of Parquet parts), chunk by chunk."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from vintage.config.models import WINE_FEATURES
    from vintage.data.packaged import packaged_path

    wine = pd.read_csv(packaged_path("red"), sep=";")
    x = wine[list(WINE_FEATURES)].to_numpy(dtype="float64")
    y = wine["quality"].to_numpy(dtype="float64")
    mean, cov = x.mean(axis=0), np.cov(x, rowvar=False)
    lo, hi = x.min(axis=0), x.max(axis=0)
    design = np.column_stack([x, np.ones(len(x))])
    beta, *_ = np.linalg.lstsq(design, y, rcond=None)
    sigma = float(np.std(y - design @ beta))
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    done, part = 0, 0
    while done < rows:
        n = min(CHUNK, rows - done)
        xs = np.clip(rng.multivariate_normal(mean, cov, size=n), lo, hi)
        ys = np.clip(np.rint(xs @ beta[:-1] + beta[-1] + rng.normal(0.0, sigma, n)), 3, 8)
        table = pa.table({**{c: xs[:, i] for i, c in enumerate(WINE_FEATURES)}, "quality": ys})
        pq.write_table(table, out / f"part-{part:05d}.parquet")
        done, part = done + n, part + 1


def _java_child() -> int | None:
    """The pid of this process's ``java`` child (the Spark driver JVM)."""
    me = str(os.getpid())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        if fields.get("PPid", "").strip() == me and fields.get("Name", "").strip() == "java":
            return int(entry.name)
    return None


def _vm_hwm_mib(pid: int | None) -> float | None:
    if pid is None:
        return None
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--reg-param", type=float, default=0.1)
    parser.add_argument("--elastic-net-param", type=float, default=0.5)
    parser.add_argument("--driver-memory", default="2g")
    parser.add_argument("--keep", type=Path, help="reuse/keep the generated data in this directory")
    parser.add_argument("--generate-only", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.generate_only:
        generate(args.generate_only, args.rows)
        return

    tmp = Path(tempfile.mkdtemp(prefix="vintage-bench-mllib-"))
    data = args.keep or tmp / "wine.parquet"
    try:
        gen_s = 0.0
        if not (data.is_dir() and any(data.glob("*.parquet"))):
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, __file__, "--rows", str(args.rows), "--generate-only", str(data)], check=True
            )
            gen_s = time.perf_counter() - started
        size_mib = sum(p.stat().st_size for p in data.glob("*.parquet")) / 2**20
        results = measure(data, args, tmp)
        results.update({"rows": args.rows, "generate_seconds": gen_s, "parquet_mib": size_mib})
        report(results, args.json)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def measure(data: Path, args: argparse.Namespace, tmp: Path) -> dict[str, object]:
    """Time ``args.repeat`` load + train runs of ``vintage train``'s MLlib path on ``data``; then peaks."""
    os.environ.setdefault("SPARK_LOCAL_DIRS", str(tmp / "spark-local"))
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    from vintage.compute.spark import session
    from vintage.config import Spec
    from vintage.data import load_dataset
    from vintage.tracking import open_session
    from vintage.training import train_grid

    params = {"maxIter": 100, "regParam": args.reg_param, "elasticNetParam": args.elastic_net_param}
    spec = Spec.model_validate(
        {
            "state_dir": str(tmp / "state"),
            "data": {"path": str(data)},
            "estimator": {"class": "pyspark.ml.regression.LinearRegression", "grid": [params]},
            "selection": {"threshold": None},
            "compute": {
                "engine": "spark",
                "spark": {"master": "local[2]", "conf": {"spark.driver.memory": args.driver_memory}},
            },
        }
    )
    started = time.perf_counter()
    spark = session(spec.compute.spark, "vintage-mllib")  # train_grid's executor reuses it
    startup = time.perf_counter() - started
    jvm = _java_child()
    fits = []
    try:
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            dataset = load_dataset(spec.data)
            t1 = time.perf_counter()
            _, training = train_grid(spec, dataset, lambda: open_session(spec))
            (run,) = training.runs
            assert run.status == "FINISHED", run.error
            fits.append(
                {
                    "load_seconds": t1 - t0,
                    "train_seconds": time.perf_counter() - t1,
                    "fit_seconds": run.seconds,
                    "rmse": run.metrics["rmse"],
                    "n_rows": dataset.n_rows,
                    "digest": dataset.digest,
                }
            )
        jvm_peak = _vm_hwm_mib(jvm)
    finally:
        spark.stop()
    return {
        "params": params,
        "session_start_seconds": startup,
        "fits": fits,
        "python_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "jvm_peak_rss_mib": jvm_peak,
        "jvm_pid_found": jvm is not None,
        "driver_memory": args.driver_memory,
    }


def report(results: dict[str, object], as_json: bool) -> None:
    if as_json:
        print(json.dumps(results, indent=2))
        return
    print(f"rows: {results['rows']:,}  parquet: {results['parquet_mib']:.0f} MiB  "
          f"generated in {results['generate_seconds']:.1f} s  params: {results['params']}")  # fmt: skip
    print(f"Spark session start-up (local[2], driver memory {results['driver_memory']}): "
          f"{results['session_start_seconds']:.1f} s")  # fmt: skip
    print(f"{'repeat':>6} {'load s':>8} {'train s':>8} {'fit s':>8} {'rmse':>8}  digest")
    fits = results["fits"]
    assert isinstance(fits, list)
    for i, fit in enumerate(fits, 1):
        print(f"{i:>6} {fit['load_seconds']:>8.1f} {fit['train_seconds']:>8.1f} {fit['fit_seconds']:>8.1f} "
              f"{fit['rmse']:>8.4f}  {fit['digest']}")  # fmt: skip
    jvm = results["jvm_peak_rss_mib"]
    frame_mib = int(results["rows"]) * 12 * 8 / 2**20  # type: ignore[call-overload]
    print(f"peak RSS: driver Python {results['python_peak_rss_mib']:.0f} MiB "
          f"(the data as one float64 frame: {frame_mib:.0f} MiB), "
          f"Spark driver JVM {'n/a' if jvm is None else f'{jvm:.0f} MiB'} (VmHWM)")  # fmt: skip


if __name__ == "__main__":
    main()
