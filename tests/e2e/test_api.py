"""The Python API (vintage.api.Project), as a notebook uses it: train, load the registered model, predict a
frame, run a pipeline stage; the same figures the CLI gives."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vintage.api import Project
from vintage.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[2]
VINTAGE = str(Path(sys.executable).with_name("vintage"))
RED = REPO / "src/vintage/data/wine_quality/winequality-red.csv"

pytestmark = pytest.mark.slow


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copy(REPO / "vintage.yaml", tmp_path / "vintage.yaml")
    monkeypatch.chdir(tmp_path)  # state_dir (.vintage) is relative to the working directory
    for name in [k for k in os.environ if k.startswith(("VINTAGE_", "MLFLOW_"))]:
        monkeypatch.delenv(name)
    return tmp_path


def test_train_load_and_predict_give_what_the_cli_gives(project: Path) -> None:
    api = Project(project / "vintage.yaml")
    seen: list[str] = []
    built = api.train(n_jobs=1, on_point=lambda run: seen.append(run.name))
    assert built.version.version == 1 and built.version.aliases == ["candidate"]
    assert sorted(seen) == sorted(r.name for r in built.report.runs) and len(seen) == 3
    frame = pd.read_csv(RED, sep=";").head(25)
    frame.index = [f"wine-{i}" for i in range(25)]
    predicted = api.predict(frame, "candidate")
    assert predicted.name == "prediction" and list(predicted.index) == list(frame.index)

    # `vintage score` with the same model on the same rows
    frame.to_csv(project / "rows.csv", index=False)
    scored = subprocess.run(
        [VINTAGE, "score", "-i", "rows.csv", "-o", "out.csv", "-m", "1"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert scored.returncode == 0, scored.stderr
    np.testing.assert_array_equal(predicted.to_numpy(), pd.read_csv(project / "out.csv")["prediction"])

    model = api.load_model("1")
    assert api.model_dir("candidate") == api.model_dir("1")  # one download per version
    np.testing.assert_array_equal(api.predict(frame, model).to_numpy(), predicted.to_numpy())
    with pytest.raises(DataError, match="lacks 1 of the model's columns: 'alcohol'"):
        api.predict(frame.drop(columns="alcohol"), model)
    words = frame.astype({"pH": object})
    words.loc["wine-3", "pH"] = "acidic"
    with pytest.raises(DataError, match="must hold numbers"):
        api.predict(words, model)


def test_run_stage_runs_one_stage_of_a_pipeline_run_as_the_cli_does(project: Path) -> None:
    api = Project(project / "vintage.yaml")
    with pytest.raises(ConfigError, match="invalid run id"):
        api.run_stage("build", run_id="no spaces")
    with pytest.raises(ConfigError, match="the pipeline has no stage 'nightly'"):
        api.run_stage("nightly", run_id="nb-1")
    run = api.run_stage("build", run_id="nb-1")
    assert (run.stages[0].name, run.stages[0].status) == ("build", "succeeded")
    shown = subprocess.run(
        [VINTAGE, "runs", "show", "nb-1", "--json"], cwd=project, capture_output=True, text=True, timeout=120
    )
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["stages"][0]["status"] == "succeeded"
    assert api.with_compute(master="local[1]").spec.compute.engine == "spark"
    assert api.spec.compute.engine == "local"  # the project itself is unchanged
