"""Log grid points to MLflow: one parent run per training, one child run per point."""

from __future__ import annotations

import contextlib
import functools
import getpass
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vintage import __version__
from vintage.redact import redact, redact_data
from vintage.training import code as shipped_code

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping, Sequence

    import pandas as pd
    from mlflow import MlflowClient

    from vintage.data import Dataset
    from vintage.tracking import TrackingSession
    from vintage.training.fit import FitResult
    from vintage.training.grid import GridPoint

TAG_PARENT = "mlflow.parentRunId"
TAG_RUN_NAME = "mlflow.runName"
TAG_GIT = "mlflow.source.git.commit"
TAG_VERSION = "vintage.version"
TAG_KEY = "vintage.training_key"
TAG_MODEL_URI = "vintage.model_uri"
TAG_ESTIMATOR = "vintage.estimator"
TAG_DATA_DIGEST = "vintage.data_digest"
TAG_ERROR = "vintage.error"
TAG_ROLE = "vintage.role"
TAG_GRID = "vintage.grid_params"
TAG_INDEX = "vintage.grid_index"
TAG_PLOT_ERROR = "vintage.evaluation_error"
TAG_CODE = "vintage.code_modules"


def now_ms() -> int:
    """Wall clock in milliseconds (MLflow's time unit)."""
    return int(time.time() * 1000)


