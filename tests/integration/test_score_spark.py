"""`vintage score --engine spark` on ``local[2]``, on a real standalone cluster (master + 2 workers on
127.0.0.1) and through Spark Connect: the same output as the local engine (predictions bit-identical, rows
in input order) with both scorers: ``sql`` (the linear model as one Spark SQL expression) and ``arrow``
(``mapInArrow`` with the model loaded once per executor Python worker, not per batch). Bad input is
refused before anything is written.

Each engine run is its own ``vintage`` subprocess (a classic Spark session cannot change master within a
process). The inputs are the packaged red wine rows shuffled (no feature is sorted) with an ``id`` column,
split into several partitions (``spark.sql.files.maxPartitionBytes`` 16 KiB, Parquet row groups of 200
rows) and several Arrow batches per partition (``--chunk-rows 100``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from support.spark import connect_server, spark_env
from vintage.data import packaged_path

pytestmark = [pytest.mark.integration, pytest.mark.slow]

VINTAGE = str(Path(sys.executable).with_name("vintage"))
REPO = Path(__file__).resolve().parents[2]
SUMMARY = re.compile(
    r"spark (\S+): (\d+) partitions, (\d+) batches, model loaded (\d+) times in (\d+) Python workers"
)
SQL_SUMMARY = re.compile(r"spark (\S+): (\d+) partitions, scored in Spark SQL")


@pytest.fixture(scope="module")
def connect(spark_master) -> Iterator[str]:
    """A Spark Connect server on the session's cluster (1 of its 2 cores)."""
    with connect_server(spark_master) as url:
        yield url


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A trained project (small Spark partitions), its model dir, shuffled inputs and the local outputs."""
    from vintage.model.materialize import materialize
    from vintage.scoring import ScoreJob
    from vintage.scoring.local import score_file

    root = tmp_path_factory.mktemp("spark-score")
    project = root / "project"
    project.mkdir()
    config = yaml.safe_load((REPO / "vintage.yaml").read_text())
    config.setdefault("compute", {})["spark"] = {"conf": {"spark.sql.files.maxPartitionBytes": "16384"}}
    (project / "vintage.yaml").write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    subprocess.run([VINTAGE, "train"], cwd=project, check=True, capture_output=True, timeout=600, env=env)
    model_dir = materialize(
        "models:/winequality/1",
        root / "models",
        tracking_uri=f"sqlite:///{project / '.vintage' / 'mlflow.db'}",
    )
    red = pd.read_csv(packaged_path("red"), sep=";")
    shuffled = red.sample(frac=1.0, random_state=7).reset_index(drop=True)
    shuffled.insert(0, "id", np.arange(len(shuffled)) * 7 % len(shuffled))  # neither sorted nor random
    csv_in, parquet_in = root / "wines.csv", root / "wines.parquet"
    shuffled.to_csv(csv_in, sep=";", index=False)
    pq.write_table(pa.Table.from_pandas(shuffled, preserve_index=False), parquet_in, row_group_size=200)
    paths = {"project": project, "model_dir": model_dir, "csv": csv_in, "parquet": parquet_in, "root": root}
    for kind, source in (("csv", csv_in), ("parquet", parquet_in)):
        out = root / f"local.{kind}"
        score_file(ScoreJob(model_dir, source, out))
        paths[f"local_{kind}"] = out
    return paths


def _score(
    setup: dict[str, Path], work: Path, source: Path, out: Path, master: str, scorer: str = "auto"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            VINTAGE, "score", "--engine", "spark", "--master", master, "-m", str(setup["model_dir"]),
            "-i", str(source), "-o", str(out), "--chunk-rows", "100", "--spark-scorer", scorer,
        ],
        cwd=setup["project"],
        capture_output=True,
        text=True,
        timeout=600,
        env=spark_env(work),
    )  # fmt: skip


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path) if path.suffix == ".csv" else pq.read_table(path).to_pandas()


def _check_run(setup: dict[str, Path], tmp_path: Path, kind: str, master: str, scorer: str) -> None:
    out = tmp_path / f"spark.{kind}"
    proc = _score(setup, tmp_path / "work", setup[kind], out, master, scorer)
    assert proc.returncode == 0, proc.stderr[-3000:]
    local = _read(setup[f"local_{kind}"])
    spark = _read(out)
    assert len(spark) == len(local) == 1599
    assert list(spark.columns) == list(local.columns)
    assert spark["id"].tolist() == local["id"].tolist()  # row order kept
    assert np.array_equal(spark["prediction"].to_numpy(), local["prediction"].to_numpy())  # bit-identical
    pd.testing.assert_frame_equal(spark, local, check_exact=True, check_dtype=False)
    if kind == "csv":
        assert out.read_bytes() == setup["local_csv"].read_bytes()  # the very same file
    if scorer == "arrow":
        match = SUMMARY.search(proc.stderr)
        assert match, proc.stderr[-2000:]
        partitions, batches, loads, workers = (int(g) for g in match.groups()[1:])
        assert batches >= 16  # several Arrow batches per partition...
        assert loads == workers < batches  # ...and one load per Python worker, not one per batch
    else:  # auto picks sql for the ElasticNet: no Python worker, no model load
        match = SQL_SUMMARY.search(proc.stderr)
        assert match, proc.stderr[-2000:]
        partitions = int(match.group(2))
    assert partitions >= 4, proc.stderr[-2000:]  # several partitions
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []  # the parts directory and the temporary file are gone


@pytest.mark.parametrize(("kind", "scorer"), [("csv", "arrow"), ("parquet", "auto")])
def test_spark_engine_on_local_2_equals_the_local_engine(setup, tmp_path, kind, scorer):
    _check_run(setup, tmp_path, kind, "local[2]", scorer)


@pytest.mark.parametrize(("kind", "scorer"), [("csv", "auto"), ("parquet", "arrow")])
def test_spark_engine_on_a_standalone_cluster_equals_the_local_engine(
    setup, spark_master, tmp_path, kind, scorer
):
    _check_run(setup, tmp_path, kind, spark_master.master, scorer)


@pytest.mark.parametrize(("kind", "scorer"), [("parquet", "auto"), ("csv", "arrow")])
def test_spark_engine_through_spark_connect_equals_the_local_engine(setup, connect, tmp_path, kind, scorer):
    _check_run(setup, tmp_path, kind, connect, scorer)


def test_missing_feature_column_fails_before_writing(setup, tmp_path):
    bad = tmp_path / "bad.csv"
    frame = pd.read_csv(setup["csv"], sep=";").drop(columns=["pH", "alcohol"])
    frame.to_csv(bad, sep=";", index=False)
    out = tmp_path / "out.parquet"
    proc = _score(setup, tmp_path / "work", bad, out, "local[2]")
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "bad.csv lacks 2 feature columns the model needs: 'pH', 'alcohol'" in proc.stderr
    assert not out.exists()


@pytest.mark.parametrize("scorer", ["auto", "arrow"])
def test_non_numeric_value_fails_before_writing_naming_column_and_row(setup, tmp_path, scorer):
    bad = tmp_path / "bad.csv"
    frame = pd.read_csv(setup["csv"], sep=";").astype({"pH": object})
    frame.loc[1400, "pH"] = "acidic"  # row 1401, far from the first partition
    frame.loc[1500, "pH"] = "basic"
    frame.to_csv(bad, sep=";", index=False)
    out = tmp_path / "out.csv"
    proc = _score(setup, tmp_path / "work", bad, out, "local[2]", scorer)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "column 'pH' of bad.csv: non-numeric value 'acidic' at row 1401 (and 1 more)" in proc.stderr
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_missing_and_infinite_values_fail_naming_the_first_row(setup, tmp_path):
    frame = pq.read_table(setup["parquet"]).to_pandas()
    frame.loc[[999], ["sulphates", "density"]] = 1e308  # finite, but their sum overflows: not an error
    frame.loc[1210, "alcohol"] = np.inf  # row 1211 (a later partition): the first bad row...
    frame.loc[1300, "chlorides"] = np.nan  # ...before this one
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), bad, row_group_size=200)
    out = tmp_path / "out.parquet"
    out.write_bytes(b"an earlier output")
    proc = _score(setup, tmp_path / "work", bad, out, "local[2]", "sql")
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "column 'alcohol' of bad.parquet: infinite value at row 1211" in proc.stderr
    headline = next(line for line in proc.stderr.splitlines() if "infinite value" in line)
    assert "(and" not in headline  # one infinite value; the NaN is another column
    assert out.read_bytes() == b"an earlier output"  # untouched
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
