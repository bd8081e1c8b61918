"""``compute.engine: databricks``: the stage that trains runs as a one-time Databricks job run.

Where the pipeline runs (a laptop, a CI agent), the stage holding the ``train`` step (``build`` by default)
is not executed step by step: it is submitted with
:meth:`vintage.compute.databricks.DatabricksJobRunner.submit_stage`, and the job cluster runs
``vintage -c <uploaded vintage.yaml> stage <stage> --run-id <run id>`` from the project wheel. The later
stages (deploy, smoke test, approval, promote) keep running where the pipeline runs.

Inside the job the same config must not submit itself again. The signal is the environment variable
``DATABRICKS_RUNTIME_VERSION``, which Databricks sets on every cluster: when it is set, ``engine:
databricks`` trains in this process with the cluster's Spark session (the ``spark`` engine).

The remote stage shares the MLflow tracking store and registry (``tracking_uri``), so when the job has
succeeded the local side reads what it did from there: the newest grid run tagged
``vintage.pipeline_run = <run id>`` that carries ``vintage.registered_version``, its chosen run and the
registered version. The embedded store (no ``tracking_uri``) cannot be shared, so it is refused.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vintage import audit
from vintage.errors import ConfigError, PipelineError, TrackingError, first_line
from vintage.pipeline.outputs import RegisterOutput, Selected, StepOutput, TrainOutput, ValidateOutput

if TYPE_CHECKING:
    from vintage.config import Spec
    from vintage.config.models import StageSpec
    from vintage.pipeline.backends import StageBackend
    from vintage.pipeline.context import StepContext
    from vintage.registry import RegisteredVersion
    from vintage.secrets.access import SecretReader
    from vintage.tracking import TrackingSession

IN_JOB_VARIABLE = "DATABRICKS_RUNTIME_VERSION"
"""Set by Databricks on every cluster: inside a job, ``engine: databricks`` trains here, on Spark."""
WHEEL_VARIABLE = "VINTAGE_DATABRICKS_WHEEL"
"""A prebuilt project wheel to upload instead of building one with pip."""
REMOTE_STEPS = ("validate", "train", "register")
"""Steps of a submitted stage that the job runs; their local records hold what the job did."""
BUILD_STEPS = frozenset({*REMOTE_STEPS, "release"})
"""Steps a submitted stage may hold (``release`` runs locally, from what the job registered)."""

Say = Callable[[str], None]


def in_databricks_job() -> bool:
    """True on a Databricks cluster (where a submitted stage runs)."""
    return bool(os.environ.get(IN_JOB_VARIABLE))


def submits_to_databricks(spec: Spec) -> bool:
    """True when training must be submitted as a Databricks job run from here."""
    return spec.compute.engine == "databricks" and not in_databricks_job()


def training_spec(spec: Spec) -> Spec:
    """The spec training runs with here: inside a Databricks job ``databricks`` means the cluster's Spark."""
    if spec.compute.engine != "databricks" or not in_databricks_job():
        return spec
    compute = spec.compute.model_copy(update={"engine": "spark"})
    return spec.model_copy(update={"compute": compute})


def stage_on_databricks(spec: Spec, stage: StageSpec) -> bool:
    """True when ``stage`` is submitted as a job run (it trains and the engine is ``databricks``).

    Raises:
        ConfigError: the stage also holds environment steps (they run where the pipeline runs).
    """
    steps = [str(s) for s in stage.steps]
    if not submits_to_databricks(spec) or "train" not in steps:
        return False
    other = [s for s in steps if s not in BUILD_STEPS]
    if other:
        raise ConfigError(
            f"stage {stage.name} trains on Databricks (compute.engine: databricks) but also has the steps "
            f"{', '.join(other)}",
            hint="put environment steps in a later stage: only validate, train, register and release run "
            "in the job's stage",
        )
    return True


def train_stage(spec: Spec) -> StageSpec:
    """The pipeline stage ``vintage train`` submits: the first one with a ``train`` step.

    Raises:
        ConfigError: no stage trains, or that stage also deploys.
    """
    for stage in spec.pipeline.order():
        if "train" in [str(s) for s in stage.steps]:
            stage_on_databricks(spec, stage)  # refuses a stage with environment steps
            return stage
    raise ConfigError("no pipeline stage has a train step to run on Databricks")


# ---------------------------------------------------------------------------------- the stage backend


