"""Two runs that log one dataset at the same moment: the loser of the insert race retries and links it."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from mlflow.entities import Dataset
from mlflow.exceptions import MlflowException

from vintage.training import track

DATASET = Dataset(name="wine-quality-red", digest="abc123", source_type="local", source="file:///wine.csv")


class _Client:
    def __init__(self, *errors: str) -> None:
        self.errors = list(errors)
        self.calls: list[tuple[str, Any]] = []

    def log_inputs(self, run_id: str, datasets: Any) -> None:
        self.calls.append((run_id, datasets))
        if self.errors:
            raise MlflowException(self.errors.pop(0))


def _session(client: _Client) -> Any:
    return SimpleNamespace(client=client)


def test_a_unique_violation_is_retried_until_the_dataset_is_linked(monkeypatch: pytest.MonkeyPatch) -> None:
    race = 'BAD_REQUEST: duplicate key value violates unique constraint "dataset_pk"'
    client = _Client(race, race)
    monkeypatch.setattr(track.time, "sleep", lambda s: None)
    track._log_input(_session(client), "run1", DATASET, tags={"vintage.split": "duplicate-groups"})
    assert len(client.calls) == 3
    run_id, (linked,) = client.calls[-1]
    assert run_id == "run1" and linked.dataset is DATASET
    assert {t.key: t.value for t in linked.tags} == {
        "vintage.split": "duplicate-groups",
        "mlflow.data.context": "training",
    }


def test_other_errors_and_a_race_that_never_ends_are_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    client = _Client("PERMISSION_DENIED: no")
    with pytest.raises(MlflowException, match="PERMISSION_DENIED"):
        track._log_input(_session(client), "run1", DATASET)
    assert len(client.calls) == 1

    client = _Client(*["UNIQUE constraint failed: datasets.dataset_uuid"] * 5)
    monkeypatch.setattr(track.time, "sleep", lambda s: None)
    with pytest.raises(MlflowException, match="UNIQUE"):
        track._log_input(_session(client), "run1", DATASET, attempts=3)
    assert len(client.calls) == 3
