"""A dashboard over a throwaway project: its app, token and state store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from vintage.config import Spec, load_spec
from vintage.dashboard.app import create_app
from vintage.dashboard.guard import OperatorToken
from vintage.pipeline import state as st

TOKEN = "t0k3n-for-the-tests-only"
WAITING_RUN = "20261204-100000-aaaa"


@dataclass
class Dash:
    """The app under test and what it reads."""

    app: Any
    spec: Spec
    store: st.StateStore
    token: OperatorToken
    monitor_calls: list[tuple[str, Any]]


def add_waiting_run(spec: Spec, run_id: str = WAITING_RUN, actor: str = "dev") -> st.StateStore:
    """A run whose build and staging succeeded and whose production stage waits at its approval gate."""
    store = st.StateStore(spec.state_dir.resolve())
    stages = [(s.name, s.environment, [str(x) for x in s.steps]) for s in spec.pipeline.order()]
    store.create_run(run_id, actor, "digest", stages, {})
    for stage, steps in (("build", stages[0][2]), ("staging", stages[1][2])):
        store.set_stage(run_id, stage, st.RUNNING)
        for step in steps:
            store.set_step(run_id, stage, step, st.RUNNING)
            store.set_step(run_id, stage, step, st.SUCCEEDED, output={"seconds": 0.01}, log=f"{step} ok")
        store.set_stage(run_id, stage, st.SUCCEEDED)
    store.set_stage(run_id, "production", st.RUNNING)
    store.set_step(run_id, "production", "approval", st.RUNNING)
    store.set_step(run_id, "production", "approval", st.WAITING)
    store.set_stage(run_id, "production", st.WAITING, "waiting for approval")
    store.set_run(run_id, st.WAITING, "production waits for approval")
    store.add_approval(
        run_id, "production", "requested", actor, "", {"candidate": "winequality v1", "rmse": 0.71}
    )
    return store


@pytest.fixture
def dash(project: Path) -> Dash:
    """The dashboard of a project with one run waiting for production's approval, and a monitor that
    answers ``None`` (no monitoring in the build) while recording its calls."""
    spec = load_spec()
    store = add_waiting_run(spec)
    token = OperatorToken(TOKEN, "operator")
    calls: list[tuple[str, Any]] = []

    def monitor(env: str, since: Any) -> None:
        calls.append((env, since))

    app = create_app(
        spec, token, host="127.0.0.1", port=8090, mlflow_base="http://127.0.0.1:5000", monitor=monitor
    )
    return Dash(app, spec, store, token, calls)
