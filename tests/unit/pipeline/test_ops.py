"""Approvals and names outside a run (pipeline.ops): a gate is decided once, a rejection is final, and
unknown stage or environment names are usage errors before anything is touched."""

from __future__ import annotations

from pathlib import Path

import pytest

from vintage.config import Spec, load_spec
from vintage.errors import ConfigError, PipelineError
from vintage.pipeline import ops
from vintage.pipeline import state as st

RUN = "r-1"


@pytest.fixture
def waiting(project: Path) -> tuple[Spec, st.StateStore]:
    """A run whose production stage waits at its approval gate."""
    spec = load_spec()
    store = st.StateStore(spec.state_dir.resolve())
    stages = [(s.name, s.environment, [str(x) for x in s.steps]) for s in spec.pipeline.order()]
    store.create_run(RUN, "dev", "digest", stages, {})
    store.set_stage(RUN, "production", st.WAITING, "waiting for approval")
    store.set_run(RUN, st.WAITING, "waits")
    store.add_approval(RUN, "production", "requested", "dev", "", {"candidate": "winequality v1"})
    return spec, store


def _decisions(store: st.StateStore) -> list[str]:
    return [a["decision"] for a in store.approvals(RUN)]


def test_approving_twice_is_refused_naming_who_and_nothing_is_recorded(waiting) -> None:
    spec, store = waiting
    ops.decide(spec, RUN, "production", "approved", actor="alice")
    before = _decisions(store)

    with pytest.raises(PipelineError) as exc:
        ops.decide(spec, RUN, "production", "approved", actor="bob")

    assert exc.value.exit_code == 1
    assert exc.value.headline.startswith(f"stage production of run {RUN} was already approved by alice at ")
    assert _decisions(store) == before == ["requested", "approved"]


@pytest.mark.parametrize("decision", ["approved", "rejected"])
def test_a_rejected_gate_cannot_be_decided_again(waiting, decision: str) -> None:
    spec, store = waiting
    ops.decide(spec, RUN, "production", "rejected", actor="carol", comment="wrong data")

    with pytest.raises(PipelineError) as exc:
        ops.decide(spec, RUN, "production", decision, actor="bob")

    assert "was rejected by carol at " in exc.value.headline and "(wrong data)" in exc.value.headline
    assert _decisions(store) == ["requested", "rejected"]


def test_a_rejected_run_whose_stage_was_reset_by_resume_still_says_rejected(waiting) -> None:
    spec, store = waiting
    ops.decide(spec, RUN, "production", "rejected", actor="carol")
    store.reset_stage(RUN, "production")  # what `vintage resume` does before it refuses the run

    with pytest.raises(PipelineError) as exc:
        ops.decide(spec, RUN, "production", "approved", actor="bob")

    assert "was rejected by carol" in exc.value.headline and "pending" not in exc.value.headline


def test_an_approval_not_yet_acted_on_can_be_revoked_by_a_rejection(waiting) -> None:
    spec, store = waiting
    ops.decide(spec, RUN, "production", "approved", actor="alice")
    ops.decide(spec, RUN, "production", "rejected", actor="carol")

    assert store.run(RUN).status == st.REJECTED


@pytest.mark.parametrize("decision", ["approved", "rejected"])
def test_an_unknown_stage_is_a_usage_error_even_for_an_unknown_run(project: Path, decision: str) -> None:
    with pytest.raises(ConfigError) as exc:
        ops.decide(load_spec(), "no-such-run", "prod", decision)

    assert exc.value.exit_code == 2
    assert exc.value.headline == "the pipeline has no stage 'prod'; stages: build, staging, production"


def test_unknown_environments_are_usage_errors_before_a_lock_file_exists(project: Path) -> None:
    spec = load_spec()
    for call in (ops.stop, ops.rollback, ops.target):
        with pytest.raises(ConfigError) as exc:
            call(spec, "prod")
        assert exc.value.headline == "no environment 'prod'; environments: staging, production"
    assert not (spec.state_dir.resolve() / "locks" / "env-prod.lock").exists()
