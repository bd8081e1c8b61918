"""Two runs that log one dataset at the same moment: the loser of the insert race retries and links it."""

from __future__ import annotations

import mlflow
import pytest
from mlflow.exceptions import MlflowException

from vintage.training import track


def test_a_unique_violation_is_retried_until_the_dataset_is_linked(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def log_input(dataset: object, context: str) -> None:
        calls.append(context)
        if len(calls) < 3:
            raise MlflowException('BAD_REQUEST: duplicate key value violates unique constraint "dataset_pk"')

    monkeypatch.setattr(mlflow, "log_input", log_input)
    monkeypatch.setattr(track.time, "sleep", lambda s: None)
    track._log_input(object())
    assert calls == ["training"] * 3


def test_other_errors_and_a_race_that_never_ends_are_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def refused(dataset: object, context: str) -> None:
        calls.append(1)
        raise MlflowException("PERMISSION_DENIED: no")

    monkeypatch.setattr(mlflow, "log_input", refused)
    with pytest.raises(MlflowException, match="PERMISSION_DENIED"):
        track._log_input(object())
    assert len(calls) == 1

    def always(dataset: object, context: str) -> None:
        calls.append(1)
        raise MlflowException("UNIQUE constraint failed: datasets.dataset_uuid")

    monkeypatch.setattr(mlflow, "log_input", always)
    monkeypatch.setattr(track.time, "sleep", lambda s: None)
    with pytest.raises(MlflowException, match="UNIQUE"):
        track._log_input(object(), attempts=3)
    assert len(calls) == 1 + 3