class DatabricksBackend:
    """The ``databricks`` row of :data:`vintage.plugins.STAGE_BACKENDS`: the stage that trains is submitted
    once as a job run; its steps ``validate``, ``train``, ``register`` record what the job did, the
    others (``release``) run here."""

    NAME = "databricks"
    runs_here = False

    def __init__(self) -> None:
        self.outcome: RemoteOutcome | None = None

    @classmethod
    def from_spec(cls, spec: Spec, stage: StageSpec) -> StageBackend:
        """This backend when ``stage`` is submitted from here; inside the job (or for a stage that does not
        train) the local one.

        Raises:
            ConfigError: the stage also holds environment steps.
        """
        if not stage_on_databricks(spec, stage):
            from vintage.pipeline.backends import LocalBackend

            return LocalBackend.from_spec(spec, stage)
        return cls()

    def run_step(self, ctx: StepContext, step: str) -> StepOutput:
        if step in STEPS:
            return STEPS[step](ctx, self._outcome(ctx))
        from vintage.pipeline.steps import STEPS as LOCAL_STEPS

        return LOCAL_STEPS[step](ctx)

    def _outcome(self, ctx: StepContext) -> RemoteOutcome:
        """Submit the stage once; the other steps of the stage read the same outcome.

        A step of this stage that already succeeded (a resume after the process died between two steps)
        names the job that ran: its outcome is read again rather than the stage submitted a second time.
        """
        if self.outcome is None:
            job = _finished_job(ctx)
            if job is None:
                job = submit(
                    ctx.spec,
                    ctx.stage.name,
                    ctx.run_id,
                    config_text=config_text(ctx),
                    secrets=ctx.secrets,
                    say=ctx.say,
                    stop=ctx.stop,
                )
                ctx.store.update_release(ctx.run_id, databricks=job)
            else:
                ctx.say(
                    f"Databricks run {job['databricks_run_id']} already ran this stage; reading its outcome"
                )
            self.outcome = read_outcome(ctx.session(), ctx.spec, ctx.run_id, job)
        return self.outcome

    def submit_build(
        self,
        spec: Spec,
        *,
        run_id: str,
        config_text: str,
        secrets: SecretReader,
        say: Say,
        stop: threading.Event | None = None,
        n_jobs: int | None = None,
    ) -> RemoteOutcome:
        """``vintage train``: submit the training stage as run ``run_id``; what the job registered.

        Raises:
            ConfigError, DatabricksJobError, PipelineError, TrackingError, Interrupted.
        """
        from vintage.tracking import open_session

        stage = train_stage(spec)
        check_config(spec)
        if n_jobs is not None:
            say("warning: --n-jobs is ignored: the grid runs as Spark tasks on the Databricks job cluster")
        job = submit(spec, stage.name, run_id, config_text=config_text, secrets=secrets, say=say, stop=stop)
        return read_outcome(open_session(spec, resolve=secrets.resolve), spec, run_id, job)


# ---------------------------------------------------------------------------------------------- submit


def check_config(spec: Spec) -> None:
    """Refuse, before any request, what cannot work: no host/token, or a tracking store nobody shares.

    Raises:
        ConfigError: ``compute.databricks.host``/``token`` missing, or no ``tracking_uri``.
    """
    dbx = spec.compute.databricks
    if not dbx.host or not dbx.token:
        raise ConfigError(
            "compute.engine is databricks, but compute.databricks.host and compute.databricks.token are "
            "not both set",
            hint="token: ${secret:SCOPE/KEY} (see docs/databricks.md)",
        )
    if not (os.environ.get("MLFLOW_TRACKING_URI") or spec.tracking_uri):
        raise ConfigError(
            "compute.engine is databricks, but the MLflow store is the embedded one, which the job "
            "cluster cannot share",
            hint="set tracking_uri to a store both sides reach, e.g. tracking_uri: databricks",
        )


def submit(
    spec: Spec,
    stage: str,
    run_id: str,
    *,
    config_text: str,
    secrets: SecretReader,
    say: Say,
    stop: threading.Event | None = None,
) -> dict[str, Any]:
    """Submit ``stage`` of ``run_id`` as a Databricks job run and wait for it to succeed.

    Returns:
        ``databricks_run_id``, ``task_run_id``, ``run_page_url``, ``result_state`` (no logs).

    Raises:
        ConfigError: host/token missing, embedded store, no wheel, bad cluster spec.
        DatabricksJobError: the run failed or the Jobs API refused a request.
        Interrupted: ``stop`` was set (a submitted run is cancelled).
    """
    import tempfile

    from vintage.compute.databricks import DatabricksJobRunner, build_wheel, find_project_dir

    check_config(spec)
    dbx = spec.compute.databricks
    assert dbx.host is not None and dbx.token is not None
    host, token = secrets.resolve(dbx.host), secrets.resolve(dbx.token)
    _share_credentials(spec, host, token)
    runner = DatabricksJobRunner(host, token, dbx.job_cluster)
    runner.cluster_spec()  # a wrong field fails now, not after the wheel is built
    with tempfile.TemporaryDirectory(prefix="vintage-wheel-") as tmp:
        given = os.environ.get(WHEEL_VARIABLE)
        if given:
            wheel = Path(given)
        else:
            say("building the project wheel")
            wheel = build_wheel(find_project_dir(), Path(tmp))
        result = runner.submit_stage(
            stage, wheel=wheel, config_text=config_text, run_id=run_id, say=say, stop=stop
        )
    return {
        "databricks_run_id": result["databricks_run_id"],
        "task_run_id": result["task_run_id"],
        "run_page_url": result.get("run_page_url"),
        "result_state": result.get("result_state"),
    }


