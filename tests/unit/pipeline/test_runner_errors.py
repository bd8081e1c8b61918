"""An unexpected error in a step (a full disk, a bug) leaves the run failed with the reason, not a
``running`` run that shows as interrupted once the process is gone."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest

from vintage.config import load_spec
from vintage.pipeline import state as st
from vintage.pipeline.runner import Runner
from vintage.pipeline.steps import STEPS


def test_unexpected_step_error_fails_the_run_with_the_reason(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_disk(ctx: Any) -> dict[str, Any]:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setitem(STEPS, "validate", full_disk)
    runner = Runner(load_spec(project / "vintage.yaml"), project)
    run_id = runner.create()

    with pytest.raises(OSError):
        runner.execute(run_id)

    run = runner.store.run(run_id)
    reason = "unexpected OSError: [Errno 28] No space left on device"
    assert (run.status, run.reason, run.shown_status) == (st.FAILED, reason, st.FAILED)
    build = run.stage("build")
    assert (build.status, build.reason) == (st.FAILED, reason)
    assert build.steps[0].status == st.FAILED and build.steps[0].log == f"error: {reason}"
