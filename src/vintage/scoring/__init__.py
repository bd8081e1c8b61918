"""Batch scoring: a model over a whole CSV or Parquet file, one engine per way of running it.

An engine is a function ``score_file(job, progress=None) -> ScoreResult`` named in the plug-in table
:data:`vintage.plugins.SCORING_ENGINES` as ``"module:function"`` and imported only when asked for
(:func:`get_engine`), so ``vintage --help``
never pays for pyarrow or Spark. The local engine (:mod:`vintage.scoring.local`) streams the file
through Arrow in chunks on this machine; the Spark engine (:mod:`vintage.scoring.spark`) reads the file
with Spark and predicts in the executors' Python workers (``mapInArrow``), the model loaded once per worker.

Every engine predicts with :func:`vintage.model.load.load_model_dir` (the scoring server's loader),
so a row gets the same prediction from ``vintage score`` as from ``vintage serve``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

from vintage.errors import ConfigError, DataError
from vintage.plugins import SCORING_ENGINES

if TYPE_CHECKING:
    from vintage.config.models import SparkSpec

DEFAULT_CHUNK_ROWS: Final = 131_072
PREDICTION: Final = "prediction"
PARQUET_SUFFIXES: Final = frozenset({".parquet", ".pq"})
CSV_INPUT_SUFFIXES: Final = frozenset({".csv", ".txt", ".tsv"})
CSV_OUTPUT_SUFFIXES: Final = frozenset({".csv"})


class ProgressSink(Protocol):
    """Receives progress from an engine (the CLI draws a bar with it)."""

    def start(self, total: int | None) -> None:
        """Scoring begins; ``total`` is the number of rows when known (Parquet), else None."""

    def advance(self, rows: int) -> None:
        """``rows`` more rows were scored and written."""


@dataclass(frozen=True)
class ScoreJob:
    """One batch-scoring job.

    Attributes:
        model_dir: A local MLflow model directory (already materialised).
        input: CSV (comma, semicolon or tab separated, header line) or Parquet file.
        output: ``.csv`` or ``.parquet``/``.pq`` file; written only if every row scored.
        chunk_rows: Rows per chunk: memory use grows with this, not with the file. The Spark engine
            uses it as the Arrow batch size of its executors (``maxRecordsPerBatch``).
        spark: Where the Spark engine runs (``compute.spark``); None = ``local[*]``. Ignored by the
            local engine.
        spark_scorer: How the Spark engine predicts: ``sql`` (a plain linear model as a Spark SQL
            expression: no Python workers), ``arrow`` (``mapInArrow`` in Python workers, any model) or
            ``auto`` (``sql`` when the model allows it). Ignored by the local engine.
    """

    model_dir: Path
    input: Path
    output: Path
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    spark: SparkSpec | None = None
    spark_scorer: str = "auto"


@dataclass(frozen=True)
class ScoreResult:
    """What a finished job did."""

    rows: int
    seconds: float
    output: Path
    engine: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def rows_per_second(self) -> float:
        """Throughput over the whole job (model loading and I/O included)."""
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


Engine = Callable[[ScoreJob, ProgressSink | None], ScoreResult]


def get_engine(name: str) -> Engine:
    """The ``score_file`` function of engine ``name`` (:data:`vintage.plugins.SCORING_ENGINES`), imported now.

    Raises:
        ConfigError: the engine is unknown.
    """
    engine: Engine = SCORING_ENGINES.load(name)
    return engine


def check_paths(input_path: Path, output: Path, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> tuple[str, str]:
    """Check a job's paths and options before anything is loaded; the input and output formats.

    Returns:
        ``(input_format, output_format)``, each ``"csv"`` or ``"parquet"``.

    Raises:
        ConfigError: unknown extension, input and output are the same file, the output directory does
            not exist, the output is a directory, or ``chunk_rows`` < 1.
        DataError: the input file does not exist.
    """
    if chunk_rows < 1:
        raise ConfigError(f"--chunk-rows must be at least 1, got {chunk_rows}")
    in_fmt = _format(input_path, CSV_INPUT_SUFFIXES, "input", ".csv, .txt, .tsv, .parquet or .pq")
    out_fmt = _format(output, CSV_OUTPUT_SUFFIXES, "output", ".csv, .parquet or .pq")
    if not input_path.is_file():
        raise DataError(f"input file not found: {input_path}", hint="check the --input path")
    if output.resolve() == input_path.resolve() or (output.exists() and output.samefile(input_path)):
        raise ConfigError(
            f"--input and --output are the same file ({input_path})",
            hint="write the predictions to a new file; the input is never overwritten",
        )
    if output.is_dir():
        raise ConfigError(f"--output {output} is a directory", hint="give a file name")
    if not output.parent.is_dir():
        raise ConfigError(
            f"output directory {output.parent} does not exist", hint="create it first, or fix --output"
        )
    return in_fmt, out_fmt


def _format(path: Path, csv_suffixes: frozenset[str], which: str, allowed: str) -> str:
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    if suffix in csv_suffixes:
        return "csv"
    raise ConfigError(
        f"unsupported {which} file type {suffix or '(none)'!r} ({path.name})",
        hint=f"the {which} format follows the extension: {allowed}",
    )