def git_commit(directory: Path) -> str | None:
    """HEAD commit of the git work tree holding ``directory``, if any."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and len(commit) == 40 else None


def base_tags(commit: str | None) -> dict[str, str]:
    """Tags every vintage run carries."""
    tags = {
        TAG_VERSION: __version__,
        "mlflow.user": _user(),
        "mlflow.source.type": "LOCAL",
        "mlflow.source.name": "vintage",
    }
    if commit:
        tags[TAG_GIT] = commit
    return tags


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def create_child(
    session: TrackingSession, parent_id: str, point: GridPoint, tags: dict[str, str], start_ms: int
) -> str:
    """Create the (RUNNING) MLflow run of one grid point."""
    run = session.client.create_run(
        session.experiment_id,
        start_time=start_ms,
        run_name=point.run_name,
        tags={
            **tags,
            TAG_PARENT: parent_id,
            TAG_ESTIMATOR: point.class_path,
            TAG_ROLE: "grid-point",
            TAG_GRID: json.dumps(point.grid_params, default=str, sort_keys=True),
            TAG_INDEX: str(point.index),
        },
    )
    return str(run.info.run_id)


def log_success(
    session: TrackingSession,
    run_id: str,
    point: GridPoint,
    result: FitResult,
    *,
    dataset: Any,
    example: pd.DataFrame,
    model_format: str,
    key: str,
    input_tags: Mapping[str, str] | None = None,
) -> str:
    """Log params, metrics, dataset input and the model of a trained point; end the run FINISHED.

    ``input_tags`` go on the dataset input (beside ``mlflow.data.context``): how the data was split.

    Returns:
        The model URI (``models:/m-...``) of the logged model.
    """
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.models import infer_signature

    client = session.client
    # A parameter given as ${secret:...} is logged as the reference, never as the value.
    refs = {k: v for k, v in point.params.items() if isinstance(v, str) and "${secret:" in v}
    params = redact_data(
        {
            **{k: _param_value(v) for k, v in result.effective_params.items()},
            **refs,
            "estimator": point.estimator_text,
        }
    )
    model = result.model if result.model_bytes is None else SerializedModel(result.model_bytes)
    if refs and hasattr(model, "set_params"):  # (a worker sends no bytes for a point with references)
        # The saved model must not carry a resolved secret: put the references back before pickling.
        model.set_params(**refs)
    output = result.example_output
    if output is None:  # fitted elsewhere than fit_point (Spark MLlib, a refit): predict here
        output = model.predict(example)
    signature = infer_signature(example, output)
    log_evaluation_files(session, run_id, result.artifacts)
    if result.artifacts_error:
        client.set_tag(run_id, TAG_PLOT_ERROR, redact(result.artifacts_error))
    modules = result.modules if result.modules is not None else shipped_code.referenced_modules(model)
    code = shipped_code.plan_modules(modules)
    _log_input(session, run_id, dataset, tags=input_tags)
    with tempfile.TemporaryDirectory(prefix="vintage-code-") as staged, _pins_of_this_environment():
        # The logged model is created here, in the run's experiment (MLflow's Model.log would put it in
        # the active experiment: MLflow's default one when no run is active), with the run's params.
        logged = client.create_logged_model(
            experiment_id=session.experiment_id,
            name="model",
            source_run_id=run_id,
            params=params,
            tags=base_tags(None),
        )
        model_uri = _save_logged_model(
            client,
            run_id,
            logged,
            sk_model=model,
            signature=signature,
            input_example=example,
            pip_requirements=model_requirements(modules, model_format),
            serialization_format=model_format,
            skops_trusted_types=_skops_types(model) if model_format == "skops" else None,
            code_paths=shipped_code.stage(code, Path(staged)) if code else None,
        )
    # The params, the metrics (tagged with the logged model, as MLflow links a run's metrics to the model
    # it logs) and the run's own tags in one write; then the run ends.
    ts = now_ms()
    values = {**result.metrics, "fit_seconds": result.seconds}
    tags = {TAG_MODEL_URI: model_uri, TAG_KEY: key}
    if code:
        tags[TAG_CODE] = ",".join(code.modules)
    client.log_batch(
        run_id,
        params=[Param(k, v) for k, v in params.items()],
        metrics=[Metric(k, v, ts, 0, model_id=logged.model_id) for k, v in values.items()],
        tags=[RunTag(k, v) for k, v in tags.items()],
    )
    client.set_terminated(run_id, "FINISHED")
    return model_uri


def _save_logged_model(client: MlflowClient, run_id: str, logged: Any, **flavor_args: Any) -> str:
    """Save a scikit-learn model into the logged model ``logged`` (made by ``create_logged_model``) as
    the run's output; returns its URI (``models:/m-...``).

    What :meth:`mlflow.models.Model.log` does for a model that exists (``model_id=``), with
    ``mlflow.sklearn`` as the flavor, without what it adds around that for every point: a new client, a
    read of the logged model and one of the run (to copy metrics the run does not have yet: they are
    logged with the model's id next), the check that loads the saved model again to predict its input
    example (the worker predicted those rows, the signature's output, with this very model), and the
    agent-evaluation hint. About a third of what logging a point cost the main process.
    """
    import shutil

    from mlflow.entities import LoggedModelOutput
    from mlflow.models import Model

    client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
    mlflow_model = Model(
        artifact_path=logged.artifact_location,
        model_uuid=logged.model_id,
        run_id=run_id,
        model_id=logged.model_id,
    )
    with tempfile.TemporaryDirectory(prefix="vintage-model-") as tmp:
        path = Path(tmp) / "model"
        save_sklearn_model(str(path), mlflow_model, **flavor_args)
        for pycache in path.rglob("__pycache__"):  # a shipped module imported while saving
            shutil.rmtree(pycache, ignore_errors=True)
        client.log_model_artifacts(logged.model_id, str(path))
    return str(mlflow_model.get_model_info(logged).model_uri)


class SerializedModel:
    """A fitted model as the bytes of its model file (:attr:`~vintage.training.fit.FitResult.model_bytes`,
    written by the worker that fitted it), saved by :func:`save_sklearn_model` without unpickling it."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __reduce__(self) -> tuple[Any, ...]:
        # MLflow pickles what it is given into the model file, which save_sklearn_model then overwrites with
        # the real bytes: the stand-in it pickles stays small.
        return (SerializedModel, (b"",))

    def predict(self, *args: Any, **kwargs: Any) -> Any:
        """Present so MLflow adds the python_function flavor (the real model predicts); never called."""
        raise TypeError("a serialised model predicts once loaded")


def save_sklearn_model(path: str, mlflow_model: Any, sk_model: Any, **kwargs: Any) -> None:
    """``mlflow.sklearn.save_model`` into ``path`` (MLmodel, environment files, input example, code),
    writing a :class:`SerializedModel`'s bytes as the model file (``pickled_model`` in the MLmodel file)."""
    import mlflow.sklearn

    mlflow.sklearn.save_model(sk_model, path, mlflow_model=mlflow_model, **kwargs)
    if isinstance(sk_model, SerializedModel):
        model_file = Path(path) / mlflow_model.flavors[mlflow.sklearn.FLAVOR_NAME]["pickled_model"]
        stand_in = model_file.stat().st_size
        model_file.write_bytes(sk_model.data)
        if mlflow_model.model_size_bytes is not None:  # counted with the stand-in: count the model
            mlflow_model.model_size_bytes += len(sk_model.data) - stand_in
            mlflow_model.save(str(Path(path) / MLMODEL_FILE))


MLMODEL_FILE = "MLmodel"


@contextlib.contextmanager
def _pins_of_this_environment() -> Iterator[None]:
    """Skip MLflow's check that the installed packages satisfy the model's pinned requirements while a
    model is logged here.

    The check reads every pinned package's metadata file again for every model (about 30 ms a model,
    a tenth of what logging a grid point costs the main process), to warn about a mismatch that cannot
    happen: :func:`model_requirements` reads the pins from this very environment. MLflow's own function
    is put back afterwards; if MLflow no longer has it, nothing is replaced (tests/unit/training checks
    that it still does).
    """
    import mlflow.utils.environment as mlflow_env

    check = getattr(mlflow_env, _MISMATCH_CHECK, None)
    if check is None:
        yield
        return
    setattr(mlflow_env, _MISMATCH_CHECK, _pins_satisfied)
    try:
        yield
    finally:
        setattr(mlflow_env, _MISMATCH_CHECK, check)


_MISMATCH_CHECK = "warn_dependency_requirement_mismatches"


def _pins_satisfied(requirements: list[str]) -> None:
    """Stands in for MLflow's check while vintage logs a model whose pins it read from this environment."""


def check_code(class_paths: Sequence[str]) -> None:
    """Refuse, before anything is fitted, an estimator class whose module cannot ship with the model
    (:mod:`vintage.training.code`; the fitted model is checked again, whole, when it is logged).

    Raises:
        TrainingError: a class's module cannot be shipped.
    """
    modules: dict[str, str] = {}
    for path in class_paths:
        module = sys.modules.get(path.rpartition(".")[0])
        cls = getattr(module, path.rpartition(".")[2], None) if module is not None else None
        if isinstance(cls, type):
            modules.setdefault(cls.__module__, f"{cls.__module__}.{cls.__qualname__}")
    shipped_code.plan_modules(modules)


def log_evaluation_files(session: TrackingSession, run_id: str, files: Mapping[str, bytes]) -> None:
    """Log evaluation files (name -> content, from the worker) under the run's ``evaluation/`` artifacts."""
    if not files:
        return
    import tempfile

    from vintage.evaluation.plots import ARTIFACT_DIR

    with tempfile.TemporaryDirectory(prefix="vintage-eval-") as tmp:
        for name, content in files.items():
            (Path(tmp) / name).write_bytes(content)
        session.client.log_artifacts(run_id, tmp, ARTIFACT_DIR)


def log_grid_summary(
    session: TrackingSession, parent_id: str, metrics: Sequence[Mapping[str, float]], n_points: int
) -> dict[str, float]:
    """Log on the parent (grid) run each metric's best value over the finished points (rmse: the
    lowest, r2 and acc_*: the highest; :func:`vintage.evaluation.metrics.best_values`) under the points'
    own metric names, and the point count. Returns the values logged."""
    from mlflow.entities import Metric

    from vintage.evaluation.metrics import best_values

    best = best_values(metrics)
    ts = now_ms()
    session.client.log_batch(
        parent_id,
        metrics=[Metric(k, v, ts, 0) for k, v in best.items()],
        params=[param("n_points", n_points)],
    )
    return best


def _log_input(
    session: TrackingSession,
    run_id: str,
    dataset: Any,
    attempts: int = 4,
    tags: Mapping[str, str] | None = None,
) -> None:
    """Link ``dataset`` (:func:`dataset_entity`) to the run as its training input (what
    ``mlflow.log_input`` does for the active run), surviving another client logging the same dataset at
    the same moment.

    A tracking server inserts a dataset it does not know yet; two runs (two CI machines training on one
    data set) that log it at once race on its primary key, and the loser gets a unique-constraint error. The
    retry finds the dataset stored and only links it to the run.
    """
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.exceptions import MlflowException
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    input_tags = [InputTag(k, v) for k, v in (tags or {}).items()]
    inputs = [DatasetInput(dataset, [*input_tags, InputTag(MLFLOW_DATASET_CONTEXT, "training")])]
    for attempt in range(attempts):
        try:
            session.client.log_inputs(run_id, datasets=inputs)
            return
        except MlflowException as exc:
            text = str(exc).lower()
            if attempt == attempts - 1 or not ("unique" in text or "duplicate key" in text):
                raise
            time.sleep(0.2 * (attempt + 1))


def dataset_entity(dataset: Any) -> Any:
    """An MLflow dataset (``mlflow.data``) as the entity a run's input links to: its schema and profile
    are worked out here, once per training, not once per run."""
    return dataset._to_mlflow_entity()


def dataset_metadata(dataset: Dataset) -> Any:
    """The MLflow dataset input of a data set that is not held in memory (the Spark MLlib trainer):
    source, name, digest, schema (all columns double after validation) and the row count as its profile,
    like ``mlflow.data.from_pandas`` gives, without a pandas copy of the data."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.types import ColSpec, Schema

    columns = [*dataset.features, dataset.target]

    class _Counted(MetaDataset):
        @property
        def profile(self) -> Any:
            return {"num_rows": dataset.n_rows, "num_elements": dataset.n_rows * len(columns)}

        def to_dict(self) -> dict[str, str]:
            return {**super().to_dict(), "profile": json.dumps(self.profile)}

    return _Counted(
        source=resolve_dataset_source(dataset.source_uri),
        name=dataset.source,
        digest=dataset.digest,
        schema=Schema([ColSpec("double", c) for c in columns]),
    )


def log_failure(session: TrackingSession, run_id: str, point: GridPoint, result: FitResult) -> None:
    """Mark a point's run FAILED with its error (headline as a tag, traceback as an artifact)."""
    client = session.client
    params = {**point.params, "estimator": point.estimator_text}
    client.log_batch(
        run_id,
        params=[param(k, v) for k, v in params.items()],
        tags=[_tag(TAG_ERROR, redact(result.error or "unknown error"))],
    )
    if result.error_detail:
        client.log_text(run_id, redact(result.error_detail), "error.txt")
    client.set_terminated(run_id, "FAILED")


def model_requirements(modules: Iterable[str], model_format: str) -> list[str]:
    """Pinned pip requirements of a logged model, without MLflow's slow import-tracing inference.

    ``modules``: every module a class or function inside the fitted model comes from
    (:func:`vintage.training.code.referenced_modules`), so a composite's members count (an XGBoost
    regressor inside a Voting ensemble adds ``xgboost``). Modules of no installed distribution (the
    standard library, project code shipped with the model) add nothing; nor does vintage, which every
    server that loads the model runs. A Spark MLlib model is logged as its scikit-learn export, so
    PySpark never appears.
    """
    by_module = _distributions()
    tops = {m.split(".", 1)[0] for m in modules} - {"vintage"}
    dists = {"scikit-learn", "numpy", "pandas", "scipy", *(d for t in tops for d in by_module.get(t, []))}
    if model_format in ("cloudpickle", "skops"):
        dists.add(model_format)
    return [f"{dist}=={found}" for dist in sorted(dists) if (found := _version(dist))]


@functools.cache
def _version(dist: str) -> str | None:
    # Reads the distribution's metadata file (a few ms for scikit-learn): once per process.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


@functools.cache
def _distributions() -> Mapping[str, list[str]]:
    # Scans every installed distribution (~0.3 s): once per process, not once per run.
    from importlib.metadata import packages_distributions

    return packages_distributions()


def _skops_types(model: Any) -> list[str]:
    """The types skops would refuse to load. vintage trained this model itself, so they are trusted."""
    import skops.io

    return list(skops.io.get_untrusted_types(data=skops.io.dumps(model)))


def _param_value(value: Any) -> str:
    text = redact(str(value))
    return text if len(text) <= 6000 else text[:5997] + "..."


def param(key: str, value: Any) -> Any:
    """An MLflow Param with the value as text (truncated to MLflow's limit)."""
    from mlflow.entities import Param

    return Param(key, _param_value(value))


def _tag(key: str, value: str) -> Any:
    from mlflow.entities import RunTag

    return RunTag(key, value)
