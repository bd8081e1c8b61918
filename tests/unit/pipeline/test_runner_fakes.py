"""The runner, the champion and approval gates, approvals and environment locks against an in-memory
registry and a fake deploy target (``target: fake``): no server, no MLflow, no training."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from support.fake_registry import InMemoryRegistry
from support.fake_target import World, fake_targets
from vintage.config import Spec, load_spec
from vintage.config.models import WINE_FEATURES
from vintage.errors import ApprovalRejected, DeployError, PipelineError, WaitingApproval
from vintage.pipeline import ops
from vintage.pipeline import state as st
from vintage.pipeline.gates import GateRefused
from vintage.pipeline.outputs import Selected, TrainOutput
from vintage.pipeline.runner import Runner
from vintage.pipeline.steps import STEPS

CONFIG = """
experiment: Fakes
model_name: wine
state_dir: .vintage
data: {{dataset: red, target: quality}}
environments:
  staging: {{target: fake, port: 18081{staging}}}
  production: {{target: fake, port: 18082, approvers: [alice, bob], forbid_self_approval: true{production}}}
pipeline:
  stages:
    - {{name: build, steps: [validate, train, register, release]}}
    - {{name: staging, environment: staging, depends_on: [build], steps: [deploy, champion_gate, promote]}}
    - {{name: production, environment: production, depends_on: [staging], steps: [approval, deploy, promote]}}