def _share_credentials(spec: Spec, host: str, token: str) -> None:
    """``tracking_uri: databricks`` here reads the workspace from DATABRICKS_HOST/TOKEN (MLflow's way)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or spec.tracking_uri or ""
    if uri == "databricks" or uri.startswith("databricks://"):
        os.environ.setdefault("DATABRICKS_HOST", host)
        os.environ.setdefault("DATABRICKS_TOKEN", token)


# ---------------------------------------------------------------------------------------- the outcome


@dataclass
class RemoteOutcome:
    """What the job's stage did, read back from the shared tracking store and registry."""

    job: dict[str, Any]
    """``databricks_run_id``, ``task_run_id``, ``run_page_url``, ``result_state``."""
    parent_run_id: str
    data_digest: str
    engine: str
    runs: int
    failed: int
    selection_key: str
    selected: dict[str, Any]
    version: RegisteredVersion
    tracking_uri: str
    refit: dict[str, Any] | None = None
    """The chosen point refit on all rows (``training.refit``): the run whose model was registered."""

    @property
    def where(self) -> str:
        """``Databricks run <id> (<run page>)``: where the stage ran, for one line of output."""
        page = self.job.get("run_page_url") or "no run page"
        return f"Databricks run {self.job['databricks_run_id']} ({page})"


def read_outcome(session: TrackingSession, spec: Spec, run_id: str, job: dict[str, Any]) -> RemoteOutcome:
    """Find what the job registered: the newest grid run of pipeline run ``run_id`` with a version.

    Raises:
        PipelineError: the job succeeded but left no registered version in this tracking store.
        TrackingError: the tracking store refused a query.
    """
    from mlflow.exceptions import MlflowException

    try:
        return _read(session, spec, run_id, job)
    except MlflowException as exc:
        raise TrackingError(
            f"cannot read what Databricks run {job.get('databricks_run_id')} did from "
            f"{session.target.display}: {first_line(exc)}"
        ) from exc


