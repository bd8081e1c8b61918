"""What a pipeline step sees: the spec, the run state, its stage and environment, secrets, the tracking
session and the deploy target."""

from __future__ import annotations

import functools
import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from vintage.errors import PipelineError
from vintage.pipeline import state as st
from vintage.pipeline.model_registry import MlflowRegistry, ModelRegistry
from vintage.pipeline.outputs import RegisterOutput, StepOutput
from vintage.secrets.access import SecretReader

if TYPE_CHECKING:
    from vintage.config import Spec
    from vintage.config.models import StageSpec
    from vintage.deploy.base import DeployTarget
    from vintage.tracking import TrackingSession

OutputT = TypeVar("OutputT", bound=StepOutput)


@dataclass
class StepContext:
    """What a step sees."""

    spec: Spec
    project_dir: Path
    store: st.StateStore
    run_id: str
    stage: StageSpec
    options: dict[str, Any]
    say: Callable[[str], None]
    stop: threading.Event | None = None
    _session: TrackingSession | None = field(default=None, repr=False)
    config_path: Path | None = None
    """The config file the pipeline runs with (uploaded when a stage backend runs the stage elsewhere)."""
    models: ModelRegistry | None = field(default=None, repr=False)
    """The model registry (``None``: the tracking store's, :class:`MlflowRegistry`)."""

    @property
    def registry(self) -> ModelRegistry:
        """The model registry the steps use."""
        if self.models is None:
            self.models = MlflowRegistry(self.session)
        return self.models

    @property
    def state_dir(self) -> Path:
        return self.spec.state_dir.resolve()

    @functools.cached_property
    def secrets(self) -> SecretReader:
        """Reads secrets as ``stage:<name>`` in the stage's environment."""
        return SecretReader.from_spec(
            self.spec.secrets,
            self.state_dir,
            reader=f"stage:{self.stage.name}",
            environment=self.stage.environment,
        )

    def session(self) -> TrackingSession:
        """The tracking session (opened once per stage)."""
        if self._session is None:
            from vintage.tracking import open_session

            self._session = open_session(self.spec, resolve=self.secrets.resolve)
        return self._session

    def output(self, step: str) -> dict[str, Any]:
        """Output of an earlier succeeded step of this run, as stored (``{}``: none)."""
        return self.store.run(self.run_id).output(step)

    def result(self, kind: type[OutputT]) -> OutputT | None:
        """Output of the earlier succeeded ``kind.STEP`` step of this run, validated (``None``: none)."""
        found = self.output(kind.STEP)
        return kind.from_json(found) if found else None

    def candidate(self) -> tuple[str, int]:
        """The model name and version this run registered."""
        reg = self.result(RegisterOutput)
        if reg is None:
            raise PipelineError(
                f"run {self.run_id} has no registered candidate yet",
                hint="the build stage (steps train, register) must succeed first",
            )
        return reg.model_name, reg.version

    def target(self) -> DeployTarget:
        """The deploy target of the stage's environment."""
        assert self.stage.environment is not None
        from vintage.pipeline.ops import target

        return target(self.spec, self.stage.environment)


def config_digest(spec: Spec) -> str:
    """SHA-256 (first 16 hex) of the resolved config (secret references, not values)."""
    blob = json.dumps(spec.model_dump(mode="json", by_alias=True), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def materialize_version(ctx: StepContext, name: str, version: int) -> Path:
    """The model directory of ``name`` v``version`` in the state directory's model store."""
    return ctx.registry.materialize(name, version, ctx.state_dir / "models")


def here(ctx: StepContext, step: str) -> dict[str, Any]:
    """Output of a succeeded step of the current stage (``{}`` if it did not run or failed)."""
    run = ctx.store.run(ctx.run_id)
    for s in run.stage(ctx.stage.name).steps:
        if s.name == step and s.status == st.SUCCEEDED:
            return s.output or {"ok": True}
    return {}
