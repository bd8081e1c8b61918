"""Spark MLlib trainer: each grid point is one MLlib fit distributed by Spark itself (data that does not
fit one machine).

Spark reads the data (the packaged CSV, or the user's CSV/Parquet file or Parquet directory), a
``VectorAssembler`` builds the feature vector, the estimator (``pyspark.ml.regression.LinearRegression``)
is fitted on ``randomSplit``'s train part and scored on the holdout part. The fitted linear model is
exported as a plain ``sklearn.linear_model.LinearRegression`` with the same coefficients and intercept
(predictions are ``X @ w + b`` in both), so MLflow's sklearn/pyfunc flavours, ``vintage serve`` (its
linear fast path) and ``vintage score`` load it without Spark; the native Spark model is kept next to it
as the run's ``spark-model`` artifact. Points run one after the other on the driver.

PySpark is imported inside the functions only: nothing here loads it at import time.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vintage.config.models import MLLIB_RESERVED, estimator_param_names, import_estimator, is_mllib
from vintage.errors import DataError, Interrupted, SparkError, first_line
from vintage.training.fit import FitResult

if TYPE_CHECKING:
    from vintage.config.models import DataSpec, SparkSpec
    from vintage.training.grid import GridPoint

__all__ = [
    "SPARK_ARTIFACT",
    "MllibExecutor",
    "fit_mllib",
    "holdout_frame",
    "is_mllib",
    "mllib_param_names",
    "read_frame",
    "split_frame",
    "to_sklearn",
]

log = logging.getLogger(__name__)

SPARK_ARTIFACT = "spark-model"  # artifact path of the native Spark model in each run
_FEATURES_COL = "features"
_LABEL_COL = "label"


def mllib_param_names(class_path: str) -> set[str]:
    """The parameters a user may set on an MLlib estimator (its ``Param`` names, less vintage's columns)."""
    return estimator_param_names(import_estimator(class_path))


def read_frame(spark: Any, data: DataSpec) -> Any:
    """Read ``data``'s source with Spark: features and target only, cast to double.

    Raises:
        DataError: the file is missing, unreadable, or lacks columns (all named).
    """
    from pyspark.sql import functions as sf

    if data.dataset is not None:
        from vintage.data.packaged import packaged_path

        path, fmt, sep = packaged_path(data.dataset), "csv", ";"
    else:
        assert data.path is not None  # guaranteed by DataSpec
        path = data.path
        from vintage.data.load import data_kind, sniff_separator

        fmt = data_kind(path)  # refuses a device, FIFO or socket before Spark opens it
        sep = sniff_separator(path) if fmt == "csv" else ","
    try:
        reader = spark.read
        frame = (
            reader.parquet(str(path))
            if fmt == "parquet"
            else reader.option("header", "true").option("sep", sep).csv(str(path))
        )
        columns = set(frame.columns)
    except Exception as exc:
        raise DataError(f"Spark cannot read {path.name}: {first_line(exc, 200)}") from exc
    wanted = [*data.features, data.target]
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise DataError(
            f"{path.name} has no column(s) {missing}",
            hint="check data.features and data.target in vintage.yaml",
        )
    return frame.select(*[sf.col(f"`{c}`").cast("double").alias(c) for c in wanted])


def fit_mllib(
    spark: Any,
    frame: Any,
    features: Sequence[str],
    target: str,
    class_path: str,
    params: dict[str, Any],
    test_size: float,
    seed: int,
) -> tuple[Any, dict[str, float], float]:
    """Fit the MLlib estimator on the train part of ``randomSplit`` and score the holdout part.

    Returns:
        The fitted Spark model, holdout metrics (``rmse``, ``mae``, ``r2``) and the wall seconds.
    """
    del spark  # the frame carries its session; kept in the signature for symmetry with read_frame
    import math

    started = time.perf_counter()
    cls = import_estimator(class_path)
    train, test = split_frame(frame, features, target, test_size, seed)
    estimator = cls(**params, featuresCol=_FEATURES_COL, labelCol=_LABEL_COL)
    model = estimator.fit(train)
    metrics = _evaluate(model, test)
    bad = [k for k, v in metrics.items() if not math.isfinite(v)]
    if bad:
        raise ValueError(f"the model's holdout {', '.join(bad)} is not finite (NaN/infinite predictions)")
    return model, metrics, time.perf_counter() - started


def split_frame(
    frame: Any, features: Sequence[str], target: str, test_size: float, seed: int
) -> tuple[Any, Any]:
    """The trainer's train/holdout split: ``features`` assembled into one vector column, the target as
    ``label``, then ``randomSplit([1 - test_size, test_size], seed)``.

    ``randomSplit`` sorts each partition by every column before sampling, so the rows it picks depend on
    these exact columns: the champion gate takes its holdout from here too (:func:`holdout_frame`).
    """
    from pyspark.ml.feature import VectorAssembler

    assembler = VectorAssembler(inputCols=list(features), outputCol=_FEATURES_COL)
    data = assembler.transform(frame).select(_FEATURES_COL, frame[f"`{target}`"].alias(_LABEL_COL))
    train, test = data.randomSplit([1.0 - test_size, test_size], seed=seed)
    return train, test


def holdout_frame(frame: Any, features: Sequence[str], target: str, test_size: float, seed: int) -> Any:
    """The holdout rows of :func:`split_frame` (the ones a fit was scored on) as plain double columns
    ``features`` and ``target`` again, for scoring an exported model with Spark SQL."""
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as sf

    _, test = split_frame(frame, features, target, test_size, seed)
    values = vector_to_array(sf.col(_FEATURES_COL))
    return test.select(
        *[values[i].alias(name) for i, name in enumerate(features)], sf.col(_LABEL_COL).alias(target)
    )


def _evaluate(model: Any, test: Any) -> dict[str, float]:
    evaluate = getattr(model, "evaluate", None)
    if callable(evaluate):  # LinearRegressionModel: all three metrics in one pass over the holdout
        summary = evaluate(test)
        return {
            "rmse": float(summary.rootMeanSquaredError),
            "mae": float(summary.meanAbsoluteError),
            "r2": float(summary.r2),
        }
    from pyspark.ml.evaluation import RegressionEvaluator

    predictions = model.transform(test).cache()
    try:
        return {
            name: float(RegressionEvaluator(labelCol=_LABEL_COL, metricName=name).evaluate(predictions))
            for name in ("rmse", "mae", "r2")
        }
    finally:
        predictions.unpersist()


def to_sklearn(spark_model: Any, features: Sequence[str]) -> Any:
    """A fitted ``sklearn.linear_model.LinearRegression`` predicting exactly what ``spark_model`` does.

    Raises:
        ValueError: the Spark model is not linear (no ``coefficients``/``intercept``).
    """
    import numpy as np
    from sklearn.linear_model import LinearRegression

    coefficients = getattr(spark_model, "coefficients", None)
    intercept = getattr(spark_model, "intercept", None)
    if coefficients is None or intercept is None:
        raise ValueError(
            f"{type(spark_model).__name__} has no coefficients/intercept: only linear MLlib models "
            "can be exported for serving"
        )
    coef = np.asarray(coefficients.toArray(), dtype=np.float64)
    if coef.shape != (len(features),):
        raise ValueError(f"the Spark model has {coef.size} coefficients for {len(features)} features")
    model = LinearRegression()
    model.coef_ = coef
    model.intercept_ = float(intercept)
    model.n_features_in_ = len(features)
    model.feature_names_in_ = np.asarray(list(features), dtype=object)
    return model


def _effective_params(estimator_or_model: Any) -> dict[str, Any]:
    return {
        p.name: v
        for p, v in estimator_or_model.extractParamMap().items()
        if p.name not in MLLIB_RESERVED and v is not None
    }


class MllibExecutor:
    """Fits MLlib grid points one after the other on the driver; each fit is distributed by Spark.

    Same interface as :class:`~vintage.training.executor.LocalExecutor`. ``artifact_dirs`` maps a grid
    index to the directory holding its saved Spark model (removed by :meth:`close`).
    """

    def __init__(self, points: Sequence[GridPoint], data: DataSpec, spark: SparkSpec) -> None:
        self._points = list(points)
        self._data = data
        self._spec = spark
        self._session: Any = None
        self._tmp: Path | None = None
        self.artifact_dirs: dict[int, str] = {}

    @property
    def n_jobs(self) -> int:
        """One point at a time (Spark parallelises inside each fit)."""
        return 1

    def start(self) -> None:
        """Create (or reuse) the Spark session."""
        from vintage.compute.spark import session

        self._session = session(self._spec, app_name="vintage-mllib")

    def results(self, stop: threading.Event | None = None) -> Iterator[FitResult]:
        """Fit and yield each point in grid order.

        Raises:
            DataError: Spark cannot read the data.
            Interrupted: ``stop`` was set.
        """
        if self._session is None:
            self.start()
        spark = self._session
        frame = read_frame(spark, self._data)
        self._tmp = Path(tempfile.mkdtemp(prefix="vintage-mllib-"))
        features = list(self._data.features)
        split = self._data.split
        for point in self._points:
            if stop is not None and stop.is_set():
                raise Interrupted(
                    "training interrupted; unfinished runs are marked KILLED, nothing registered"
                )
            yield self._fit_one(spark, frame, features, point, split.test_size, split.seed)

    def _fit_one(
        self, spark: Any, frame: Any, features: list[str], point: GridPoint, test_size: float, seed: int
    ) -> FitResult:
        started = time.perf_counter()
        try:
            model, metrics, seconds = fit_mllib(
                spark, frame, features, self._data.target, point.class_path, point.params, test_size, seed
            )
            exported = to_sklearn(model, features)
            assert self._tmp is not None
            where = self._tmp / f"point-{point.index}"
            model.write().overwrite().save(str(where))
            if where.is_dir():  # over Spark Connect the server writes it, on its own file system
                self.artifact_dirs[point.index] = str(where)
            else:
                log.warning(
                    "point %d: the Spark model was saved on the Spark Connect server's file system, "
                    "not here: the run has no %s artifact",
                    point.index,
                    SPARK_ARTIFACT,
                )
            return FitResult(point.index, metrics, exported, _effective_params(model), seconds=seconds)
        except Exception as exc:
            if _session_dead(exc):
                raise SparkError(
                    f"the Spark MLlib job failed on {self._spec.master}: {first_line(exc, 200)}",
                    hint="--verbose shows the Spark error",
                ) from exc
            headline = f"{exc.__class__.__name__}: {first_line(exc, 500)}"
            return FitResult(
                point.index,
                error=headline[:500],
                error_detail=traceback.format_exc()[-4000:],
                seconds=time.perf_counter() - started,
            )

    def close(self, kill: bool = False) -> None:
        """Remove the saved Spark models; cancel running jobs when ``kill``."""
        if kill and self._session is not None:
            with contextlib.suppress(Exception):  # best effort on the way out (Connect has no sparkContext)
                self._session.sparkContext.cancelAllJobs()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


def _session_dead(exc: Exception) -> bool:
    """True when the error means Spark itself is gone (no point trying the next grid point)."""
    text = str(exc)
    return "SparkContext was shut down" in text or "Py4JNetworkError" in type(exc).__name__


def check_mllib_spec(class_paths: Sequence[str], engine: str) -> bool:
    """True when the estimators are MLlib ones (all of them) and the engine can run them.

    Raises:
        ValueError: MLlib and scikit-learn estimators are mixed, or the engine is not ``spark``.
    """
    mllib = [p for p in class_paths if is_mllib(p)]
    if not mllib:
        return False
    if len(mllib) != len(class_paths):
        raise ValueError(
            "a grid cannot mix Spark MLlib estimators with scikit-learn ones "
            f"(MLlib: {', '.join(sorted(set(mllib)))}); train them as separate workloads"
        )
    if engine != "spark":
        raise ValueError(
            f"Spark MLlib estimators ({', '.join(sorted(set(mllib)))}) need compute.engine spark, "
            f"not {engine}"
        )
    return True