def _read(session: TrackingSession, spec: Spec, run_id: str, job: dict[str, Any]) -> RemoteOutcome:
    from vintage.registry import list_versions

    client = session.client
    found = client.search_runs(
        [session.experiment_id],
        filter_string=f"tags.`vintage.pipeline_run` = '{_quote(run_id)}' and tags.`vintage.role` = 'grid'",
        order_by=["attributes.start_time DESC"],
        max_results=50,
    )
    parent = next((r for r in found if r.data.tags.get("vintage.registered_version")), None)
    dbx_run = job.get("databricks_run_id")
    if parent is None:
        raise PipelineError(
            f"Databricks run {dbx_run} succeeded, but no MLflow run of pipeline run {run_id} registered a "
            f"version in {session.target.display}",
            hint="the job and this machine must use the same tracking store (tracking_uri); the job's "
            + (f"output is at {job['run_page_url']}" if job.get("run_page_url") else "output tells why"),
        )
    tags = parent.data.tags
    number = int(tags["vintage.registered_version"])
    selected = client.get_run(tags["vintage.selected_run_id"])
    children = client.search_runs(
        [session.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
        max_results=10_000,
    )
    version = next((v for v in list_versions(client, spec.model_name) if v.version == number), None)
    if version is None:
        raise PipelineError(
            f"Databricks run {dbx_run} registered {spec.model_name} version {number}, but the registry at "
            f"{session.target.display} has no such version"
        )
    # A version older than the training run was found again (same run or training key), not created.
    version.reused = version.created_ms < int(parent.info.start_time or 0)
    refit_id = tags.get("vintage.refit_run_id")
    refit = client.get_run(refit_id) if refit_id else None
    points = [c for c in children if c.data.tags.get("vintage.role") != "refit"]  # grid points only
    stags = selected.data.tags
    return RemoteOutcome(
        job=job,
        parent_run_id=str(parent.info.run_id),
        data_digest=tags.get("vintage.data_digest", ""),
        engine=tags.get("vintage.engine", ""),
        runs=len(points),
        failed=sum(1 for c in points if c.info.status == "FAILED"),
        selection_key=spec.selection.selection_key,
        selected={
            "run_id": str(selected.info.run_id),
            "name": selected.info.run_name or "",
            "estimator": stags.get("vintage.estimator", ""),
            "metrics": dict(selected.data.metrics),
            "model_uri": stags.get("vintage.model_uri"),
            "training_key": stags.get("vintage.training_key"),
        },
        version=version,
        tracking_uri=session.target.display,
        refit=_run_dict(refit) if refit is not None else None,
    )


def _run_dict(run: Any) -> dict[str, Any]:
    """A run as :class:`~vintage.pipeline.outputs.Selected` takes it."""
    tags = run.data.tags
    return {
        "run_id": str(run.info.run_id),
        "name": run.info.run_name or "",
        "estimator": tags.get("vintage.estimator", ""),
        "metrics": {k: v for k, v in run.data.metrics.items() if k != "fit_seconds"},
        "model_uri": tags.get("vintage.model_uri"),
        "training_key": tags.get("vintage.training_key"),
    }


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


# -------------------------------------------------------------------------------------- pipeline steps


def config_text(ctx: StepContext) -> str:
    """The text of the config file the pipeline runs with (uploaded as it is, references unresolved).

    Raises:
        ConfigError: no config file with the running spec's digest is found.
    """
    from vintage.config import load_spec, resolve_config_path
    from vintage.pipeline.context import config_digest

    if ctx.config_path is not None:
        return ctx.config_path.read_text(encoding="utf-8")
    want = config_digest(ctx.spec)
    # The runner knows the config's folder, not its name (`vintage -c FILE`): the file there whose spec is
    # the running one.
    folder = sorted(p for p in ctx.project_dir.glob("*") if p.suffix in (".yaml", ".yml"))
    for candidate in (resolve_config_path(None), *folder):
        try:
            if candidate.is_file() and config_digest(load_spec(candidate)) == want:
                return candidate.read_text(encoding="utf-8")
        except ConfigError:
            continue
    raise ConfigError(
        "cannot tell which config file to upload to Databricks",
        hint="set VINTAGE_CONFIG to the config file this pipeline runs with",
    )


def _finished_job(ctx: StepContext) -> dict[str, Any] | None:
    from vintage.pipeline.context import here

    for step in REMOTE_STEPS:
        job = here(ctx, step).get("databricks")
        if isinstance(job, dict) and job.get("databricks_run_id"):
            return job
    return None


def _job_line(o: RemoteOutcome) -> str:
    return f"Databricks run {o.job['databricks_run_id']}"


def validate_step(ctx: StepContext, o: RemoteOutcome) -> ValidateOutput:
    """The job validated the data (its stage starts with validate)."""
    ctx.say(f"data validated in {_job_line(o)}: digest {o.data_digest}")
    return ValidateOutput(digest=o.data_digest, databricks=o.job)


def train_step(ctx: StepContext, o: RemoteOutcome) -> TrainOutput:
    """The job trained the grid and chose a run: the same output as a local ``train``."""
    key = o.selection_key
    ctx.say(
        f"{_job_line(o)} trained {o.runs} grid point(s) ({o.failed} failed, engine {o.engine or '?'}); "
        f"chosen {o.selected['name']}, {key} = {o.selected['metrics'].get(key, float('nan')):.4f}"
    )
    return TrainOutput(
        parent_run_id=o.parent_run_id,
        data_digest=o.data_digest,
        selection_key=key,
        runs=o.runs,
        failed=o.failed,
        selected=Selected.model_validate(o.selected),
        databricks=o.job,
        refit=Selected.model_validate(o.refit) if o.refit else None,
    )


def register_step(ctx: StepContext, o: RemoteOutcome) -> RegisterOutput:
    """The job registered the chosen run (alias ``candidate``); recorded in the local audit trail too."""
    from vintage.registry import CANDIDATE

    v = o.version
    registered = (o.refit or o.selected)["run_id"]
    audit.record(
        ctx.state_dir,
        "model.register",
        f"{v.name}/{v.version}",
        "reused" if v.reused else "ok",
        reader=f"run:{ctx.run_id}",
        detail=f"run_id={registered} alias={CANDIDATE} databricks_run={o.job['databricks_run_id']}",
    )
    verb = "found" if v.reused else "registered"
    ctx.say(f"{_job_line(o)} {verb} {v.name} version {v.version} (alias {CANDIDATE})")
    return RegisterOutput.of(v, registered).model_copy(update={"databricks": o.job})


STEPS: dict[str, Callable[[StepContext, RemoteOutcome], StepOutput]] = {
    "validate": validate_step,
    "train": train_step,
    "register": register_step,
}
"""The steps of a submitted stage that the job runs (``release`` stays the local step)."""
