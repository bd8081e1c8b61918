"""`vintage score`: a trained project's model over whole files, equal to MLflow and to the scoring server."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from support.scoring import scoring_server
from vintage.data import packaged_path

REPO = Path(__file__).resolve().parents[2]
VINTAGE = str(Path(sys.executable).parent / "vintage")
UCI = packaged_path("red")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A project with version 1 of winequality (ElasticNet, alias candidate), materialised once."""
    proj = tmp_path_factory.mktemp("score-project")
    shutil.copy(REPO / "vintage.yaml", proj / "vintage.yaml")
    subprocess.run([VINTAGE, "train"], cwd=proj, check=True, capture_output=True)
    from vintage.model.materialize import materialize

    uri = f"sqlite:///{proj / '.vintage' / 'mlflow.db'}"
    model_dir = materialize("models:/winequality/1", proj / "models", tracking_uri=uri)
    return {"project": proj, "model_dir": model_dir}


@pytest.fixture(scope="module")
def red() -> pd.DataFrame:
    return pd.read_csv(UCI, sep=";")


@pytest.fixture(scope="module")
def pyfunc_predictions(trained, red) -> np.ndarray:
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(str(trained["model_dir"]))
    return np.asarray(model.predict(red.drop(columns="quality")), dtype=np.float64)


