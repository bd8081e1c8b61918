"""Typed step outputs are stored as the same JSON the step dictionaries were: the same keys, in the same
order, optional keys left out as before; what is stored reads back to the same object."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from vintage.pipeline import state as st
from vintage.pipeline.outputs import OUTPUTS, RegisterOutput, TrainOutput
from vintage.registry import RegisteredVersion

DEPLOYMENT = {
    "environment": "staging",
    "model_name": "winequality",
    "version": 2,
    "model_dir": "/state/models/abc",
    "url": "http://127.0.0.1:8081",
    "pid": 4242,
    "since": "2026-01-01T00:00:00+00:00",
    "healthy": True,
    "digest": "sha256:ab",
    "served_digest": "sha256:ab",
}
JOB = {"databricks_run_id": 7, "task_run_id": 8, "run_page_url": None, "result_state": "SUCCESS"}
SELECTED = {
    "run_id": "r1",
    "name": "elasticnet-0",
    "estimator": "sklearn.linear_model.ElasticNet",
    "metrics": {"rmse": 0.65, "mae": 0.5, "r2": 0.31, "fit_seconds": 0.01},
    "model_uri": "runs:/r1/model",
    "training_key": None,
}

# What each step returned before its output was typed (copied from the step functions' dictionaries).
OLD: list[tuple[str, dict[str, Any]]] = [
    ("validate", {"source": "packaged:red", "rows": 1599, "digest": "d1"}),
    ("validate", {"digest": "d1", "databricks": JOB}),
    (
        "train",
        {
            "parent_run_id": "p1",
            "data_digest": "d1",
            "selection_key": "rmse",
            "runs": 3,
            "failed": 0,
            "selected": SELECTED,
        },
    ),
    (
        "train",
        {
            "parent_run_id": "p1",
            "data_digest": "d1",
            "selection_key": "rmse",
            "runs": 3,
            "failed": 1,
            "selected": SELECTED,
            "databricks": JOB,
        },
    ),
    ("register", {"model_name": "winequality", "version": 1, "run_id": "r1", "reused": False}),
    (
        "register",
        {
            "model_name": "winequality",
            "version": 1,
            "run_id": "r0",
            "reused": True,
            "reproduced_by_run_id": "r1",
        },
    ),
    (
        "register",
        {"model_name": "winequality", "version": 1, "run_id": "r1", "reused": False, "databricks": JOB},
    ),
    ("release", {"path": "releases/20260101-abc.json"}),
    ("deploy", {"action": "started", "current": DEPLOYMENT, "previous": None}),
    ("deploy", {"action": "swapped", "current": DEPLOYMENT, "previous": DEPLOYMENT | {"version": 1}}),
    ("smoke_test", {"rows": 10, "max_diff": 0.0, "url": "http://127.0.0.1:8081"}),
    (
        "champion_gate",
        {
            "candidate": 2,
            "candidate_score": 0.64,
            "metric": "rmse",
            "champion": None,
            "champion_score": None,
            "tolerance": 0.0,
            "forced": False,
            "verdict": "no champion",
        },
    ),
    (
        "champion_gate",
        {
            "candidate": 2,
            "candidate_score": 0.7,
            "metric": "rmse",
            "champion": 1,
            "champion_score": 0.6,
            "tolerance": 0.0,
            "forced": True,
            "force_reason": "hotfix",
            "verdict": "forced",
        },
    ),
    ("approval", {"decision": "approved", "by": "ci", "auto": True}),
    ("approval", {"decision": "approved", "by": "bob", "time": "2026-01-01T00:00:00+00:00", "comment": ""}),
    ("promote", {"alias": "staging", "version": 2, "previous": None}),
    ("promote", {"alias": "production", "version": 2, "previous": 1}),
]


@pytest.mark.parametrize(("step", "old"), OLD, ids=[f"{s}-{i}" for i, (s, _) in enumerate(OLD)])
def test_the_stored_json_is_what_the_step_dictionary_was(step: str, old: dict[str, Any]) -> None:
    typed = OUTPUTS[step].from_json(old)
    assert json.dumps(typed.to_json()) == json.dumps(old)  # same keys, same order, same values


@pytest.mark.parametrize(("step", "old"), OLD[:6], ids=[f"{s}-{i}" for i, (s, _) in enumerate(OLD[:6])])
def test_the_state_store_round_trip_keeps_the_output(tmp_path: Path, step: str, old: dict[str, Any]) -> None:
    store = st.StateStore(tmp_path)
    store.create_run("r", "me", "c", [("build", None, [step])], {})
    typed = OUTPUTS[step].from_json(old)
    store.set_step("r", "build", step, st.SUCCEEDED, output={**typed.to_json(), "seconds": 0.5})
    stored = store.run("r").output(step)
    assert stored == {**old, "seconds": 0.5}
    assert OUTPUTS[step].from_json(stored) == typed


def test_every_step_has_an_output_type() -> None:
    from vintage.pipeline.steps import STEPS

    assert set(OUTPUTS) == set(STEPS)


def test_a_stored_output_of_another_shape_is_refused() -> None:
    with pytest.raises(ValidationError):
        TrainOutput.from_json({"parent_run_id": "p1", "selected": {}})


def test_the_register_output_names_the_run_that_produced_the_version() -> None:
    reused = RegisteredVersion("m", 1, "r0", reused=True)
    assert RegisterOutput.of(reused, "r1").to_json() == {
        "model_name": "m",
        "version": 1,
        "run_id": "r0",
        "reused": True,
        "reproduced_by_run_id": "r1",
    }
    assert "reproduced_by_run_id" not in RegisterOutput.of(RegisteredVersion("m", 1, "r1"), "r1").to_json()
