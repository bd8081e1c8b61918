"""vintage's Python API, for notebooks and scripts: train the grid, run a pipeline stage, load a registered
model, score a frame. The CLI calls the same methods (``vintage train``, ``vintage stage``, and the
``--model`` of ``vintage serve`` and ``vintage score``).

    from vintage.api import Project

    project = Project("vintage.yaml")          # the config, checked once
    built = project.train()                    # the grid, one MLflow run per point; the best registered
    print(built.version.version, built.selected.metrics["rmse"])
    model = project.load_model("candidate")    # that version, as the scoring server loads it
    project.predict(frame, model)              # a pandas Series: one prediction per row of ``frame``
    run = project.run_stage("staging", run_id="notebook-1")   # deploy, smoke test, champion gate

Errors are :class:`vintage.errors.VintageError` subclasses with a one-line ``headline`` and a ``hint``, the
text the CLI prints.
"""

from __future__ import annotations

import copy
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vintage.errors import ConfigError, DataError

if TYPE_CHECKING:
    from collections.abc import Callable

    import pandas as pd

    from vintage.config import Spec
    from vintage.model.load import LoadedModel
    from vintage.pipeline import BuildResult
    from vintage.pipeline.runner import Runner
    from vintage.pipeline.state import RunState
    from vintage.training import PointRun, TrainingReport

__all__ = ["Project", "load_config"]

_RUN_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,63}")


def load_config(path: str | Path | None = None) -> Spec:
    """Read and check a vintage.yaml (``path``, else ``$VINTAGE_CONFIG``, else ./vintage.yaml); with
    ``state_url`` set, pipeline runs, locks and the audit trail go to that shared database.

    Raises:
        ConfigError: the file is missing or invalid (the message names the key).
    """
    from vintage.config import load_spec
    from vintage.shared_state import attach

    spec = load_spec(path)
    attach(spec)
    return spec