def test_score_candidate_from_a_project_equals_mlflow_and_the_server(
    trained, red, pyfunc_predictions, tmp_path
):
    out = tmp_path / "scored.parquet"
    proc = subprocess.run(
        [VINTAGE, "score", "--model", "candidate", "--input", str(UCI), "--output", str(out)],
        cwd=trained["project"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "models:/winequality@candidate materialised" in proc.stderr
    assert "scored 1,599 rows in " in proc.stderr and f"rows/s) -> {out}" in proc.stderr
    assert proc.stdout == ""
    got = pd.read_parquet(out)
    assert list(got.columns) == [*red.columns, "prediction"] and len(got) == len(red)
    np.testing.assert_allclose(got["prediction"].to_numpy(), pyfunc_predictions, rtol=1e-12, atol=0)
    rows = [0, 1, 2, 777, 1598]
    body = {"dataframe_split": json.loads(red.drop(columns="quality").iloc[rows].to_json(orient="split"))}
    with scoring_server(trained["model_dir"], tmp_path) as srv:
        resp = srv.post_json(body)
    assert resp.status == 200, resp.body
    served = np.asarray(resp.json()["predictions"])
    np.testing.assert_array_equal(got["prediction"].to_numpy()[rows], served)  # bit-identical (one formula)


def test_registry_uri_csv_output_and_small_chunks(
    trained, red, pyfunc_predictions, cli, monkeypatch, tmp_path
):
    monkeypatch.chdir(trained["project"])
    src = tmp_path / "wines.csv"
    shuffled = red.assign(id=np.arange(len(red)))[["id", *reversed(red.columns)]]
    shuffled.to_csv(src, index=False)
    out = tmp_path / "scored.csv"
    res = cli(
        "score", "-m", "models:/winequality@candidate", "-i", str(src), "-o", str(out), "--chunk-rows", "64"
    )
    assert res.code == 0, res.err
    got = pd.read_csv(out)
    assert list(got.columns) == [*shuffled.columns, "prediction"]
    np.testing.assert_array_equal(got["id"].to_numpy(), np.arange(len(red)))
    np.testing.assert_allclose(got["prediction"].to_numpy(), pyfunc_predictions, rtol=1e-12, atol=0)


def _bad_csv(red: pd.DataFrame, path: Path) -> Path:
    frame = red.astype({"pH": object})
    frame.loc[1400, "pH"] = "acidic"
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    ("case", "code", "headline"),
    [
        ("missing-column", 1, "error: in.csv lacks 1 feature column the model needs: 'alcohol'"),
        ("non-numeric", 1, "error: column 'pH' of bad.csv: non-numeric value 'acidic' at row 1401"),
        ("nan", 1, "error: column 'density' of nan.csv: missing value (empty, NA or NaN) at row 9"),
        ("extension", 2, "error: unsupported output file type '.xlsx' (out.xlsx)"),
        ("same-file", 2, "error: --input and --output are the same file"),
        ("no-input", 1, "error: input file not found"),
        ("engine", 2, "error: unknown scoring engine"),
        ("chunk-rows", 2, ""),
        ("master-without-spark", 2, "error: --master applies to --engine spark only"),
        ("scorer-without-spark", 2, "error: --spark-scorer applies to --engine spark only"),
        ("unknown-scorer", 2, "error: unknown --spark-scorer 'python'"),
    ],
)
def test_bad_input_fails_with_one_line_and_writes_nothing(trained, red, cli, tmp_path, case, code, headline):
    model = str(trained["model_dir"])
    out = tmp_path / "out.parquet"
    out.write_bytes(b"earlier results")
    args = {
        "missing-column": lambda: ["-i", _csv(red.drop(columns="alcohol"), tmp_path / "in.csv")],
        "non-numeric": lambda: ["-i", str(_bad_csv(red, tmp_path / "bad.csv"))],
        "nan": lambda: [
            "-i",
            _csv(red.assign(density=red["density"].where(red.index != 8)), tmp_path / "nan.csv"),
        ],
        "extension": lambda: ["-i", str(UCI), "-o", str(tmp_path / "out.xlsx")],
        "same-file": lambda: ["-i", str(out), "-o", str(out)],
        "no-input": lambda: ["-i", str(tmp_path / "nope.csv")],
        "engine": lambda: ["-i", str(UCI), "--engine", "flink"],
        "chunk-rows": lambda: ["-i", str(UCI), "--chunk-rows", "0"],
        "master-without-spark": lambda: ["-i", str(UCI), "--master", "local[2]"],
        "scorer-without-spark": lambda: ["-i", str(UCI), "--spark-scorer", "sql"],
        "unknown-scorer": lambda: ["-i", str(UCI), "--engine", "spark", "--spark-scorer", "python"],
    }[case]()
    if "-o" not in args:
        args += ["-o", str(out)]
    res = cli("score", "-m", model, *args)
    assert res.code == code, res.err
    assert "Traceback" not in res.err
    if headline:
        assert res.err.splitlines()[0].startswith(headline), res.err
    assert out.read_bytes() == b"earlier results"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def _csv(frame: pd.DataFrame, path: Path) -> str:
    frame.to_csv(path, index=False)
    return str(path)


def test_help_does_not_import_pyarrow_pandas_or_mlflow():
    code = (
        "import sys\n"
        "from vintage.cli.main import run\n"
        "for argv in (['--help'], ['score', '--help']):\n"
        "    try:\n        run(argv)\n    except SystemExit:\n        pass\n"
        "heavy = sorted(m for m in ('mlflow', 'sklearn', 'pandas', 'pyarrow', 'numpy') if m in sys.modules)\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY=\n" in out, out
    assert "--chunk-rows" in out and "--engine" in out


def test_name_at_alias_is_short_for_the_models_uri(trained, cli, monkeypatch, tmp_path):
    monkeypatch.chdir(trained["project"])
    short, full = tmp_path / "short.parquet", tmp_path / "full.parquet"
    res = cli("score", "-m", "winequality@candidate", "-i", str(UCI), "-o", str(short))
    assert res.code == 0, res.err
    assert "models:/winequality@candidate materialised" in res.err
    assert cli("score", "-m", "models:/winequality@candidate", "-i", str(UCI), "-o", str(full)).code == 0
    assert short.read_bytes() == full.read_bytes()
    res = cli("score", "-m", "winequality@nope", "-i", str(UCI), "-o", str(tmp_path / "x.parquet"))
    assert res.code == 1
    assert "registered model 'winequality' has no alias 'nope'" in res.err.splitlines()[0]