"""


@pytest.fixture
def world() -> Iterator[World]:
    with fake_targets() as w:
        yield w


@pytest.fixture
def registry() -> InMemoryRegistry:
    return InMemoryRegistry(columns=WINE_FEATURES)


def _spec(project: Path, staging: str = "", production: str = "") -> Spec:
    path = project / "vintage.yaml"
    path.write_text(CONFIG.format(staging=staging, production=production))
    return load_spec(path)


def _trained(run_id: str = "mlrun-1", key: str = "key-1", rmse: float = 0.65) -> dict[str, Any]:
    selected = Selected(
        run_id=run_id,
        name="elasticnet-0",
        estimator="sklearn.linear_model.ElasticNet",
        metrics={"rmse": rmse, "mae": 0.5, "r2": 0.3},
        model_uri=f"runs:/{run_id}/model",
        training_key=key,
    )
    out = TrainOutput(
        parent_run_id=f"parent-{run_id}",
        data_digest="d1",
        selection_key="rmse",
        runs=3,
        failed=0,
        selected=selected,
    )
    return out.to_json()


def _start(spec: Spec, project: Path, registry: InMemoryRegistry, **train: Any) -> tuple[Runner, str]:
    """A run whose train step already succeeded (as after a resume): the other steps run for real."""
    runner = Runner(spec, project, registry=registry)
    run_id = runner.create()
    runner.store.set_step(run_id, "build", "train", st.SUCCEEDED, output=_trained(**train))
    return runner, run_id


def test_a_run_deploys_gates_and_waits_for_approval_then_goes_on(
    project: Path, world: World, registry: InMemoryRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VINTAGE_ACTOR", "alice")
    spec = _spec(project)
    runner, run_id = _start(spec, project, registry)

    with pytest.raises(WaitingApproval):
        runner.execute(run_id)

    run = runner.store.run(run_id)
    assert [s.status for s in run.stages] == [st.SUCCEEDED, st.SUCCEEDED, st.WAITING]
    assert world.calls == [("staging", "started", 1)]
    assert registry.aliases[("wine", "candidate")] == registry.aliases[("wine", "staging")] == 1
    assert registry.run_tags["parent-mlrun-1"]["vintage.registered_version"] == "1"
    assert run.output("champion_gate")["verdict"] == "no champion"
    assert run.output("register") == {
        "model_name": "wine",
        "version": 1,
        "run_id": "mlrun-1",
        "reused": False,
    } | {"seconds": run.output("register")["seconds"]}

    with pytest.raises(PipelineError, match=r"alice started run .* may not approve it"):
        ops.decide(spec, run_id, "production", "approved", actor="alice")
    ops.decide(spec, run_id, "production", "approved", actor="bob", comment="looks good")
    final = runner.resume(run_id)

    assert final.status == st.SUCCEEDED
    assert world.calls[-1] == ("production", "started", 1)
    assert registry.aliases[("wine", "production")] == 1
    assert final.output("approval")["by"] == "bob"
    record = runner.store.release(run_id)
    assert record is not None and record["approvals"]["production"]["by"] == "bob"


def test_the_champion_gate_refuses_a_worse_candidate_and_rolls_the_environment_back(
    project: Path, world: World, registry: InMemoryRegistry
) -> None:
    spec = _spec(project)
    # v1 is production's champion and predicts well; the candidate v2 predicts a constant.
    first, run1 = _start(spec, project, registry, run_id="mlrun-1", key="k1")
    first.execute(run1, only="build")
    registry.move_alias("wine", "production", 1, actor="test")
    registry.predict[("wine", 1)] = lambda x: x[:, WINE_FEATURES.index("alcohol")] * 0.36 + 1.8
    registry.predict[("wine", 2)] = lambda x: np.full(len(x), 9.0)
    first.execute(run1, only="staging")  # v1 in staging: the candidate is the champion
    second, run2 = _start(spec, project, registry, run_id="mlrun-2", key="k2")

    with pytest.raises(GateRefused, match=r"champion gate: candidate v2 rmse .* is worse than production v1"):
        second.execute(run2)

    assert world.calls[-2:] == [("staging", "swapped", 2), ("staging", "restore", 1)]
    assert world.serving["staging"] is not None and world.serving["staging"].version == 1
    assert registry.aliases[("wine", "staging")] == 1  # promote never ran
    run = second.store.run(run2)
    assert run.stage("staging").status == st.FAILED
    assert run.stage("production").status == st.SKIPPED
    record = second.store.release(run2)
    assert record is not None and record["champion"]["verdict"] == "refused"
    assert record["deployments"]["staging"]["rolled_back"] is True


def test_registering_the_same_model_again_reuses_the_version(
    project: Path, world: World, registry: InMemoryRegistry
) -> None:
    spec = _spec(project)
    for _ in range(2):
        runner, run_id = _start(spec, project, registry, run_id="mlrun-1", key="k1")
        runner.execute(run_id, only="build")
    assert [v.version for v in registry.versions["wine"]] == [1]
    assert runner.store.run(run_id).output("register")["reused"] is True


def test_a_rejection_rejects_the_stage_and_the_run_for_good(
    project: Path, world: World, registry: InMemoryRegistry
) -> None:
    spec = _spec(project)
    runner, run_id = _start(spec, project, registry)
    with pytest.raises(WaitingApproval):
        runner.execute(run_id)

    ops.decide(spec, run_id, "production", "rejected", actor="bob", comment="no")

    run = runner.store.run(run_id)
    assert (run.status, run.stage("production").status) == (st.REJECTED, st.REJECTED)
    with pytest.raises(PipelineError, match=r"was rejected by bob .* cannot be approved again"):
        ops.decide(spec, run_id, "production", "approved", actor="alice")
    with pytest.raises(PipelineError, match=f"run {run_id} is rejected"):
        runner.resume(run_id)
    assert ("production", "started", 1) not in world.calls


def test_the_approval_gate_raises_approval_rejected_and_the_runner_records_rejected(
    project: Path, world: World, registry: InMemoryRegistry
) -> None:
    """A rejection recorded while the run was not marked rejected (a decision racing a resume)."""
    spec = _spec(project)
    runner, run_id = _start(spec, project, registry)
    with pytest.raises(WaitingApproval):
        runner.execute(run_id)
    runner.store.add_approval(run_id, "production", "rejected", "bob", "too risky")

    with pytest.raises(ApprovalRejected, match="production was rejected by bob: too risky"):
        runner.execute(run_id)

    assert runner.store.run(run_id).stage("production").status == st.REJECTED


def test_a_failure_whose_message_mentions_a_rejection_is_a_failure_not_a_rejection(
    project: Path, world: World, registry: InMemoryRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuses(ctx: Any) -> None:
        raise PipelineError("the upload was rejected by the proxy (413)")

    monkeypatch.setitem(STEPS, "release", refuses)
    spec = _spec(project)
    runner, run_id = _start(spec, project, registry)
    with pytest.raises(PipelineError, match="rejected by the proxy"):
        runner.execute(run_id)
    assert runner.store.run(run_id).stage("build").status == st.FAILED


def test_approving_twice_records_one_approval(
    project: Path, world: World, registry: InMemoryRegistry
) -> None:
    spec = _spec(project)
    runner, run_id = _start(spec, project, registry)
    with pytest.raises(WaitingApproval):
        runner.execute(run_id)
    ops.decide(spec, run_id, "production", "approved", actor="bob")
    with pytest.raises(PipelineError, match="already approved by bob"):
        ops.decide(spec, run_id, "production", "approved", actor="alice")
    assert [a["decision"] for a in runner.store.approvals(run_id, "production")] == ["requested", "approved"]


def test_an_approver_outside_the_list_is_refused(
    project: Path, world: World, registry: InMemoryRegistry
) -> None:
    spec = _spec(project)
    runner, run_id = _start(spec, project, registry)
    with pytest.raises(WaitingApproval):
        runner.execute(run_id)
    with pytest.raises(PipelineError, match="mallory may not approve production: approvers are alice, bob"):
        ops.decide(spec, run_id, "production", "approved", actor="mallory")


def test_an_approval_request_older_than_the_ttl_expires_the_run(
    project: Path, world: World, registry: InMemoryRegistry
) -> None:
    spec = _spec(project, production=", approval_ttl_hours: 0.000000001")
    runner, run_id = _start(spec, project, registry)
    with pytest.raises(WaitingApproval):
        runner.execute(run_id)

    with pytest.raises(PipelineError, match=r"the approval request of run .* expired"):
        ops.decide(spec, run_id, "production", "approved", actor="bob")

    assert runner.store.run(run_id).status == st.EXPIRED
    with pytest.raises(PipelineError, match="is expired"):
        runner.resume(run_id)


def test_a_locked_environment_fails_the_stage_after_its_lock_timeout(
    project: Path, world: World, registry: InMemoryRegistry
) -> None:
    spec = _spec(project, staging=", lock_timeout_s: 0.3")
    runner, run_id = _start(spec, project, registry)
    runner.execute(run_id, only="build")
    with (
        ops.env_lock(spec, "staging"),
        pytest.raises(PipelineError, match="environment staging stayed locked"),
    ):
        runner.execute(run_id, only="staging")
    assert world.calls == []  # nothing deployed without the lock
    assert runner.store.run(run_id).stage("staging").status == st.FAILED


def test_run_latest_lets_the_newest_waiting_run_go(
    project: Path, world: World, registry: InMemoryRegistry
) -> None:
    spec = _spec(project, staging=", lock_behavior: run_latest")
    older, old_id = _start(spec, project, registry)
    older.execute(old_id, only="build")
    _newer, new_id = _start(spec, project, registry)
    older.store.wait_for(new_id, "staging")  # the newer run waits for staging too

    with (
        ops.env_lock(spec, "staging"),
        pytest.raises(PipelineError, match=f"superseded: run {new_id} is newer"),
    ):
        older.execute(old_id, only="staging")

    assert older.store.run(old_id).status == st.SUPERSEDED
    assert world.calls == []


def test_a_target_that_fails_to_deploy_fails_the_stage_and_promotes_nothing(
    project: Path, world: World, registry: InMemoryRegistry
) -> None:
    world.fail_deploy = "port 18081 is taken"
    spec = _spec(project)
    runner, run_id = _start(spec, project, registry)
    with pytest.raises(DeployError, match="port 18081 is taken"):
        runner.execute(run_id)
    assert ("wine", "staging") not in registry.aliases
    assert runner.store.run(run_id).stage("staging").status == st.FAILED
    record = runner.store.release(run_id)
    assert record is not None
    failed = record["deployments"]["staging"]
    assert failed["action"] == "failed" and failed["version"] == 1
    assert failed["error"] == "port 18081 is taken"


def test_status_stop_and_rollback_reach_the_environments_target_through_the_table(
    project: Path, world: World, registry: InMemoryRegistry
) -> None:
    spec = _spec(project)
    for n in (1, 2):
        runner, run_id = _start(spec, project, registry, run_id=f"mlrun-{n}", key=f"k{n}")
        runner.execute(run_id, only="build")
        runner.execute(run_id, only="staging")
    assert registry.aliases[("wine", "staging")] == 2

    assert ops.rollback(spec, "staging", registry=registry) == (2, 1)

    served = ops.status(spec)["staging"]
    assert served is not None and served.version == 1
    assert registry.aliases[("wine", "staging")] == 1
    assert registry.history[("wine", "staging")][-1]["reason"] == "rollback from v2"
    assert ops.stop(spec, "staging") is True
    assert ops.status(spec) == {"staging": None, "production": None}


def test_an_environment_that_died_is_crashed_in_status_and_on_the_dashboard(
    project: Path, world: World, registry: InMemoryRegistry
) -> None:
    from vintage.dashboard.views import environments

    spec = _spec(project)
    runner, run_id = _start(spec, project, registry)
    runner.execute(run_id, only="build")
    runner.execute(run_id, only="staging")
    world.serving["staging"] = None
    world.crashed["staging"] = "its server (pid 4242) is gone but was never stopped"
    crashed: dict[str, str] = {}
    assert ops.status(spec, crashed=crashed) == {"staging": None, "production": None}
    assert crashed == {"staging": "its server (pid 4242) is gone but was never stopped"}
    rows = {r.name: r for r in environments(spec)}
    assert (rows["staging"].health, rows["staging"].error) == ("crashed", crashed["staging"])
    assert (rows["production"].health, rows["production"].error) == ("stopped", None)


def test_rollback_without_an_earlier_version_is_refused(
    project: Path, world: World, registry: InMemoryRegistry
) -> None:
    spec = _spec(project)
    runner, run_id = _start(spec, project, registry)
    runner.execute(run_id, only="build")
    runner.execute(run_id, only="staging")
    with pytest.raises(PipelineError, match="no earlier version of wine was promoted to staging"):
        ops.rollback(spec, "staging", registry=registry)
    assert world.calls == [("staging", "started", 1)]


def test_status_of_one_unreachable_target_does_not_hide_the_other_environments(
    project: Path, world: World, registry: InMemoryRegistry
) -> None:
    spec = _spec(project)
    runner, run_id = _start(spec, project, registry)
    runner.execute(run_id, only="build")
    runner.execute(run_id, only="staging")

    def broken(cls: type, spec: Spec, environment: str) -> Any:
        raise DeployError("the container target needs podman, which is not installed")

    from vintage.plugins import DEPLOY_TARGETS

    with DEPLOY_TARGETS.override("broken", type("Broken", (), {"from_spec": classmethod(broken)})):
        production = spec.environments["production"]
        spec.environments["production"] = production.model_copy(update={"target": "broken"})
        with pytest.raises(DeployError):
            ops.status(spec)
        errors: dict[str, Any] = {}
        found = ops.status(spec, errors=errors)
    assert found["staging"] is not None and found["staging"].version == 1
    assert found["production"] is None
    assert list(errors) == ["production"] and "podman" in errors["production"].headline


def test_a_change_of_target_is_refused_while_the_old_target_serves_and_stop_reaches_it(
    project: Path, world: World, registry: InMemoryRegistry
) -> None:
    """staging went from `target: fake` to `target: fake2`: the old server would keep the port, and no command
    of the new target could stop it. The deploy refuses with the fix; status shows the old server; stop
    stops it; then the new target deploys."""
    from support.fake_target import FakeTarget
    from vintage.plugins import DEPLOY_TARGETS

    spec = _spec(project)
    runner, run_id = _start(spec, project, registry)
    runner.execute(run_id, only="build")
    runner.execute(run_id, only="staging")
    assert world.serving["staging"] is not None

    other = World()
    with DEPLOY_TARGETS.override("fake2", type("Fake2", (FakeTarget,), {"TYPE": "fake2", "world": other})):
        staging = spec.environments["staging"]
        spec.environments["staging"] = staging.model_copy(update={"target": "fake2"})
        runner, run_id = _start(spec, project, registry, run_id="mlrun-2", key="k2")
        runner.execute(run_id, only="build")
        with pytest.raises(DeployError) as exc:
            runner.execute(run_id, only="staging")
        assert exc.value.headline.startswith("staging is still served by its fake target (wine v1")
        assert exc.value.hint == "stop it first: vintage stop staging; then run again"
        assert other.calls == []  # the new target was never asked to deploy

        shown = ops.status(spec)["staging"]
        assert shown is not None and shown.target == "fake" and shown.version == 1
        assert ops.stop(spec, "staging") is True
        assert world.serving["staging"] is None

        runner, run_id = _start(spec, project, registry, run_id="mlrun-3", key="k3")
        runner.execute(run_id, only="build")
        runner.execute(run_id, only="staging")
        assert other.calls == [("staging", "stop", None), ("staging", "started", 3)]  # stop asked both
        assert ops.status(spec)["staging"].target == "fake2"  # type: ignore[union-attr]
