"""Which side trains with ``compute.engine: databricks``: the in-job signal and the stage rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from vintage.config import load_spec
from vintage.config.models import StageSpec
from vintage.errors import ConfigError
from vintage.pipeline import remote


@pytest.fixture
def spec(project: Path) -> object:
    config = project / "vintage.yaml"
    config.write_text(config.read_text() + "compute:\n  engine: databricks\n")
    return load_spec(config)


def _stage(*steps: str, environment: str | None = None) -> StageSpec:
    return StageSpec.model_validate({"name": "s", "environment": environment, "steps": list(steps)})


def test_outside_a_cluster_the_training_stage_is_submitted(spec, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(remote.IN_JOB_VARIABLE, raising=False)
    assert remote.submits_to_databricks(spec)
    assert remote.stage_on_databricks(spec, _stage("validate", "train", "register", "release"))
    assert not remote.stage_on_databricks(spec, _stage("deploy", "promote", environment="staging"))
    assert remote.training_spec(spec) is spec
    assert remote.train_stage(spec).name == "build"


def test_inside_a_databricks_job_the_stage_trains_here_on_spark(
    spec, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(remote.IN_JOB_VARIABLE, "15.4")
    assert not remote.submits_to_databricks(spec)
    assert not remote.stage_on_databricks(spec, _stage("validate", "train", "register"))
    trained = remote.training_spec(spec)
    assert trained.compute.engine == "spark"
    assert spec.compute.engine == "databricks"  # the spec itself (and its config digest) is unchanged


def test_other_engines_ignore_the_signal(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(remote.IN_JOB_VARIABLE, "15.4")
    local = load_spec(project / "vintage.yaml")
    assert remote.training_spec(local) is local
    monkeypatch.delenv(remote.IN_JOB_VARIABLE)
    assert not remote.submits_to_databricks(local)


def test_a_submitted_stage_may_not_deploy(spec, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(remote.IN_JOB_VARIABLE, raising=False)
    with pytest.raises(ConfigError, match=r"stage s trains on Databricks .* also has the steps deploy"):
        remote.stage_on_databricks(spec, _stage("train", "register", "deploy", environment="staging"))
