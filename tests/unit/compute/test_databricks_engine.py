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


def test_a_resumed_stage_reads_the_finished_job_again_instead_of_resubmitting(
    spec, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process died after ``validate`` recorded the job's outcome: ``train`` must not submit again."""
    from vintage.pipeline import state as st
    from vintage.pipeline.context import StepContext

    monkeypatch.delenv(remote.IN_JOB_VARIABLE, raising=False)
    store = st.StateStore(spec.state_dir.resolve())
    stage = spec.pipeline.order()[0]
    store.create_run("r1", "me", "digest", [(stage.name, None, [str(s) for s in stage.steps])], {})
    job = {"databricks_run_id": 7, "task_run_id": 8, "run_page_url": None, "result_state": "SUCCESS"}
    store.set_step("r1", stage.name, "validate", st.SUCCEEDED, output={"digest": "d", "databricks": job})

    def no_submit(*args: object, **kwargs: object) -> None:
        raise AssertionError("submitted again")

    read: list[dict[str, object]] = []

    def fake_read(session: object, spec: object, run_id: str, job: dict[str, object]) -> object:
        read.append(job)
        raise remote.PipelineError("stop here")  # what follows is covered end to end

    monkeypatch.setattr(remote, "submit", no_submit)
    monkeypatch.setattr(remote, "read_outcome", fake_read)
    said: list[str] = []
    ctx = StepContext(spec, project, store, "r1", stage, {}, said.append)
    ctx._session = object()  # type: ignore[assignment]
    backend = remote.DatabricksBackend.from_spec(spec, stage)
    assert isinstance(backend, remote.DatabricksBackend)
    with pytest.raises(remote.PipelineError, match="stop here"):
        backend.run_step(ctx, "train")
    assert read == [job]
    assert said == ["Databricks run 7 already ran this stage; reading its outcome"]
