"""Where a pipeline stage runs: a stage backend per stage, from :data:`vintage.plugins.STAGE_BACKENDS`.

The runner asks the stage's backend to run each of its steps; it knows no backend by name. A stage that
trains runs on the backend named like ``compute.engine`` when the table has one (``databricks``: the
stage is submitted as a Databricks job run, :mod:`vintage.pipeline.remote`); every other stage runs on
``local`` (the step library, in this process).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, Self, runtime_checkable

from vintage.plugins import STAGE_BACKENDS

if TYPE_CHECKING:
    from vintage.config import Spec
    from vintage.config.models import StageSpec
    from vintage.pipeline.context import StepContext
    from vintage.pipeline.remote import RemoteOutcome
    from vintage.secrets.access import SecretReader

Step = Callable[["StepContext"], Any]


class StageBackend(Protocol):
    """Runs the steps of one stage of one run (a new backend per stage).

    ``runs_here`` is ``False`` for a backend that runs the stage elsewhere (a Databricks job run); such a
    backend is also a :class:`RemoteBackend` (``vintage train`` submits the training stage with it).
    """

    NAME: str
    runs_here: bool

    @classmethod
    def from_spec(cls, spec: Spec, stage: StageSpec) -> StageBackend:
        """The backend ``stage`` runs on (may hand over to another one, e.g. ``local`` inside a job).

        Raises:
            ConfigError: the stage cannot run on this backend (checked before any step runs).
        """
        ...

    def run_step(self, ctx: StepContext, step: str) -> Any:
        """Run ``step`` of the stage; returns its output (a step output object or a JSON-able dict)."""
        ...


@runtime_checkable
class RemoteBackend(StageBackend, Protocol):
    """A stage backend that runs stages elsewhere (``runs_here`` is ``False``)."""

    def submit_build(
        self,
        spec: Spec,
        *,
        run_id: str,
        config_text: str,
        secrets: SecretReader,
        say: Callable[[str], None],
        stop: threading.Event | None = None,
        n_jobs: int | None = None,
    ) -> RemoteOutcome:
        """``vintage train``: run the training stage as pipeline run ``run_id``; what it registered."""
        ...


class LocalBackend:
    """The step library of :mod:`vintage.pipeline.steps`, in this process.

    Args:
        steps: Step name -> step function (default: the step library); tests pass their own.
    """

    NAME = "local"
    runs_here = True

    def __init__(self, steps: Mapping[str, Step] | None = None) -> None:
        if steps is None:
            from vintage.pipeline.steps import STEPS

            steps = STEPS
        self.steps = steps

    @classmethod
    def from_spec(cls, spec: Spec, stage: StageSpec) -> Self:
        return cls()

    def run_step(self, ctx: StepContext, step: str) -> Any:
        return self.steps[step](ctx)


def backend_name(spec: Spec, stage: StageSpec) -> str:
    """The row of :data:`~vintage.plugins.STAGE_BACKENDS` ``stage`` runs on."""
    trains = "train" in [str(s) for s in stage.steps]
    engine = spec.compute.engine
    return engine if trains and engine in STAGE_BACKENDS else "local"


def for_stage(spec: Spec, stage: StageSpec) -> StageBackend:
    """The backend of ``stage``, built with ``from_spec``.

    Raises:
        ConfigError: the stage cannot run on its backend.
    """
    backend: StageBackend = STAGE_BACKENDS.load(backend_name(spec, stage)).from_spec(spec, stage)
    return backend


def for_training(spec: Spec) -> StageBackend:
    """The backend of the first stage that trains (what ``vintage train`` runs); ``local`` when no stage
    trains and ``compute.engine`` names no other backend.

    Raises:
        ConfigError: no stage trains but the engine's backend runs stages elsewhere, or the stage cannot
            run on its backend.
    """
    from vintage.errors import ConfigError

    for stage in spec.pipeline.order():
        if "train" in [str(s) for s in stage.steps]:
            return for_stage(spec, stage)
    engine = spec.compute.engine
    if engine in STAGE_BACKENDS and engine != "local":
        raise ConfigError(
            f"no pipeline stage has a train step to run on the {engine} stage backend",
            hint="add a stage with the steps validate, train, register to pipeline.stages",
        )
    return LocalBackend()
