"""A custom estimator from the project ships with the model: `vintage train` logs its package, and the model
loads, serves and batch-scores in fresh processes elsewhere, where the package is nowhere on the path.

The project trains with ``PYTHONPATH`` unset (vintage imports the class from the directory of vintage.yaml);
then its package is renamed away, and every consumer runs in another directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from support.project_code import write_package
from support.scoring import free_port

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
VINTAGE = str(Path(sys.executable).parent / "vintage")
PKG = "wineshop"
RED = REPO / "src/vintage/data/wine_quality/winequality-red.csv"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHONPATH", "MLFLOW_", "VINTAGE_"))}
    return {**env, **extra}


_ORIGINAL = """
import json, pickle, sys, warnings
import numpy as np, pandas as pd
model = pickle.load(open(sys.argv[1], "rb"))
rows = pd.read_csv(sys.argv[2], sep=";").drop(columns="quality")
with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)
    out = model.predict(np.ascontiguousarray(rows.to_numpy(dtype=np.float64)))
print(json.dumps({"predictions": out.tolist(), "module": type(model).__module__}))
"""

_LOAD = """
import json, sys
from pathlib import Path
import numpy as np, pandas as pd
from vintage.model.load import load_model_dir
model = load_model_dir(Path(sys.argv[1]))
rows = pd.read_csv(sys.argv[2], sep=";")[list(model.info.columns)]
out = model.predict(np.ascontiguousarray(rows.to_numpy(dtype=np.float64)))
import wineshop.models
print(json.dumps({"predictions": out.tolist(), "module": wineshop.models.__file__}))
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Train wineshop.models.ClippedRidge with `vintage train`, materialise version 1, note the original
    predictions (the pickle read with the project on the path), then take the package away."""
    proj = tmp_path_factory.mktemp("custom-project")
    write_package(proj, PKG, offset=0.25)
    spec = yaml.safe_load((REPO / "vintage.yaml").read_text())
    spec["estimator"] = {"class": f"{PKG}.models.ClippedRidge", "grid": [{"alpha": 1.0}, {"alpha": 0.1}]}
    (proj / "vintage.yaml").write_text(yaml.safe_dump(spec))
    run = subprocess.run([VINTAGE, "train", "--json"], cwd=proj, env=_env(), capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    from mlflow import MlflowClient

    from vintage.model.materialize import materialize

    uri = f"sqlite:///{proj / '.vintage' / 'mlflow.db'}"
    model_dir = materialize("models:/winequality/1", proj / "models", tracking_uri=uri)
    tags = MlflowClient(tracking_uri=uri).get_run(report["selected_run_id"]).data.tags
    original = subprocess.run(
        [PYTHON, "-c", _ORIGINAL, str(model_dir / "model.pkl"), str(RED)],
        cwd=proj,
        env=_env(PYTHONPATH=str(proj)),
        capture_output=True,
        text=True,
    )
    assert original.returncode == 0, original.stderr
    expected = json.loads(original.stdout)
    assert expected["module"] == f"{PKG}.models"
    (proj / PKG).rename(proj / f"{PKG}-moved-away")
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    shutil.copytree(model_dir, elsewhere / "model")
    return {
        "project": proj,
        "model_dir": elsewhere / "model",
        "expected": np.asarray(expected["predictions"]),
        "tags": tags,
    }


def test_train_logs_the_package_with_the_model(trained):
    model_dir = trained["model_dir"]
    assert trained["tags"]["vintage.code_modules"] == PKG
    shipped = sorted(p.relative_to(model_dir).as_posix() for p in (model_dir / "code").rglob("*.py"))
    assert shipped == [f"code/{PKG}/__init__.py", f"code/{PKG}/fns.py", f"code/{PKG}/models.py"]
    mlmodel = yaml.safe_load((model_dir / "MLmodel").read_text())
    assert mlmodel["flavors"]["sklearn"]["code"] == "code"
    manifest = json.loads((model_dir / "vintage-manifest.json").read_text())["files"]
    assert f"code/{PKG}/models.py" in manifest  # the digest covers the code


def test_fresh_process_elsewhere_loads_it_without_the_package_on_the_path(trained, tmp_path):
    proc = subprocess.run(
        [PYTHON, "-c", _LOAD, str(trained["model_dir"]), str(RED)],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "ModuleNotFoundError" not in proc.stderr
    got = json.loads(proc.stdout)
    assert Path(got["module"]).is_relative_to(trained["model_dir"] / "code")
    np.testing.assert_array_equal(np.asarray(got["predictions"]), trained["expected"])


def test_control_without_its_code_the_model_does_not_load(trained, tmp_path):
    """The module is really nowhere else: the same model without code/ fails as models did before."""
    bare = tmp_path / "bare"
    shutil.copytree(trained["model_dir"], bare)
    shutil.rmtree(bare / "code")
    mlmodel = yaml.safe_load((bare / "MLmodel").read_text())
    for flavor in mlmodel["flavors"].values():
        flavor.pop("code", None)
    (bare / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    proc = subprocess.run(
        [PYTHON, "-c", _LOAD, str(bare), str(RED)], cwd=tmp_path, env=_env(), capture_output=True, text=True
    )
    assert proc.returncode != 0
    assert f"ModuleNotFoundError: No module named '{PKG}'" in proc.stderr


def test_vintage_score_in_a_fresh_directory(trained, tmp_path):
    out = tmp_path / "scored.parquet"
    proc = subprocess.run(
        [VINTAGE, "score", "-m", str(trained["model_dir"]), "-i", str(RED), "-o", str(out)],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "scored 1,599 rows" in proc.stderr
    np.testing.assert_array_equal(pd.read_parquet(out)["prediction"].to_numpy(), trained["expected"])


def test_vintage_serve_in_a_fresh_directory_answers_invocations(trained, tmp_path):
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [VINTAGE, "serve", "-m", str(trained["model_dir"]), "--port", str(port)],
        cwd=tmp_path,
        env=_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                with urllib.request.urlopen(f"{base}/ready", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the server did not get ready in 60 s"
            time.sleep(0.2)
        rows = pd.read_csv(RED, sep=";").drop(columns="quality")
        split = {"columns": list(rows.columns), "data": rows.to_numpy().tolist()}  # exact floats (repr)
        body = json.dumps({"dataframe_split": split}).encode()
        request = urllib.request.Request(
            f"{base}/invocations", body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as resp:
            served = np.asarray(json.loads(resp.read())["predictions"])
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    np.testing.assert_array_equal(served, trained["expected"])
    assert f"code: {PKG}" in (tmp_path / "serve.log").read_text()


def test_unshippable_module_is_refused_before_fitting(tmp_path):
    """A package holding a compiled file cannot ship as source: one error line and a hint, exit 1."""
    pkg = write_package(tmp_path, "fastshop")
    (pkg / "kernels.cpython-311-x86_64-linux-gnu.so").write_bytes(b"\x7fELF")
    spec = yaml.safe_load((REPO / "vintage.yaml").read_text())
    spec["estimator"] = {"class": "fastshop.models.ClippedRidge", "grid": [{"alpha": 1.0}]}
    (tmp_path / "vintage.yaml").write_text(yaml.safe_dump(spec))
    proc = subprocess.run([VINTAGE, "train"], cwd=tmp_path, env=_env(), capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines[0].startswith("error: module fastshop holds the compiled file fastshop/kernels.cpython")
    assert lines[1].startswith("hint: install it as a package")
    assert len(lines) == 2, proc.stderr
    assert not (tmp_path / ".vintage" / "mlflow.db").exists()  # refused before a run was created


def test_in_process_training_leaves_sys_path_as_it_was(tmp_path, monkeypatch, cli):
    """MLflow's input-example check loads each saved model, which prepends its temporary code/ to sys.path;
    vintage drops those entries again (they would shadow the project's own modules)."""
    write_package(tmp_path, "cellar")
    spec = yaml.safe_load((REPO / "vintage.yaml").read_text())
    spec["estimator"] = {"class": "cellar.models.ClippedRidge", "grid": [{"alpha": 1.0}, {"alpha": 0.1}]}
    (tmp_path / "vintage.yaml").write_text(yaml.safe_dump(spec))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    before = list(sys.path)
    try:
        result = cli("train", "--json")
    finally:
        for name in [m for m in sys.modules if m == "cellar" or m.startswith("cellar.")]:
            del sys.modules[name]
    assert result.code == 0, result.err
    assert [p for p in sys.path if p not in before] == []
    runs = json.loads(result.out)["training"]["runs"]
    assert [r["status"] for r in runs] == ["FINISHED", "FINISHED"]
