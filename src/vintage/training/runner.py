"""Train the whole grid: submit points to the executor, open the tracking session while they train,
log each finished point as its own MLflow run under one parent run."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from vintage.errors import ConfigError, TrainingError, first_line
from vintage.secrets.access import SecretReader, has_refs
from vintage.training import track
from vintage.training.fit import EXAMPLE_ROWS, SERIALIZED_FORMATS
from vintage.training.grid import GridPoint, expand_grid, training_key

if TYPE_CHECKING:
    from pathlib import Path

    from vintage.config import Spec
    from vintage.data import Dataset
    from vintage.tracking import TrackingSession
    from vintage.training.fit import FitResult


@dataclass
class PointRun:
    """One grid point's MLflow run, as reported to people and to selection."""

    index: int
    run_id: str
    name: str
    estimator: str
    params: dict[str, Any]
    status: str  # FINISHED | FAILED
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0
    model_uri: str | None = None
    training_key: str | None = None


@dataclass
class TrainingReport:
    """Outcome of one training: the parent run and every point's run."""

    experiment_id: str
    parent_run_id: str
    data_digest: str
    data_source: str
    n_jobs: int
    runs: list[PointRun]
    evaluation_files: dict[int, dict[str, bytes]] = field(default_factory=dict, repr=False)
    """Each finished point's evaluation files (plots, importances), by grid index: the chosen point's
    go to the parent run once selection has chosen it (:func:`log_chosen_files`)."""

    @property
    def failed(self) -> list[PointRun]:
        """Runs that crashed."""
        return [r for r in self.runs if r.status != "FINISHED"]


OnPoint = Callable[[PointRun], None]


class GridExecutor(Protocol):
    """Runs grid points somewhere (local processes, Spark tasks) and yields their results."""

    @property
    def n_jobs(self) -> int: ...

    def start(self) -> None: ...

    def results(self, stop: threading.Event | None = None) -> Iterator[FitResult]: ...

    def close(self, kill: bool = False) -> None: ...


class ComputeEngine(Protocol):
    """A row of :data:`vintage.plugins.COMPUTE_ENGINES` (``compute.engine``): builds the executor."""

    def from_spec(
        self,
        spec: Spec,
        points: Sequence[GridPoint],
        init_args: tuple[Any, ...],
        *,
        n_jobs: int | None,
        protect: Sequence[str],
    ) -> GridExecutor: ...


def train_grid(
    spec: Spec,
    dataset: Dataset,
    open_session: Callable[[], TrackingSession],
    *,
    n_jobs: int | None = None,
    project_dir: Path | None = None,
    on_point: OnPoint | None = None,
    stop: threading.Event | None = None,
    secrets: SecretReader | None = None,
) -> tuple[TrackingSession, TrainingReport]:
    """Train every grid point and log it.

    ``secrets`` resolves ``${secret:...}`` references in estimator parameters. Only the estimators see
    the values (the worker processes redact them from their own output too); MLflow params, run names,
    training keys and the saved models keep the references.

    Training starts before the tracking session is opened, so MLflow's import and store start-up
    overlap with the fits.

    Raises:
        TrainingError: every point failed.
        TrackingError: the tracking store is unreachable (from ``open_session``).
    """
    import sklearn

    points = expand_grid(spec)
    mllib = _uses_mllib(spec)
    if not mllib:  # a class whose module cannot ship with the model: refused before anything is fitted
        track.check_code([e.class_path for e in spec.estimators])
    test: Any = None
    init_args: tuple[Any, ...] = ()
    if not mllib:  # MLlib: Spark reads and splits the data; the driver never holds all of it
        if spec.selection.cv:  # each of the K folds of the training part scores at least 2 rows
            from vintage.data.load import check_split_size

            folds = spec.selection.cv
            check_split_size(
                dataset.n_rows,
                spec.data.split.test_size,
                dataset.source,
                min_train=2 * folds,
                why=f" for selection.cv = {folds} folds of 2 rows",
                setting="data.split.test_size or selection.cv",
            )
        split = spec.data.split
        train, test = dataset.split(split.test_size, split.seed, group_duplicates=split.group_duplicates)
    fit_points = points
    refs = any(has_refs(p.params) for p in points)
    if refs and secrets is not None:
        fit_points = [dataclasses.replace(p, params=secrets.resolve_data(p.params)) for p in points]
    if not mllib:
        # Workers send the model file's bytes back, unless a parameter holds a secret: the logging
        # process then puts the reference back into the model before it is saved.
        model_format = spec.training.model_format
        serialize = model_format if model_format in SERIALIZED_FORMATS and not refs else None
        init_args = (
            train,
            test,
            list(dataset.features),
            dataset.target,
            spec.selection.cv,
            split.seed,
            split.group_duplicates,
            serialize,
        )
    protect = tuple(secrets.values_read) if secrets is not None else ()
    executor: GridExecutor
    library_version = sklearn.__version__
    if mllib:
        import pyspark

        from vintage.training.mllib import MllibExecutor

        executor = MllibExecutor(fit_points, spec.data, spec.compute.spark)
        library_version = f"pyspark-{pyspark.__version__}"
    else:
        from vintage.plugins import COMPUTE_ENGINES

        engine: ComputeEngine = COMPUTE_ENGINES.load(spec.compute.engine)
        executor = engine.from_spec(spec, fit_points, init_args, n_jobs=n_jobs, protect=protect)
    start_ms = track.now_ms()
    executor.start()
    try:
        session = open_session()
        runs = _log_all(
            stop,
            spec,
            dataset,
            session,
            points,
            executor,
            test,
            start_ms,
            project_dir,
            on_point,
            library_version,
        )
    finally:
        executor.close()
    report = TrainingReport(
        session.experiment_id,
        runs.parent_id,
        dataset.digest,
        dataset.source,
        executor.n_jobs,
        runs.runs,
        runs.files,
    )
    if not any(r.status == "FINISHED" for r in report.runs):
        first = report.runs[0].error if report.runs else "no grid points"
        raise TrainingError(
            f"all {len(report.runs)} grid points failed; first error: {first}",
            hint="see the FAILED runs in `vintage runs` (error tag, error.txt artifact); --verbose for more",
        )
    return session, report


