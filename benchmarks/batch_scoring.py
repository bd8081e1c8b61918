"""Throughput of batch scoring (``vintage score``'s local engine) against raw scikit-learn and MLflow pyfunc.

Run from the repo (any working directory works)::

    .venv/bin/python benchmarks/batch_scoring.py [--rows 1000000] [--repeat 5] [--warmup 1] [--json]

What it does, in one run on this machine:

1. Copies the repo's vintage.yaml into a temporary project, runs ``vintage train`` there (the default
   3-point ElasticNet grid) and materialises ``models:/winequality/1`` into a local model directory with
   :func:`vintage.model.materialize.materialize`: the directory ``vintage score`` and ``vintage serve``
   predict from.
2. Draws ``--rows`` rows (default 1,000,000) with replacement from the packaged red wine data (all 12
   columns: the 11 features and ``quality``, which rides along as an extra column), seed 0, and writes
   them to a Parquet file in the temporary directory (row groups of 128k rows).
3. Measures, interleaved, ``--warmup`` untimed then ``--repeat`` timed rounds of:

   * ``local engine, Parquet -> Parquet``: :func:`vintage.scoring.local.score_file` end to end, the
     whole ``vintage score`` job without the CLI: load the model directory, read the Parquet file in
     chunks, check and predict every chunk, write a new Parquet file (temporary file, then rename).
   * ``local engine, in memory``: :func:`vintage.scoring.local.score_table` on the same rows already
     loaded as an Arrow table, model already loaded: the same per-chunk code path (feature matrix in
     the model's column order, NaN/infinity check, ``LoadedModel.predict``, output batch with the
     ``prediction`` column appended) without the file I/O.
   * ``raw sklearn predict``: the fitted estimator (unpickled from the model directory) predicting a
     C-contiguous float64 NumPy array of the 11 features already in memory; the ceiling for any wrapper.
   * ``mlflow pyfunc predict``: ``mlflow.pyfunc.load_model(model_dir).predict(df)`` on a pandas
     DataFrame of the rows already in memory (the model loaded once, outside the timing).
   * With ``--spark`` (:func:`measure_spark`), in ``local[2]``: the Spark engine (``sql`` and ``arrow``
     scorers) against the anchor ``mlflow.pyfunc.spark_udf``, end to end (Parquet file in, Parquet out)
     and scoring only (rows cached in memory, Spark's ``noop`` sink), each next to its floor (the same
     Spark work with no model). The ratio lines are Spark engine / spark_udf rows/s (target >= 10x) and
     the ceiling any scorer could reach (floor / spark_udf).

   Every measurement scores the same rows and the predictions are checked against each other (rtol
   1e-12) once before timing.

How to read it: the table gives, per measurement, the median, min and max seconds over the repeats and
the median throughput in rows/s (rows / median seconds). Quote medians: on a shared 2-core machine single
samples swing. The ratio line is ``local engine, in memory`` over ``raw sklearn predict`` (rows/s): the
issue's target is >= 0.8, i.e. the engine's own work (column copy, checks, Arrow output) costs at most a
quarter of what the model's predict costs. ``local engine, Parquet -> Parquet`` adds reading,
decompressing and writing the files and loading the model.
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
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "vintage.yaml"
MODEL_URI = "models:/winequality/1"
TRAIN_TIMEOUT_S = 600
ROW_GROUP = 131_072

FILE = "local engine, Parquet -> Parquet"
MEMORY = "local engine, in memory"
RAW = "raw sklearn predict"
PYFUNC = "mlflow pyfunc predict"
NAMES = [FILE, MEMORY, RAW, PYFUNC]
TARGET_RATIO = 0.8  # local engine in memory / raw sklearn predict, rows/s
# --spark, all in local[2]. End to end: the Parquet file in, scored Parquet out.
SPARK_COLD = "spark engine sql, file, cold"
SPARK_WARM = "spark engine sql, file"
SPARK_ARROW = "spark engine arrow, file"
UDF_COLD = "spark_udf, file, cold"
UDF_WARM = "spark_udf, file (anchor)"
COPY = "spark read+write, no model"
# Scoring only: the rows cached in executor memory, the result to Spark's noop sink.
SQL_ONLY = "sql scorer, cached -> noop"
ARROW_ONLY = "arrow scorer, cached -> noop"
UDF_ONLY = "spark_udf, cached -> noop"
SCAN_ONLY = "cached scan, no model"
COLUMN_ONLY = "cached + x*1.0 column, no model"
TARGET_SPARK_RATIO = 10.0  # spark engine / spark_udf, rows/s


@dataclass
class Result:
    """Samples of one measurement (seconds) over the same number of rows."""

    name: str
    rows: int
    samples: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.median

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "rows": self.rows,
            "median_s": round(self.median, 4),
            "min_s": round(min(self.samples), 4),
            "max_s": round(max(self.samples), 4),
            "rows_per_s": round(self.rows_per_s),
            "n": len(self.samples),
            "samples_s": [round(s, 4) for s in self.samples],
        }


@dataclass
class Machine:
    """Where the figures were taken."""

    cores: int
    python: str
    mlflow: str
    scikit_learn: str
    pyarrow: str
    platform: str


def machine() -> Machine:
    return Machine(
        cores=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0,
        python=platform.python_version(),
        mlflow=_dist_version("mlflow"),
        scikit_learn=_dist_version("scikit-learn"),
        pyarrow=_dist_version("pyarrow"),
        platform=platform.platform(),
    )


def _dist_version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def child_env() -> dict[str, str]:
    """This environment without MLflow/vintage overrides."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "VINTAGE_"))}


