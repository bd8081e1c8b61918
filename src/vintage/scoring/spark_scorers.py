"""The Spark engine's scorers: how the rows of a DataFrame get their ``prediction``.

- ``sql`` (:func:`linear_expression`): a plain linear model as one Spark SQL expression, evaluated by
  generated JVM code; no Python worker. The same ordered sum as the local engine and the scoring server
  (:meth:`vintage.model.load.LinearParams.terms`): bit-identical predictions.
- ``arrow`` (:class:`_Scorer` through ``mapInArrow``): any model, in the executors' Python workers. The
  model directory's files travel as a broadcast (inside the function on Spark Connect) and each Python
  worker loads them once (:func:`cached_model`, a module-level cache keyed by the files' digest: Spark
  reuses its Python workers across tasks). Each output batch carries three hidden bookkeeping columns
  (worker pid, batch id, the worker's load count) that the driver sums up.

:mod:`vintage.scoring.spark` reads the input, checks it, and writes the one output file around these.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from vintage.errors import DataError
from vintage.scoring import DEFAULT_CHUNK_ROWS, PREDICTION

if TYPE_CHECKING:
    import pyarrow as pa

    from vintage.model.load import LinearParams, LoadedModel

AUTO: Final = "auto"
SQL: Final = "sql"
ARROW: Final = "arrow"
SCORERS: Final = (AUTO, SQL, ARROW)
PID: Final = "__vintage_pid"
BATCH: Final = "__vintage_batch"
LOADS: Final = "__vintage_loads"

# Executor side: models loaded in this Python worker (digest -> model) and how many loads each took.
_MODELS: dict[str, LoadedModel] = {}
_LOADS: dict[str, int] = {}
_BATCHES: list[int] = [0]


def quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def score_frame(
    frame: Any,
    model: LoadedModel,
    model_dir: Path,
    scorer: str = SQL,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    source: str = "the input",
) -> Any:
    """``frame`` (features as double, any other columns) with ``prediction`` appended: the engine's core.

    ``scorer`` is ``sql`` or ``arrow`` (:func:`choose_scorer` resolves ``auto``). The ``arrow`` scorer
    appends the hidden bookkeeping columns too (worker pid, batch id, the worker's model loads).
    """
    from pyspark.sql import functions as F  # noqa: N812 - the usual alias

    if scorer == SQL:
        if model.linear is None:
            raise ValueError("the sql scorer needs a plain linear model")
        prediction = linear_expression(model.linear, model.info.columns).alias(PREDICTION)
        return frame.select(*[F.col(quote(name)) for name in frame.columns], prediction)
    files = model_files(model_dir)
    spark = frame.sparkSession
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(chunk_rows))
    function = _Scorer(_ship(spark, files), files_digest(files), model.info.columns, source)
    return frame.mapInArrow(function, _output_schema(frame))


def choose_scorer(wanted: str, model: LoadedModel) -> str:
    """``sql`` for a plain linear model unless ``arrow`` is asked for; ``arrow`` for every other model.

    Raises:
        ConfigError: ``sql`` was asked for a model that is not a plain linear model, or an unknown name.
    """
    from vintage.errors import ConfigError

    if wanted not in SCORERS:
        raise ConfigError(f"unknown Spark scorer {wanted!r}", hint=f"use one of {', '.join(SCORERS)}")
    if wanted == ARROW or (wanted == AUTO and model.linear is None):
        return ARROW
    if model.linear is None:
        raise ConfigError(
            "--spark-scorer sql needs a plain linear model (LinearRegression, ElasticNet, Ridge, Lasso, ...)",
            hint="use --spark-scorer auto or arrow: other models are scored in Python workers",
        )
    return SQL


def linear_expression(params: LinearParams, features: Sequence[str]) -> Any:
    """The Spark SQL column ``intercept + c1 * x1 + c2 * x2 + ...`` (:meth:`LinearParams.terms`).

    Spark evaluates ``+`` left to right on doubles with one rounding per operation (Java has no fused
    multiply-add unless asked for, and Catalyst reorders only integral sums), the very order and rounding
    of the local engine's NumPy loop: the predictions are bit-identical.
    """
    from pyspark.sql import functions as F  # noqa: N812

    expression = F.lit(float(params.intercept))
    for j, coefficient in params.terms():
        expression = expression + F.lit(coefficient) * F.col(quote(features[j]))
    return expression


def _output_schema(frame: Any) -> Any:
    from pyspark.sql.types import DoubleType, LongType, StructField, StructType

    return StructType(
        [
            *frame.schema.fields,
            StructField(PREDICTION, DoubleType(), False),
            StructField(PID, LongType(), False),
            StructField(BATCH, LongType(), False),
            StructField(LOADS, LongType(), False),
        ]
    )


# --- shipping the model ------------------------------------------------------------------------------


def model_files(model_dir: Path) -> dict[str, bytes]:
    """Every file of a model directory, by path relative to it."""
    return {
        str(file.relative_to(model_dir)): file.read_bytes()
        for file in sorted(model_dir.rglob("*"))
        if file.is_file()
    }


def files_digest(files: dict[str, bytes]) -> str:
    """SHA-256 over the names and contents of a model directory's files."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return digest.hexdigest()


def _ship(spark: Any, files: dict[str, bytes]) -> Callable[[], dict[str, bytes]]:
    """A picklable function returning the files in an executor: a broadcast, or the bytes themselves."""
    try:
        broadcast = spark.sparkContext.broadcast(files)
    except Exception:  # Spark Connect: no SparkContext; the files travel inside the function
        return _Embedded(files)
    return _Broadcast(broadcast)


class _Embedded:
    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files

    def __call__(self) -> dict[str, bytes]:
        return self.files


class _Broadcast:
    def __init__(self, broadcast: Any) -> None:
        self.broadcast = broadcast

    def __call__(self) -> dict[str, bytes]:
        files: dict[str, bytes] = self.broadcast.value
        return files


def cached_model(digest: str, files: Callable[[], dict[str, bytes]]) -> LoadedModel:
    """The model with ``digest`` loaded in this process: loaded (and counted) only the first time."""
    model = _MODELS.get(digest)
    if model is not None:
        return model
    from vintage.model.load import load_model_dir

    tmp = Path(tempfile.mkdtemp(prefix="vintage-model-"))
    keep_code = False
    try:
        for name, data in files().items():
            target = Path(tmp, name)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        model = load_model_dir(tmp)  # fully in memory once loaded: the files can go ...
        keep_code = bool(model.info.code)
    finally:
        _remove_but_code(tmp, keep_code)
    _MODELS[digest] = model
    _LOADS[digest] = _LOADS.get(digest, 0) + 1
    return model


def _remove_but_code(tmp: Path, keep_code: bool) -> None:
    """... except the model's shipped ``code/`` folder: it stays on the import path for the worker's life
    (a module the model imports only when it predicts is read from there), removed when the worker exits."""
    import atexit
    import shutil

    if not keep_code:
        shutil.rmtree(tmp, ignore_errors=True)
        return
    for entry in tmp.iterdir():
        if entry.name == "code":
            continue
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)


