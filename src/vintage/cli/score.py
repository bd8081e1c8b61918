"""``vintage score``: predict every row of a CSV or Parquet file into a new file."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from vintage.cli import state
from vintage.cli.models_ref import MODEL_HELP, local_model_dir

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

    from vintage.config.models import SparkSpec

DEFAULT_CHUNK_ROWS = 131_072  # vintage.scoring.DEFAULT_CHUNK_ROWS (not imported: keeps --help light)


def score(
    input_path: Annotated[
        Path,
        typer.Option(
            "--input",
            "-i",
            help="CSV (comma, semicolon or tab separated, header line) or Parquet (.parquet, .pq) file.",
        ),
    ],
    output_path: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            help="File to write: the input columns plus `prediction`; .csv, .parquet or .pq.",
        ),
    ],
    model: Annotated[str, typer.Option("--model", "-m", help=MODEL_HELP)] = "candidate",
    engine: Annotated[
        str,
        typer.Option(
            help="Where to score: local (this machine, Arrow in chunks) or spark (Spark executors; "
            "master from --master or compute.spark.master)."
        ),
    ] = "local",
    master: Annotated[
        str | None,
        typer.Option(
            "--master",
            help="Spark master for --engine spark: local[N], spark://host:port or sc://host:port "
            "(overrides compute.spark.master).",
        ),
    ] = None,
    chunk_rows: Annotated[
        int, typer.Option(min=1, help="Rows per chunk: memory grows with this, not with the file.")
    ] = DEFAULT_CHUNK_ROWS,
    spark_scorer: Annotated[
        str,
        typer.Option(
            "--spark-scorer",
            help="How --engine spark predicts: sql (a plain linear model as one Spark SQL expression, no "
            "Python workers), arrow (mapInArrow in Python workers, any model) or auto (sql when possible).",
        ),
    ] = "auto",
) -> None:
    """Score a whole file with a model: same predictions as `vintage serve` gives for the same rows.

    The output is written to a temporary file next to it and renamed at the end: a bad row fails the
    job before anything replaces --output.
    """
    from vintage.errors import ConfigError
    from vintage.scoring import ScoreJob, check_paths, get_engine

    # an unknown or unavailable engine, bad options or bad paths fail before the model is fetched
    run = get_engine(engine)
    spark = _spark_spec(model, master) if engine == "spark" else None
    if master is not None and engine != "spark":
        raise ConfigError("--master applies to --engine spark only", hint="add --engine spark")
    if spark_scorer not in ("auto", "sql", "arrow"):
        raise ConfigError(f"unknown --spark-scorer {spark_scorer!r}", hint="use auto, sql or arrow")
    if spark_scorer != "auto" and engine != "spark":
        raise ConfigError("--spark-scorer applies to --engine spark only", hint="add --engine spark")
    check_paths(input_path, output_path, chunk_rows)
    model_dir = local_model_dir(model, reader="cli:score")
    console = state.err()
    with _progress_sink(console) as sink:
        result = run(ScoreJob(model_dir, input_path, output_path, chunk_rows, spark, spark_scorer), sink)
    console.print(
        f"scored {result.rows:,} rows in {result.seconds:.2f} s ({result.rows_per_second:,.0f} rows/s) "
        f"-> {result.output}"
    )
    details = result.details
    if details.get("scorer") == "sql":  # the Spark engine without Python workers
        console.print(
            f"spark {details['master']}: {details['partitions']} partitions, scored in Spark SQL "
            "(the linear model as one expression; no Python workers)"
        )
    if "model_loads" in details:  # the Spark engine: where the rows were scored
        console.print(
            f"spark {details['master']}: {details['partitions']} partitions, {details['batches']} batches, "
            f"model loaded {details['model_loads']} times in {details['workers']} Python workers"
        )


def _spark_spec(model: str, master: str | None) -> SparkSpec:
    """``compute.spark`` of vintage.yaml with --master applied (validated like the config file).

    Without a vintage.yaml, a model given as a directory scores on Spark's defaults (``local[*]``).
    """
    from pydantic import ValidationError

    from vintage.config.models import SparkSpec
    from vintage.errors import ConfigError

    try:
        base = state.load().compute.spark
    except ConfigError:
        if not Path(model).is_dir():
            raise
        base = SparkSpec()
    if master is None:
        return base
    try:
        return SparkSpec.model_validate({**base.model_dump(), "master": master})
    except ValidationError:
        raise ConfigError(
            f"--master {master!r} is not a Spark master",
            hint="masters: local, local[N], local[*], spark://host:port, sc://host:port",
        ) from None


class _RichSink:
    """Progress bar on stderr: rows scored, out of the total when the input tells it (Parquet)."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._task: TaskID | None = None

    def start(self, total: int | None) -> None:
        if self._task is not None:  # the engine restarted (a CSV column re-read as text)
            self._progress.remove_task(self._task)
        self._task = self._progress.add_task("scoring", total=total)

    def advance(self, rows: int) -> None:
        if self._task is not None:
            self._progress.advance(self._task, rows)


@contextmanager
def _progress_sink(console: Console) -> Iterator[_RichSink | None]:
    """A progress sink drawing on ``console``, or None when it is not a terminal (CI logs, pipes)."""
    if not console.is_terminal:
        yield None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rows"),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    with progress:
        yield _RichSink(progress)
