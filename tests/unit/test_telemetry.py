"""MLflow's usage telemetry is off in every vintage process, unless the user turns it on."""

from __future__ import annotations

import json
import os
import subprocess
import sys

_CHECK = """
import json, vintage
from mlflow.telemetry.utils import is_telemetry_disabled
import mlflow.environment_variables as ev
print(json.dumps({"disabled": is_telemetry_disabled(), "setting": ev.MLFLOW_DISABLE_TELEMETRY.get()}))
"""


def _run(**env: str) -> dict[str, bool]:
    # Outside CI markers: MLflow also stays quiet when it believes it runs in CI or under pytest.
    base = {
        k: v for k, v in os.environ.items() if k not in ("CI", "MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK")
    }
    base = {k: v for k, v in base.items() if not k.startswith(("PYTEST", "GITHUB_", "BUILD_"))}
    out = subprocess.run([sys.executable, "-c", _CHECK], env={**base, **env}, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout))


def test_importing_vintage_turns_mlflow_telemetry_off() -> None:
    assert _run() == {"disabled": True, "setting": True}


def test_a_user_who_sets_the_variable_keeps_their_choice() -> None:
    assert _run(MLFLOW_DISABLE_TELEMETRY="false")["setting"] is False