TAG_SPLIT = "vintage.split"
TAG_DUPLICATE_GROUPS = "vintage.split.duplicate_groups"
TAG_DUPLICATE_ROWS = "vintage.split.duplicate_rows"
SPLIT_GROUPED = "duplicate-groups"
"""``vintage.split`` of a split that keeps exact duplicate rows on one side (holdout and CV folds)."""
SPLIT_ROWS = "rows"
"""``vintage.split`` of the tutorial's split of whole rows (``data.split.group_duplicates: false``)."""
SPLIT_MLLIB = "mllib-randomSplit"
"""``vintage.split`` of the Spark MLlib trainer (``randomSplit`` of rows: duplicates are not grouped)."""


def split_tags(spec: Spec, dataset: Dataset, *, mllib: bool) -> dict[str, str]:
    """The tags every run of a training carries about its split: which split (``vintage.split``) and,
    when the data is in memory, how many groups of exact duplicate rows it has and how many rows repeat
    another."""
    split = spec.data.split
    if mllib:
        return {TAG_SPLIT: SPLIT_MLLIB}
    from vintage.data.load import count_duplicates

    found = count_duplicates(dataset.frame)
    return {
        TAG_SPLIT: SPLIT_GROUPED if split.group_duplicates else SPLIT_ROWS,
        TAG_DUPLICATE_GROUPS: str(found.groups),
        TAG_DUPLICATE_ROWS: str(found.rows),
    }


def _uses_mllib(spec: Spec) -> bool:
    """True when the grid's estimators are Spark MLlib ones (see :mod:`vintage.training.mllib`).

    Raises:
        ConfigError: MLlib and scikit-learn estimators are mixed, the engine is not ``spark``, or
            ``selection.cv`` (MLlib points are scored on the holdout only) or ``training.refit`` is set.
    """
    from vintage.config.models import is_mllib

    paths = [e.class_path for e in spec.estimators]
    if not any(is_mllib(p) for p in paths):
        return False
    from vintage.training.mllib import check_mllib_spec

    try:
        check_mllib_spec(paths, spec.compute.engine)
    except ValueError as exc:
        raise ConfigError(str(exc), hint="set compute.engine: spark (or --engine spark)") from exc
    if spec.selection.cv:
        raise ConfigError(
            "selection.cv is not supported with Spark MLlib estimators (they are scored on the holdout)",
            hint="remove selection.cv",
        )
    if spec.training.refit:
        raise ConfigError(
            "training.refit is not supported with Spark MLlib estimators (the driver never holds the data)",
            hint="remove training.refit",
        )
    return True