def train_and_materialize(root: Path) -> Path:
    """Train the default workload in a fresh project under ``root``; the model directory of version 1."""
    from vintage.model.materialize import materialize

    project = root / "project"
    project.mkdir()
    shutil.copy2(CONFIG, project / "vintage.yaml")
    cli = Path(sys.executable).parent / "vintage"
    proc = subprocess.run(
        [str(cli), "train"], cwd=project, env=child_env(), capture_output=True, timeout=TRAIN_TIMEOUT_S
    )
    if proc.returncode != 0:
        raise RuntimeError(f"vintage train exited {proc.returncode}:\n{proc.stderr.decode()[-2000:]}")
    uri = f"sqlite:///{project / '.vintage' / 'mlflow.db'}"
    return materialize(MODEL_URI, root / "models", tracking_uri=uri)


def write_rows(path: Path, rows: int) -> None:
    """``rows`` rows drawn with replacement from the red wine data (seed 0), as Parquet."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from vintage.data import packaged_path

    red = pd.read_csv(packaged_path("red"), sep=";")
    picks = np.random.default_rng(0).integers(0, len(red), rows)
    table = pa.Table.from_pandas(red.iloc[picks].reset_index(drop=True), preserve_index=False)
    pq.write_table(table, path, row_group_size=ROW_GROUP)


def load_estimator(model_dir: Path) -> Any:
    """The fitted estimator as MLflow saved it (cloudpickle/pickle file named in MLmodel)."""
    import pickle

    import yaml

    flavor = yaml.safe_load((model_dir / "MLmodel").read_text())["flavors"]["sklearn"]
    with (model_dir / flavor["pickled_model"]).open("rb") as fh:
        return pickle.load(fh)


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def measure_spark(
    model_dir: Path,
    src: Path,
    reference: Path,
    root: Path,
    rows: int,
    repeat: int,
    progress: Callable[[str], None],
) -> list[Result]:
    """The Spark engine against ``mlflow.pyfunc.spark_udf`` in ``local[2]``, end to end and scoring only.

    End to end (the same Parquet file in, Parquet out): :func:`vintage.scoring.spark.score_file` with
    the ``sql`` scorer (what ``auto`` picks for this ElasticNet) and with the ``arrow`` scorer, each
    producing the one output file ``vintage score`` writes; the anchor reads the file with Spark, adds
    ``mlflow.pyfunc.spark_udf(spark, model_dir, result_type="double")(*features)`` and writes Spark's
    directory of parts (no single-file step); and the floor, Spark reading and writing the same file with
    no model at all: no scorer that reads and writes through Spark can beat it.

    Scoring only (the rows cached in executor memory, the result written to Spark's ``noop`` sink, so
    no file I/O on either side): :func:`vintage.scoring.spark_scorers.score_frame` with each scorer, the same
    ``spark_udf`` column, a plain scan of the cached rows, and the cached rows plus one computed column
    (``x * 1.0``, no model): the floor of any scorer, which must turn the cached columnar batches into rows
    to compute a new column.

    ``cold`` rows: the first run in the process (session start-up included for the engine, UDF creation
    for the anchor), n=1. All others: ``repeat`` interleaved warm runs.
    """
    import dataclasses

    import mlflow.pyfunc
    import pyarrow.parquet as pq
    from pyspark.sql import functions as F  # noqa: N812 - the usual alias

    from vintage.compute.spark import session
    from vintage.config.models import SparkSpec
    from vintage.model.load import load_model_dir
    from vintage.scoring import ScoreJob
    from vintage.scoring.spark import score_file as spark_score
    from vintage.scoring.spark_scorers import score_frame

    spec = SparkSpec(master="local[2]")
    dst = root / "spark-scored.parquet"
    sql_job = ScoreJob(model_dir, src, dst, spark=spec, spark_scorer="sql")
    arrow_job = dataclasses.replace(sql_job, spark_scorer="arrow")
    expected = pq.read_table(reference, columns=["prediction"]).column(0).to_numpy()

    def check(what: str) -> None:
        got = pq.read_table(dst, columns=["prediction"]).column(0).to_numpy()
        if not np.array_equal(got, expected):
            raise RuntimeError(f"the spark engine ({what}) disagrees with the local engine")

    progress("spark engine: cold run (session start-up included)")
    cold = [timed(lambda: spark_score(sql_job, None))]
    check("sql")
    spark_score(arrow_job, None)
    check("arrow")
    spark = session(spec)
    model = load_model_dir(model_dir)
    features = list(model.info.columns)
    udf_out, copy_out = root / "spark-udf-out", root / "spark-copy-out"

    def anchor() -> None:
        udf = mlflow.pyfunc.spark_udf(spark, str(model_dir), result_type="double")
        frame = spark.read.parquet(str(src))
        frame.withColumn("prediction", udf(*features)).write.mode("overwrite").parquet(str(udf_out))

    def copy() -> None:
        spark.read.parquet(str(src)).write.mode("overwrite").parquet(str(copy_out))

    progress("spark_udf: cold run")
    anchor_cold = [timed(anchor)]
    cached = spark.read.parquet(str(src)).cache()
    if cached.count() != rows:
        raise RuntimeError("the cached rows are not all there")
    udf = mlflow.pyfunc.spark_udf(spark, str(model_dir), result_type="double")

    def noop(frame: Any) -> None:
        frame.write.format("noop").mode("overwrite").save()

    runs: dict[str, Callable[[], object]] = {
        SPARK_WARM: lambda: spark_score(sql_job, None),
        SPARK_ARROW: lambda: spark_score(arrow_job, None),
        UDF_WARM: anchor,
        COPY: copy,
        SQL_ONLY: lambda: noop(score_frame(cached, model, model_dir, "sql")),
        ARROW_ONLY: lambda: noop(score_frame(cached, model, model_dir, "arrow")),
        UDF_ONLY: lambda: noop(cached.withColumn("prediction", udf(*features))),
        SCAN_ONLY: lambda: noop(cached),
        COLUMN_ONLY: lambda: noop(cached.withColumn("prediction", F.col(features[0]) * 1.0)),
    }
    for fn in runs.values():  # warm every path once (Python workers, code generation)
        fn()
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(repeat):
        progress(f"spark repeat {i + 1}/{repeat}")
        for name, fn in runs.items():
            samples[name].append(timed(fn))
    cached.unpersist()
    return [
        Result(SPARK_COLD, rows, cold),
        Result(UDF_COLD, rows, anchor_cold),
        *(Result(name, rows, values) for name, values in samples.items()),
    ]


def run_all(
    rows: int, repeat: int, warmup: int, progress: Callable[[str], None], spark: bool = False
) -> list[Result]:
    """Set up once, then interleave the four measurements ``warmup + repeat`` times (then Spark's)."""
    import mlflow.pyfunc
    import pyarrow.parquet as pq

    from vintage.model.load import load_model_dir
    from vintage.scoring import ScoreJob
    from vintage.scoring.local import score_file, score_table

    samples: dict[str, list[float]] = {n: [] for n in NAMES}
    with tempfile.TemporaryDirectory(prefix="vintage-bench-batch-") as tmp:
        root = Path(tmp)
        progress("training and materialising the model")
        model_dir = train_and_materialize(root)
        src, dst = root / "rows.parquet", root / "scored.parquet"
        progress(f"writing {rows:,} rows to Parquet")
        write_rows(src, rows)
        table = pq.read_table(src)
        model = load_model_dir(model_dir)
        features = list(model.info.columns)
        frame = table.select(features).to_pandas()
        x = np.ascontiguousarray(frame.to_numpy(dtype=np.float64))
        estimator = load_estimator(model_dir)
        pyfunc = mlflow.pyfunc.load_model(str(model_dir))
        job = ScoreJob(model_dir, src, dst)

        def raw() -> object:
            with warnings.catch_warnings():  # fitted on a DataFrame: "X does not have valid feature names"
                warnings.simplefilter("ignore", UserWarning)
                return estimator.predict(x)

        runs: dict[str, Callable[[], object]] = {
            FILE: lambda: score_file(job, None),
            MEMORY: lambda: score_table(model, table),
            RAW: raw,
            PYFUNC: lambda: pyfunc.predict(frame),
        }
        check_agreement(runs, dst)
        for i in range(warmup + repeat):
            label = f"warm-up {i + 1}/{warmup}" if i < warmup else f"repeat {i - warmup + 1}/{repeat}"
            progress(label)
            for name, fn in runs.items():
                seconds = timed(fn)
                if i >= warmup:
                    samples[name].append(seconds)
        results = [Result(n, rows, s) for n, s in samples.items()]
        if spark:
            results += measure_spark(model_dir, src, dst, root, rows, repeat, progress)
    return results


def check_agreement(runs: dict[str, Callable[[], object]], dst: Path) -> None:
    """Every path predicts the same values for the same rows (rtol 1e-12)."""
    import pyarrow.parquet as pq

    runs[FILE]()
    reference = pq.read_table(dst, columns=["prediction"]).column(0).to_numpy()
    memory = runs[MEMORY]()
    others = {
        MEMORY: memory.column("prediction").to_numpy(),  # type: ignore[attr-defined]
        RAW: np.asarray(runs[RAW](), dtype=np.float64),
        PYFUNC: np.asarray(runs[PYFUNC](), dtype=np.float64),
    }
    for name, values in others.items():
        if not np.allclose(values, reference, rtol=1e-12, atol=0):
            raise RuntimeError(f"{name} disagrees with {FILE}")


def ratio(results: list[Result]) -> float:
    """rows/s of the local engine in memory over rows/s of raw sklearn predict."""
    by_name = {r.name: r for r in results}
    return by_name[MEMORY].rows_per_s / by_name[RAW].rows_per_s


def spark_ratios(results: list[Result]) -> dict[str, float]:
    """rows/s over ``spark_udf``'s rows/s, end to end and scoring only, when measured."""
    by_name = {r.name: r for r in results}
    if SPARK_WARM not in by_name:
        return {}

    def over(name: str, anchor: str) -> float:
        return by_name[name].rows_per_s / by_name[anchor].rows_per_s

    return {
        "file_sql": over(SPARK_WARM, UDF_WARM),
        "file_arrow": over(SPARK_ARROW, UDF_WARM),
        "file_floor": over(COPY, UDF_WARM),
        "file_cold": over(SPARK_COLD, UDF_COLD),
        "scoring_sql": over(SQL_ONLY, UDF_ONLY),
        "scoring_arrow": over(ARROW_ONLY, UDF_ONLY),
        "scoring_floor": over(SCAN_ONLY, UDF_ONLY),
        "scoring_column": over(COLUMN_ONLY, UDF_ONLY),
    }


def render_table(results: list[Result], box: Machine, notes: list[str]) -> str:
    lines = [
        f"machine: {box.cores} cores, Python {box.python}, mlflow {box.mlflow}, "
        f"scikit-learn {box.scikit_learn}, pyarrow {box.pyarrow}",
        f"rows: {results[0].rows:,} (red wine rows drawn with replacement, Parquet)",
        f"{'what':<34} {'median s':>9} {'min s':>8} {'max s':>8} {'M rows/s':>9} {'n':>3}",
    ]
    for r in results:
        lines.append(
            f"{r.name:<34} {r.median:>9.4f} {min(r.samples):>8.4f} {max(r.samples):>8.4f} "
            f"{r.rows_per_s / 1e6:>9.2f} {len(r.samples):>3}"
        )
    value = ratio(results)
    verdict = "met" if value >= TARGET_RATIO else "NOT met"
    lines.append(
        f"ratio local engine in memory / raw sklearn predict: {value:.2f} (target >= 0.8: {verdict})"
    )
    spark = spark_ratios(results)
    if spark:

        def verdict(value: float) -> str:
            return "met" if value >= TARGET_SPARK_RATIO else "NOT met"

        lines.append(
            f"ratio spark engine / spark_udf, end to end: sql {spark['file_sql']:.1f}x "
            f"({verdict(spark['file_sql'])}), arrow {spark['file_arrow']:.1f}x, "
            f"cold {spark['file_cold']:.1f}x; "
            f"ceiling (Spark read+write, no model) {spark['file_floor']:.1f}x"
        )
        lines.append(
            f"ratio spark engine / spark_udf, scoring only: sql {spark['scoring_sql']:.1f}x "
            f"({verdict(spark['scoring_sql'])}), arrow {spark['scoring_arrow']:.1f}x; "
            f"ceiling: cached scan {spark['scoring_floor']:.1f}x, "
            f"one computed column without a model {spark['scoring_column']:.1f}x"
        )
    lines.extend(notes)
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows to score (default 1,000,000)")
    parser.add_argument("--repeat", type=int, default=5, help="timed samples per measurement (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    parser.add_argument("--spark", action="store_true", help="also measure the Spark engine vs spark_udf")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.warmup < 0 or args.rows < 1:
        parser.error("--repeat and --rows must be >= 1 and --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    box = machine()

    def progress(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    results = run_all(args.rows, args.repeat, args.warmup, progress, spark=args.spark)
    notes: list[str] = []
    if args.json:
        payload = {
            "machine": asdict(box),
            "results": [r.as_dict() for r in results],
            "ratio_memory_to_raw": round(ratio(results), 3),
            "ratio_spark_to_spark_udf": {k: round(v, 2) for k, v in spark_ratios(results).items()},
            "notes": notes,
        }
        print(json.dumps(payload, indent=2))
    else:
        print(render_table(results, box, notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
