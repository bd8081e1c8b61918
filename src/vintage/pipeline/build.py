"""The build stage: validate data -> train the grid -> select the best run -> register it (alias
``candidate``)."""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vintage.data import load_dataset
from vintage.errors import Interrupted, SelectionError
from vintage.registry import CANDIDATE, RegisteredVersion, register_run
from vintage.secrets.access import SecretReader
from vintage.tracking import open_session
from vintage.training import PointRun, TrainingReport, log_chosen_files, select_best, train_grid
from vintage.training.runner import refit_chosen

if TYPE_CHECKING:
    from vintage.config import Spec
    from vintage.tracking import TrackingSession
    from vintage.training.runner import OnPoint

log = logging.getLogger(__name__)


@dataclass
class BuildResult:
    """What the build stage did."""

    report: TrainingReport
    selected: PointRun
    version: RegisteredVersion
    tracking_uri: str
    selection_key: str
    refit: PointRun | None = None
    """The chosen point fitted again on every row (``training.refit``): the registered run."""


@dataclass
class Trained:
    """The grid trained and the best run chosen (nothing registered yet)."""

    session: TrackingSession
    report: TrainingReport
    selected: PointRun
    refit: PointRun | None = None
    """The chosen point fitted again on every row (``training.refit``): the run to register."""

    @property
    def to_register(self) -> PointRun:
        """The run whose model is registered: the refit when there is one, else the chosen run."""
        return self.refit or self.selected


def train_and_select(
    spec: Spec,
    *,
    project_dir: Path | None = None,
    n_jobs: int | None = None,
    on_point: OnPoint | None = None,
    on_trained: Callable[[TrainingReport], None] | None = None,
    stop: threading.Event | None = None,
    secrets: SecretReader | None = None,
) -> Trained:
    """Validate the data, train the grid, choose the best run (the pipeline's ``train`` step).

    Arguments as for :func:`run_build`.

    Raises:
        DataError, TrackingError, TrainingError, SelectionError, SecretError.
    """
    from vintage.pipeline.remote import training_spec

    spec = training_spec(spec)  # inside a Databricks job, engine databricks trains on the cluster's Spark
    reader = secrets or SecretReader.from_spec(spec.secrets, spec.state_dir.resolve(), reader="stage:build")
    # The tracking credentials are read once, before training starts: a missing one fails in a second,
    # not after the whole grid has trained.
    resolve = functools.cache(reader.resolve)
    for text in (spec.tracking_token, os.environ.get("MLFLOW_TRACKING_URI") or spec.tracking_uri):
        if text:
            resolve(text)
    dataset = load_dataset(spec.data)
    log.info("data %s: %d rows, digest %s", dataset.source, dataset.n_rows, dataset.digest)
    session, report = train_grid(
        spec,
        dataset,
        lambda: open_session(spec, resolve=resolve),
        n_jobs=n_jobs,
        secrets=reader,
        project_dir=project_dir,
        on_point=on_point,
        stop=stop,
    )
    if on_trained:
        on_trained(report)
    if stop is not None and stop.is_set():  # a signal after the last fit: still register nothing
        raise Interrupted("interrupted after training; the runs are logged but nothing was registered")
    try:
        selected = select_best(report.runs, spec.selection)
    except SelectionError:
        session.client.set_tag(report.parent_run_id, "vintage.outcome", "no-run-meets-threshold")
        raise
    session.client.set_tag(report.parent_run_id, "vintage.selected_run_id", selected.run_id)
    log_chosen_files(session, report, selected)
    refit = None
    if spec.training.refit:
        refit = refit_chosen(
            spec, dataset, session, report, selected, project_dir=project_dir, secrets=reader
        )
        log.info("refit %s on all %d rows: run %s", selected.name, dataset.n_rows, refit.run_id)
    return Trained(session, report, selected, refit)


def run_build(
    spec: Spec,
    *,
    project_dir: Path | None = None,
    n_jobs: int | None = None,
    on_point: OnPoint | None = None,
    on_trained: Callable[[TrainingReport], None] | None = None,
    stop: threading.Event | None = None,
    secrets: SecretReader | None = None,
) -> BuildResult:
    """Run the build stage.

    Args:
        spec: the parsed workload.
        project_dir: directory whose git commit is recorded on the runs (the config file's directory).
        n_jobs: override ``training.n_jobs``.
        on_point: called as each grid point's run is logged (progress display).
        on_trained: called with the training report before selection (so a no-winner outcome can still
            show the runs).
        stop: set it (from a signal handler) to stop cleanly: runs marked KILLED, nothing registered.
        secrets: resolves ``${secret:...}`` references (tracking_uri, tracking_token, estimator params)
            when they are needed; default: the configured providers, reader ``stage:build``, no
            environment (shared scopes only).

    Raises:
        DataError, TrackingError, TrainingError, SelectionError, RegistryError.
    """
    trained = train_and_select(
        spec,
        project_dir=project_dir,
        n_jobs=n_jobs,
        on_point=on_point,
        on_trained=on_trained,
        stop=stop,
        secrets=secrets,
    )
    session, report, selected = trained.session, trained.report, trained.selected
    version = register_run(session, spec.model_name, trained.to_register, report.data_digest, alias=CANDIDATE)
    session.client.set_tag(report.parent_run_id, "vintage.registered_version", str(version.version))
    session.client.set_tag(report.parent_run_id, "vintage.outcome", "registered")
    return BuildResult(
        report, selected, version, session.target.display, spec.selection.selection_key, trained.refit
    )