TAG_REFIT_OF = "vintage.refit_of"
"""On a refit run: the grid point's run it refits (on every row, train and holdout)."""
TAG_REFIT_RUN = "vintage.refit_run_id"
"""On the grid's parent run: the refit run (``training.refit``), whose model is the one registered."""
ROLE_REFIT = "refit"


def refit_chosen(
    spec: Spec,
    dataset: Dataset,
    session: TrackingSession,
    report: TrainingReport,
    chosen: PointRun,
    *,
    project_dir: Path | None = None,
    secrets: SecretReader | None = None,
) -> PointRun:
    """Fit the chosen grid point again on every row (train and holdout) and log it as its own run under
    the grid's parent run (``training.refit``).

    The run is tagged ``vintage.role = refit`` and ``vintage.refit_of = <chosen run>``; it logs the
    point's parameters, ``fit_seconds`` and the model, but no holdout or CV metrics: it has seen every
    row, so it has none (the chosen run's figures are the estimate). Its training key differs from the
    chosen point's, so registration makes it a version of its own.

    Raises:
        TrainingError: the estimator fails to fit on all rows.
    """
    import sklearn
    from mlflow.data.pandas_dataset import from_pandas

    from vintage.config.estimators import loggable_params
    from vintage.training.fit import FitResult

    point = next(p for p in expand_grid(spec) if p.index == chosen.index)
    params = (
        secrets.resolve_data(point.params) if secrets is not None and has_refs(point.params) else point.params
    )
    frame, features = dataset.frame, list(dataset.features)
    started = track.now_ms()
    try:
        model = dataclasses.replace(point, params=params).build()
        model.fit(frame[features], frame[dataset.target])
    except Exception as exc:
        raise TrainingError(
            f"refitting {chosen.name} on all {len(frame)} rows failed: {exc.__class__.__name__}: "
            f"{first_line(exc, 300)}",
            hint="set training.refit: false in vintage.yaml to register the chosen run's model",
        ) from exc
    seconds = (track.now_ms() - started) / 1000
    result = FitResult(chosen.index, {}, model, loggable_params(model), seconds=seconds)
    refit = dataclasses.replace(point, label=f"{point.label} refit on all rows")
    split_info = split_tags(spec, dataset, mllib=False)
    tags = {**track.base_tags(track.git_commit(project_dir) if project_dir else None), **split_info}
    run_id = track.create_child(session, report.parent_run_id, refit, tags, started)
    session.client.set_tag(run_id, track.TAG_ROLE, ROLE_REFIT)
    session.client.set_tag(run_id, TAG_REFIT_OF, chosen.run_id)
    split = spec.data.split
    key = training_key(
        point, dataset.digest, split.test_size, split.seed, sklearn.__version__, split_mode="refit"
    )
    mlflow_ds = track.dataset_entity(
        from_pandas(
            frame,
            source=dataset.source_uri,
            targets=dataset.target,
            name=dataset.source,
            digest=dataset.digest,
        )
    )
    example = dataset.head(EXAMPLE_ROWS)[features]
    input_tags = {**split_info, TAG_REFIT_OF: chosen.run_id}  # every row: train and holdout
    run = _log_one(session, run_id, refit, result, mlflow_ds, example, spec, key, input_tags)
    if run.status != "FINISHED":
        raise TrainingError(
            f"logging the refit of {chosen.name} failed: {run.error}",
            hint="set training.refit: false in vintage.yaml to register the chosen run's model",
        )
    session.client.set_tag(report.parent_run_id, TAG_REFIT_RUN, run.run_id)
    return run


def log_chosen_files(session: TrackingSession, report: TrainingReport, chosen: PointRun) -> None:
    """Log the chosen point's evaluation files (plots, importances) on the parent run as well, so the
    grid's run shows the model it produced."""
    track.log_evaluation_files(session, report.parent_run_id, report.evaluation_files.get(chosen.index, {}))


@dataclass
class _Logged:
    parent_id: str
    runs: list[PointRun]
    files: dict[int, dict[str, bytes]]