class Project:
    """A vintage project: its config file, read and checked once.

    Args:
        config: the vintage.yaml (default: ``$VINTAGE_CONFIG``, else ./vintage.yaml). Its directory is the
            project's: its git commit is recorded on the runs. ``state_dir`` is relative to the working
            directory, as on the command line.
    """

    def __init__(self, config: str | Path | None = None) -> None:
        from vintage.config import resolve_config_path

        self.config_path = resolve_config_path(config)  # as given: messages show it so
        self.spec: Spec = load_config(self.config_path)

    @property
    def directory(self) -> Path:
        """The directory of the config file."""
        return self.config_path.resolve().parent

    def with_compute(self, engine: str | None = None, master: str | None = None) -> Project:
        """This project with another ``compute.engine`` (``local``, ``spark``, ``databricks``) or Spark
        master (``local[N]``, ``spark://host:port``, ``sc://host:port``; alone it implies ``spark``),
        checked like vintage.yaml; the file is not changed.

        Raises:
            ConfigError: an unknown engine or a malformed master.
        """
        if engine is None and master is None:
            return self
        from pydantic import ValidationError

        from vintage.config.models import ComputeSpec
        from vintage.plugins import COMPUTE_ENGINES

        compute = self.spec.compute.model_dump()
        if engine is not None:
            compute["engine"] = engine
        if master is not None:
            compute["spark"]["master"] = master
            compute["engine"] = engine or "spark"
        try:
            checked = ComputeSpec.model_validate(compute)
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in err["loc"])
            raise ConfigError(
                f"--engine/--master: compute.{where}: {err['msg']}",
                hint=f"engines: {', '.join(COMPUTE_ENGINES.names())}; masters: local[N], spark://host:port, "
                "sc://host:port",
            ) from None
        other = copy.copy(self)
        other.spec = self.spec.model_copy(update={"compute": checked})
        return other

    # -- training ------------------------------------------------------------------------------------

    def train(
        self,
        *,
        n_jobs: int | None = None,
        on_point: Callable[[PointRun], None] | None = None,
        on_trained: Callable[[TrainingReport], None] | None = None,
        stop: threading.Event | None = None,
    ) -> BuildResult:
        """The build stage on its own: validate the data, train the grid (one MLflow run per point),
        choose the best run, register it with alias ``candidate``.

        Args:
            n_jobs: worker processes (default ``training.n_jobs``, else every core).
            on_point: called as each point's run is logged.
            on_trained: called with the grid's report before selection (it exists even when no run
                passes the threshold).
            stop: set it to stop cleanly: runs marked KILLED, nothing registered (``Interrupted``).

        Raises:
            ConfigError: ``compute.engine: databricks`` (it trains as a job run: :meth:`run_stage`).
            DataError, TrackingError, TrainingError, SelectionError (no run meets the threshold),
            RegistryError.
        """
        from vintage.pipeline import run_build
        from vintage.pipeline.backends import for_training

        if not for_training(self.spec).runs_here:
            raise ConfigError(
                f"compute.engine {self.spec.compute.engine} trains as a job run, not in this process",
                hint="run the build stage: Project.run_stage('build', run_id=...) or `vintage stage build`",
            )
        return run_build(
            self.spec,
            project_dir=self.directory,
            n_jobs=n_jobs,
            on_point=on_point,
            on_trained=on_trained,
            stop=stop,
        )

    # -- pipeline -------------------------------------------------------------------------------------

    def runner(self, say: Callable[[str], None] = lambda _: None) -> Runner:
        """The pipeline runner of this project (``say`` gets its progress lines)."""
        from vintage.pipeline.runner import Runner

        return Runner(self.spec, self.directory, say=say, config_path=self.config_path.resolve())

    def attach_run(self, runner: Runner, stage: str, run_id: str, *, auto_approve: bool = False) -> None:
        """Make ``run_id`` ready to run ``stage``: the run is created when new (as a CI job does with its
        build id), else ``auto_approve`` is added to it.

        Raises:
            ConfigError: unknown stage, or a run id that is not 1-64 letters, digits, ``_ - .``.
        """
        from vintage.pipeline.ops import check_stage

        check_stage(self.spec, stage)  # before a run is created for it
        if runner.store.exists(run_id):
            if auto_approve:
                runner.store.set_option(run_id, "auto_approve", True)
            return
        if not _RUN_ID.fullmatch(run_id):
            raise ConfigError(f"invalid run id {run_id!r}: letters, digits, '_', '-', '.' (at most 64)")
        runner.create(run_id, exist_ok=True, auto_approve=auto_approve)

    def run_stage(
        self,
        stage: str,
        run_id: str,
        *,
        auto_approve: bool = False,
        say: Callable[[str], None] = lambda _: None,
        stop: threading.Event | None = None,
    ) -> RunState:
        """Run one stage of a pipeline run (created if new), as ``vintage stage STAGE --run-id ID`` does.

        Returns:
            The run's state afterwards (its stages, steps and outputs).

        Raises:
            WaitingApproval: the stage waits at its approval gate (``vintage approve``, then again).
            PipelineError: a step failed or a gate refused; ConfigError: unknown stage or bad run id.
        """
        runner = self.runner(say)
        runner.stop = stop or threading.Event()
        self.attach_run(runner, stage, run_id, auto_approve=auto_approve)
        state: RunState = runner.execute(run_id, stage)
        return state

    # -- models ---------------------------------------------------------------------------------------

    def model_dir(self, model: str = "candidate", *, reader: str = "api") -> Path:
        """A local MLflow model directory for ``model``, downloaded once per version into
        ``<state_dir>/models``.

        ``model``: a local model directory (returned as is), a version number (``"3"``), an alias of
        ``model_name`` (``"candidate"``, ``"production"``), ``NAME@ALIAS``, or a ``models:/`` or
        ``runs:/`` URI. ``reader`` is recorded in the secrets audit trail if the tracking store needs a
        token.

        Raises:
            ServingError: unknown model, alias, version or run; TrackingError: the store does not answer.
        """
        if Path(model).is_dir():
            return Path(model)
        from vintage.model.materialize import materialize
        from vintage.secrets.access import SecretReader
        from vintage.tracking import resolve_target

        spec = self.spec
        uri = self.model_uri(model)
        secrets = SecretReader.from_spec(spec.secrets, spec.state_dir.resolve(), reader=reader)
        target = resolve_target(spec, resolve=secrets.resolve)
        return materialize(uri, target.state_dir / "models", tracking_uri=target.uri)

    def model_uri(self, model: str) -> str:
        """The registry URI ``model`` names: ``"3"`` -> ``models:/<model_name>/3``, ``"candidate"`` ->
        ``models:/<model_name>@candidate``, ``NAME@ALIAS`` -> ``models:/NAME@ALIAS``; a URI as it is."""
        if model.isdigit():
            return f"models:/{self.spec.model_name}/{model}"
        if "/" not in model and ":" not in model:
            return f"models:/{model}" if "@" in model else f"models:/{self.spec.model_name}@{model}"
        return model

    def load_model(self, model: str = "candidate") -> LoadedModel:
        """``model`` (as for :meth:`model_dir`) loaded as the scoring server loads it: ``predict`` takes a
        float64 array with the columns in ``info.columns`` order."""
        from vintage.model.load import load_model_dir

        return load_model_dir(self.model_dir(model))

    def predict(self, frame: pd.DataFrame, model: LoadedModel | str = "candidate") -> pd.Series:
        """One prediction per row of ``frame`` (its index kept, named ``prediction``): the same numbers
        ``vintage serve`` and ``vintage score`` give for those rows. Columns beyond the model's are
        ignored.

        Raises:
            DataError: a feature column is missing, or a value is not a number.
        """
        import pandas as pd

        loaded = self.load_model(model) if isinstance(model, str) else model
        columns = list(loaded.info.columns)
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise DataError(
                f"the frame lacks {len(missing)} of the model's columns: {', '.join(map(repr, missing))}",
                hint=f"the model takes: {', '.join(columns)}",
            )
        try:
            values = frame[columns].to_numpy(dtype="float64")
        except (TypeError, ValueError) as exc:
            raise DataError(f"the model's columns must hold numbers: {exc}") from exc
        predictions: Any = loaded.predict(values)
        return pd.Series(predictions, index=frame.index, name="prediction")
