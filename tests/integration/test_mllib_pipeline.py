"""`vintage run` end to end with a Spark MLlib estimator, under the memory guard
(``support.spark.guarded_vintage``: data validated in 200-row chunks; ``Dataset.frame``/``split``, a pandas
read of the whole file or a Spark ``toPandas`` of more than 200 rows fails the run).

Build (MLlib on ``local[2]``), staging deploy + smoke test (``Dataset.head``) + champion gate (the
trainer's Spark holdout, scored with Spark SQL), production with an API key, and the curl example; then a
second run with a better grid point, so the gate compares a candidate against the production champion.
The gate's scores must equal the rmse each version's own training run logged: that metric came from the
MLlib trainer's ``evaluate`` on its holdout, so equality (to rounding) means the gate scored the same rows.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from support.scoring import free_port, invoke
from support.spark import MEMORY_GUARD, guarded_vintage, spark_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

VINTAGE = str(Path(sys.executable).with_name("vintage"))
REPO = Path(__file__).resolve().parents[2]
RED = REPO / "src/vintage/data/wine_quality/winequality-red.csv"
FIRST = {"regParam": 0.1, "elasticNetParam": 0.5}
BETTER = {"regParam": 0.01, "elasticNetParam": 0.0}


class Project:
    def __init__(self, root: Path, work: Path) -> None:
        self.root, self.work = root, work
        root.mkdir(parents=True)
        data = root / "data" / "wines.csv"  # 1599 rows: eight of the guard's 200-row chunks
        data.parent.mkdir()
        pd.read_csv(RED, sep=";").to_csv(data, index=False)
        self.spec = yaml.safe_load((REPO / "vintage.yaml").read_text())
        self.spec["data"] = {**self.spec["data"], "path": str(data)}
        del self.spec["data"]["dataset"]
        self.spec["selection"]["threshold"] = None
        self.spec["selection"].pop("cv", None)  # MLlib points are scored on the holdout only
        self.spec["compute"] = {"engine": "spark", "spark": {"master": "local[2]"}}
        self.spec["environments"] = {
            "staging": {"port": free_port()},
            "production": {"port": free_port(), "api_keys": True},
        }
        self.grid(FIRST)
        self.env = {**spark_env(work), "PYTHONPATH": str(REPO / "tests")}

    def grid(self, point: dict[str, float]) -> None:
        self.spec["estimator"] = {
            "class": "pyspark.ml.regression.LinearRegression",
            "params": {"maxIter": 100},
            "grid": [point],
        }
        (self.root / "vintage.yaml").write_text(yaml.safe_dump(self.spec, sort_keys=False))

    def vintage(self, *args: str, guarded: bool = False) -> subprocess.CompletedProcess[str]:
        command = guarded_vintage(self.work) if guarded else [VINTAGE]
        return subprocess.run(
            [*command, *args], cwd=self.root, capture_output=True, text=True, timeout=600, env=self.env
        )

    def json(self, *args: str) -> Any:
        res = self.vintage(*args, "--json")
        assert res.returncode == 0, res.stderr[-2000:]
        return json.loads(res.stdout)

    def url(self, env: str) -> str:
        return f"http://127.0.0.1:{self.spec['environments'][env]['port']}"


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    proj = Project(tmp_path / "p", tmp_path / "w")
    assert proj.vintage("secrets", "create-scope", "production/serving").returncode == 0
    put = proj.vintage("secrets", "put", "-s", "production/serving", "-k", "primary", "--generate")
    assert put.returncode == 0, put.stderr
    try:
        yield proj
    finally:
        for env in ("staging", "production"):
            proj.vintage("stop", env)


def _post(url: str, row: list[float], key: str | None = None) -> tuple[int, Any]:
    return invoke(url, {"inputs": [row]}, key)


def test_mllib_pipeline_gates_run_in_bounded_driver_memory(project):
    first = project.vintage("run", "--auto-approve", guarded=True)
    assert first.returncode == 0, first.stderr[-3000:]
    assert MEMORY_GUARD not in first.stderr
    assert "smoke test passed (10 rows" in first.stderr
    [run1] = project.json("runs", "list")
    assert run1["status"] == "succeeded"
    release1 = project.json("release", "show", run1["id"])
    assert release1["version"] == 1
    assert release1["champion"]["verdict"] == "no champion"
    rmse1 = release1["metrics"]["rmse"]  # the MLlib trainer's evaluate() on its own holdout
    assert 0.5 < rmse1 < 0.8
    assert release1["champion"]["candidate_score"] == pytest.approx(rmse1, rel=1e-12, abs=0)

    # the curl example shows the file's first row (from Dataset.head) with the production key's command
    wine = pd.read_csv(RED, sep=";")
    features = list(project.spec["data"]["features"])
    example = next(
        line for line in first.stdout.splitlines() if project.url("production") in line and "curl" in line
    )
    body = json.loads(example.split(" -d '", 1)[1].rsplit("'", 1)[0])
    assert body["dataframe_split"]["columns"] == features
    assert body["dataframe_split"]["data"] == [wine[features].iloc[0].tolist()]
    assert "vintage secrets get -s production/serving -k primary" in example

    # a better grid point: version 2 against production v1 on the same Spark holdout
    project.grid(BETTER)
    second = project.vintage("run", "--auto-approve", guarded=True)
    assert second.returncode == 0, second.stderr[-3000:]
    assert MEMORY_GUARD not in second.stderr
    run2 = project.json("runs", "list")[0]
    assert run2["id"] != run1["id"] and run2["status"] == "succeeded"
    release2 = project.json("release", "show", run2["id"])
    champion = release2["champion"]
    assert (release2["version"], champion["candidate"], champion["champion"]) == (2, 2, 1)
    assert champion["verdict"] == "not worse" and champion["metric"] == "rmse"
    rmse2 = release2["metrics"]["rmse"]
    assert rmse2 < rmse1
    assert champion["candidate_score"] == pytest.approx(rmse2, rel=1e-12, abs=0)
    assert champion["champion_score"] == pytest.approx(rmse1, rel=1e-12, abs=0)

    # production serves v2, only with its key; staging serves v2
    key = project.vintage("secrets", "get", "-s", "production/serving", "-k", "primary").stdout
    row = wine[features].iloc[0].tolist()
    assert _post(project.url("production"), row)[0] == 401
    status, answer = _post(project.url("production"), row, key)
    assert status == 200 and len(answer["predictions"]) == 1
    served = {env: (dep or {}).get("version") for env, dep in project.json("status").items()}
    assert served == {"staging": 2, "production": 2}