def _log_all(
    stop: threading.Event | None,
    spec: Spec,
    dataset: Dataset,
    session: TrackingSession,
    points: list[GridPoint],
    executor: GridExecutor,
    test: Any,
    start_ms: int,
    project_dir: Path | None,
    on_point: OnPoint | None,
    sklearn_version: str,
) -> _Logged:
    from mlflow.data.pandas_dataset import from_pandas

    client = session.client
    split_info = split_tags(spec, dataset, mllib=test is None)
    tags = {**track.base_tags(track.git_commit(project_dir) if project_dir else None), **split_info}
    parent = client.create_run(
        session.experiment_id,
        start_time=start_ms,
        run_name=f"grid {len(points)} point{'s' if len(points) != 1 else ''}",
        tags={
            **tags,
            track.TAG_ROLE: "grid",
            track.TAG_DATA_DIGEST: dataset.digest,
            "vintage.engine": spec.compute.engine
            + (f" {spec.compute.spark.master}" if spec.compute.engine == "spark" else ""),
        },
    )
    parent_id = str(parent.info.run_id)
    child_ids: dict[int, str] = {}
    runs: dict[int, PointRun] = {}
    files: dict[int, dict[str, bytes]] = {}
    try:
        for p in points:
            child_ids[p.index] = track.create_child(session, parent_id, p, tags, start_ms)
        if test is None:  # MLlib: metadata only (no pandas copy of the data), example = first rows
            mlflow_ds = track.dataset_entity(track.dataset_metadata(dataset))
            example = dataset.head(EXAMPLE_ROWS)[list(dataset.features)]
        else:
            mlflow_ds = track.dataset_entity(
                from_pandas(
                    dataset.frame,
                    source=dataset.source_uri,
                    targets=dataset.target,
                    name=dataset.source,
                    digest=dataset.digest,
                )
            )
            # The rows whose predictions each worker sends back (FitResult.example_output).
            example = test[list(dataset.features)].head(EXAMPLE_ROWS).reset_index(drop=True)
        split = spec.data.split
        mode = "grouped" if split.group_duplicates and test is not None else ""
        by_index = {p.index: p for p in points}
        for result in executor.results(stop):
            point = by_index[result.index]
            key = training_key(
                point, dataset.digest, split.test_size, split.seed, sklearn_version, split_mode=mode
            )
            run = _log_one(
                session, child_ids[point.index], point, result, mlflow_ds, example, spec, key, split_info
            )
            saved = getattr(executor, "artifact_dirs", {}).get(point.index)
            if saved and run.status == "FINISHED":  # MLlib: the native Spark model next to the export
                client.log_artifacts(run.run_id, saved, "spark-model")
            where = getattr(executor, "executors", {}).get(point.index)
            if where:  # Spark: the executor (id/pid) that fitted this point
                client.set_tag(run.run_id, "vintage.executor", where)
            runs[point.index] = run
            if run.status == "FINISHED" and result.artifacts:
                files[point.index] = result.artifacts
            if on_point:
                on_point(run)
    except BaseException:
        # Interrupted (Ctrl-C) or the store failed: leave no run RUNNING forever.
        for idx, rid in child_ids.items():
            if idx not in runs:
                client.set_terminated(rid, "KILLED")
        client.set_terminated(parent_id, "KILLED")
        raise
    finished = [r.metrics for r in runs.values() if r.status == "FINISHED"]
    track.log_grid_summary(session, parent_id, finished, len(points))
    status = "FINISHED" if finished else "FAILED"
    client.set_terminated(parent_id, status)
    return _Logged(parent_id, [runs[i] for i in sorted(runs)], files)


def _log_one(
    session: TrackingSession,
    run_id: str,
    point: GridPoint,
    result: FitResult,
    dataset: Any,
    example: Any,
    spec: Spec,
    key: str,
    input_tags: dict[str, str],
) -> PointRun:
    run = PointRun(
        point.index,
        run_id,
        point.run_name,
        point.class_path,
        dict(point.grid_params),
        "FAILED",
        seconds=result.seconds,
    )
    if not result.ok:
        track.log_failure(session, run_id, point, result)
        run.error = result.error
        return run
    from mlflow.exceptions import MlflowException

    try:
        run.model_uri = track.log_success(
            session,
            run_id,
            point,
            result,
            dataset=dataset,
            example=example,
            model_format=spec.training.model_format,
            key=key,
            input_tags=input_tags,
        )
    except MlflowException as exc:  # e.g. the model cannot be serialised in the chosen format
        result.error = f"logging the model failed: {first_line(exc)}"
        track.log_failure(session, run_id, point, result)  # (params are logged last, with the metrics)
        run.error = result.error
        return run
    run.status, run.metrics, run.training_key = "FINISHED", dict(result.metrics), key
    return run
