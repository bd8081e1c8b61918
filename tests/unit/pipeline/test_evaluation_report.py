"""The release step's evaluation report against an in-memory registry: candidate vs the production
champion on the training holdout, written under the state directory, logged on the candidate's run,
tagged on the version, linked from the release record."""

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
from vintage.data import load_dataset
from vintage.pipeline import state as st
from vintage.pipeline.outputs import Selected, TrainOutput
from vintage.pipeline.runner import Runner

CONFIG = """
experiment: Fakes
model_name: wine
state_dir: .vintage
data: {dataset: red, target: quality}
pipeline:
  stages:
    - {name: build, steps: [validate, train, register, release]}
"""
ALCOHOL = list(WINE_FEATURES).index("alcohol")


@pytest.fixture
def world() -> Iterator[World]:
    with fake_targets() as w:
        yield w


def _spec(project: Path) -> Spec:
    path = project / "vintage.yaml"
    path.write_text(CONFIG)
    return load_spec(path)


def _build(spec: Spec, project: Path, registry: InMemoryRegistry, run: str) -> tuple[Runner, str]:
    selected = Selected(
        run_id=run,
        name="p0",
        estimator="sklearn.linear_model.ElasticNet",
        metrics={"rmse": 0.7},
        model_uri=f"runs:/{run}/model",
        training_key=f"key-{run}",
    )
    out = TrainOutput(
        parent_run_id=f"parent-{run}",
        data_digest="d1",
        selection_key="rmse",
        runs=1,
        failed=0,
        selected=selected,
    )
    runner = Runner(spec, project, registry=registry)
    run_id = runner.create()
    runner.store.set_step(run_id, "build", "train", st.SUCCEEDED, output=out.to_json())
    assert runner.execute(run_id).status == st.SUCCEEDED
    return runner, run_id


def _expected(spec: Spec, predict: Any) -> dict[str, float]:
    """The metrics computed here, from the holdout split the way training splits it."""
    ds = load_dataset(spec.data)
    _, test = ds.split(
        spec.data.split.test_size, spec.data.split.seed, group_duplicates=spec.data.split.group_duplicates
    )
    y = test[ds.target].to_numpy(dtype="float64")
    err = np.abs(y - predict(test[list(WINE_FEATURES)].to_numpy(dtype="float64")))
    return {"rmse": float(np.sqrt(np.mean(err**2))), "acc_0.5": float(np.mean(err <= 0.5)), "rows": len(y)}


def test_a_release_carries_a_report_of_candidate_against_champion(project: Path, world: World) -> None:
    spec = _spec(project)
    registry = InMemoryRegistry(columns=WINE_FEATURES)

    def better(x: np.ndarray) -> np.ndarray:
        return 5.6 + 0.35 * (x[:, ALCOHOL] - 10.4)

    registry.predict[("wine", 2)] = better
    _, first = _build(spec, project, registry, "mlrun-1")
    registry.move_alias("wine", "production", 1, actor="t")  # v1 (constant 5.6) serves production
    runner, run_id = _build(spec, project, registry, "mlrun-2")

    record = runner.store.release(run_id)
    assert record is not None
    evaluation = record["evaluation"]
    assert evaluation["report"] == f"reports/{run_id}.html"
    assert evaluation["champion_version"] == 1
    cand, champ = _expected(spec, better), _expected(spec, lambda x: np.full(len(x), 5.6))
    assert evaluation["rows"] == cand["rows"]
    for key in ("rmse", "acc_0.5"):
        assert evaluation["candidate"][key] == pytest.approx(cand[key], rel=1e-9)
        assert evaluation["champion"][key] == pytest.approx(champ[key], rel=1e-9)
    assert evaluation["candidate"]["rmse"] < evaluation["champion"]["rmse"]

    page = (spec.state_dir.resolve() / evaluation["report"]).read_text()
    assert f"{cand['rmse']:.4f}" in page and f"{champ['rmse']:.4f}" in page
    assert registry.artifacts["mlrun-2"][f"evaluation/{run_id}.html"] == page.encode()
    assert evaluation["artifact_uri"] == f"runs:/mlrun-2/evaluation/{run_id}.html"
    v2 = next(v for v in registry.versions["wine"] if v.version == 2)
    assert v2.tags["vintage.evaluation_report"] == evaluation["artifact_uri"]
    assert runner.store.run(run_id).output("release")["report"] == evaluation["report"]

    first_record = runner.store.release(first)
    assert first_record is not None and first_record["evaluation"]["champion"] is None  # nothing served


def test_release_show_prints_where_the_report_is(project: Path, world: World, cli: Any) -> None:
    spec = _spec(project)
    registry = InMemoryRegistry(columns=WINE_FEATURES)
    _, run_id = _build(spec, project, registry, "mlrun-1")

    shown = cli("release", "show", run_id)

    assert shown.code == 0, shown.err
    report = spec.state_dir.resolve() / "reports" / f"{run_id}.html"
    assert f"evaluation report: {report}" in shown.out
    assert report.is_file()