class _Scorer:
    """The ``mapInArrow`` function: input batch + prediction + the hidden columns, row order kept.

    A module-level class (pickled by reference, unlike a closure) so that the executor uses this
    module's own ``_MODELS``/``_LOADS`` cache, shared by every task the Python worker runs.
    """

    def __init__(
        self, files: Callable[[], dict[str, bytes]], digest: str, features: tuple[str, ...], source: str
    ) -> None:
        self.files = files
        self.digest = digest
        self.features = features
        self.source = source

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import numpy as np
        import pyarrow as pa

        from vintage.scoring import local

        model = cached_model(self.digest, self.files)
        pid = os.getpid()
        plan: Any = None
        for batch in batches:
            if batch.num_rows == 0:
                continue
            if plan is None:
                plan = local._plan(batch.schema, self.features, self.source)
            try:
                predictions = local.predict_batch(model, plan, batch, 0, self.source)
            except DataError:  # a bad feature value: the driver reports it from the job's metrics
                predictions = _predict_valid_rows(model, plan, batch, self.features, self.source)
            _BATCHES[0] += 1
            n = batch.num_rows
            yield pa.RecordBatch.from_arrays(
                [
                    *batch.columns,
                    pa.array(predictions),
                    pa.array(np.full(n, pid, dtype=np.int64)),
                    pa.array(np.full(n, (pid << 32) | _BATCHES[0], dtype=np.int64)),
                    pa.array(np.full(n, _LOADS[self.digest], dtype=np.int64)),
                ],
                names=[*batch.schema.names, PREDICTION, PID, BATCH, LOADS],
            )


def _predict_valid_rows(
    model: LoadedModel, plan: Any, batch: pa.RecordBatch, features: tuple[str, ...], source: str
) -> Any:
    """Predictions of the rows whose features are all finite; NaN for the others.

    Raises:
        DataError: the model failed on rows whose features are fine (that fails the Spark job).
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from vintage.scoring import local

    keep = pa.array(np.ones(batch.num_rows, dtype=bool))
    for name in features:
        finite = pc.fill_null(pc.is_finite(batch.column(name)), False)
        keep = pc.and_(keep, finite)
    mask = keep.to_numpy(zero_copy_only=False)
    predictions = np.full(batch.num_rows, np.nan)
    if mask.any():
        predictions[mask] = local.predict_batch(model, plan, batch.filter(keep), 0, source)
    return predictions
