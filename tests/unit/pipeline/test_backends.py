"""Stage backends: the runner runs every stage through the backend the plug-in table gives for it, and
knows none by name (no Databricks branch in the runner)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest

from vintage.config import load_spec
from vintage.config.models import StageSpec
from vintage.errors import ConfigError
from vintage.pipeline import backends, remote
from vintage.pipeline import state as st
from vintage.pipeline.runner import Runner
from vintage.plugins import STAGE_BACKENDS


def _stage(*steps: str, environment: str | None = None) -> StageSpec:
    return StageSpec.model_validate({"name": "s", "environment": environment, "steps": list(steps)})


def _databricks_spec(project: Path) -> Any:
    config = project / "vintage.yaml"
    config.write_text(config.read_text() + "compute:\n  engine: databricks\n")
    return load_spec(config)


def test_the_training_stage_runs_on_the_engines_backend_the_others_locally(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(remote.IN_JOB_VARIABLE, raising=False)
    spec = _databricks_spec(project)
    assert isinstance(backends.for_stage(spec, _stage("validate", "train")), remote.DatabricksBackend)
    assert isinstance(
        backends.for_stage(spec, _stage("deploy", environment="staging")), backends.LocalBackend
    )
    assert not backends.for_training(spec).runs_here
    monkeypatch.setenv(remote.IN_JOB_VARIABLE, "15.4")  # inside the job, the stage runs here
    assert isinstance(backends.for_stage(spec, _stage("validate", "train")), backends.LocalBackend)


def test_local_and_spark_engines_run_every_stage_here(project: Path) -> None:
    spec = load_spec(project / "vintage.yaml")
    assert backends.backend_name(spec, _stage("train")) == "local"
    assert backends.for_training(spec).runs_here
    spark = spec.model_copy(update={"compute": spec.compute.model_copy(update={"engine": "spark"})})
    assert backends.backend_name(spark, _stage("train")) == "local"


def test_a_stage_the_backend_refuses_fails_before_any_step(project: Path, monkeypatch) -> None:
    monkeypatch.delenv(remote.IN_JOB_VARIABLE, raising=False)
    spec = _databricks_spec(project)
    with pytest.raises(ConfigError, match="also has the steps deploy"):
        backends.for_stage(spec, _stage("train", "deploy", environment="staging"))


class _Recording:
    """A stage backend that runs nothing: records which steps it was asked to run."""

    NAME = "recording"
    runs_here = True
    calls: ClassVar[list[tuple[str, str]]] = []

    @classmethod
    def from_spec(cls, spec: Any, stage: StageSpec) -> _Recording:
        return cls()

    def run_step(self, ctx: Any, step: str) -> dict[str, Any]:
        self.calls.append((ctx.stage.name, step))
        return {"ran": step}


def test_the_runner_runs_steps_through_the_table(project: Path) -> None:
    """Every stage runs on ``local``: replacing that row replaces how every step runs."""
    spec = load_spec(project / "vintage.yaml")
    runner = Runner(spec, project)
    run_id = runner.create()
    _Recording.calls = []
    with STAGE_BACKENDS.override("local", _Recording):
        runner.execute(run_id, only="build")
    build = next(s for s in spec.pipeline.order() if s.name == "build")
    assert _Recording.calls == [("build", str(s)) for s in build.steps]
    out = runner.store.run(run_id).output("validate")
    assert out["ran"] == "validate" and "seconds" in out
    assert runner.store.run(run_id).stage("build").status == st.SUCCEEDED
