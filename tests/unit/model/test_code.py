"""A model logged with its project code loads anywhere: load_model_dir puts code/ on the import path."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from support.project_code import forget, write_package
from vintage.data import packaged_path
from vintage.errors import ServingError
from vintage.model import digest
from vintage.model.load import load_model_dir
from vintage.scoring.spark_scorers import cached_model, files_digest, model_files


@pytest.fixture(scope="module")
def red() -> pd.DataFrame:
    return pd.read_csv(packaged_path("red"), sep=";")


def _save(
    red: pd.DataFrame, tmp: Path, name: str, offset: float, fmt: str = "cloudpickle"
) -> tuple[Path, Any]:
    """Write package ``name`` (ClippedRidge shifted by ``offset``) in a project folder, fit it, save it with
    ``code_paths`` as vintage train does, then forget the package: only the model directory has it."""
    import mlflow.sklearn
    from mlflow.models import infer_signature

    project = tmp / f"project-{offset}"
    pkg = write_package(project, name, offset)
    sys.path.insert(0, str(project))
    try:
        model = importlib.import_module(f"{name}.models").ClippedRidge(alpha=0.5)
        x = red.drop(columns="quality")
        model.fit(x, red["quality"])
        with warnings.catch_warnings():  # rows in the loader's layout (C order): the same float sums
            warnings.simplefilter("ignore", UserWarning)
            expected = model.predict(np.ascontiguousarray(x.to_numpy(dtype=np.float64)))
        extra = {}
        if fmt == "skops":
            import skops.io

            extra["skops_trusted_types"] = list(skops.io.get_untrusted_types(data=skops.io.dumps(model)))
        path = tmp / f"model-{offset}-{fmt}"
        mlflow.sklearn.save_model(
            model,
            str(path),
            serialization_format=fmt,
            signature=infer_signature(x.head(), expected[:5]),
            input_example=x.head(5),
            code_paths=[str(pkg)],
            **extra,
        )
    finally:
        forget(name, project)
    shutil.rmtree(project)  # the module now exists only in the model's code/ folder
    return path, expected


@pytest.fixture
def name() -> Iterator[str]:
    value = f"proj_{uuid.uuid4().hex[:8]}"
    yield value
    forget(value)


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE")}


_SCORE = """
import json, sys
from pathlib import Path
import numpy as np, pandas as pd
from vintage.model.load import load_model_dir
model = load_model_dir(Path(sys.argv[1]))
rows = pd.read_csv(sys.argv[2], sep=";").drop(columns="quality")
out = model.predict(np.ascontiguousarray(rows[list(model.info.columns)].to_numpy(dtype=np.float64)))
import {name}
print(json.dumps({{"predictions": out.tolist(), "module": {name}.__file__, "code": model.info.code}}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["cloudpickle", "pickle", "skops"])
def test_fresh_process_elsewhere_loads_the_shipped_code(red, name, tmp_path, fmt):
    path, expected = _save(red, tmp_path, name, 0.25, fmt)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", _SCORE.format(name=name), str(path), str(packaged_path("red"))],
        cwd=elsewhere,
        env=_clean_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "ModuleNotFoundError" not in proc.stderr
    got = json.loads(proc.stdout)
    np.testing.assert_array_equal(np.asarray(got["predictions"]), expected)
    assert Path(got["module"]).is_relative_to(path / "code")
    assert got["code"] == [name]
    assert not list(path.rglob("__pycache__")), "bytecode was written into the model directory"


@pytest.mark.slow
def test_without_its_code_the_same_model_fails_to_load(red, name, tmp_path):
    """The control of the test above: the module really is nowhere else."""
    path, _ = _save(red, tmp_path, name, 0.25)
    shutil.rmtree(path / "code")
    mlmodel = yaml.safe_load((path / "MLmodel").read_text())
    for flavor in mlmodel["flavors"].values():
        flavor.pop("code", None)
    (path / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    with pytest.raises(ServingError, match=rf"ModuleNotFoundError: No module named '{name}'") as err:
        load_model_dir(path)
    assert err.value.hint and "code/" in err.value.hint


@pytest.mark.slow
def test_two_models_in_one_process_each_run_their_own_code(red, name, tmp_path):
    first, expected_first = _save(red, tmp_path, name, 0.25)
    second, expected_second = _save(red, tmp_path, name, -1.5)
    x = np.ascontiguousarray(red.drop(columns="quality").to_numpy(dtype=np.float64))
    a = load_model_dir(first)
    b = load_model_dir(second)
    assert not np.array_equal(expected_first, expected_second)
    np.testing.assert_array_equal(a.predict(x), expected_first)
    np.testing.assert_array_equal(b.predict(x), expected_second)
    assert Path(sys.modules[name].__file__ or "").is_relative_to(second / "code")


@pytest.mark.slow
def test_digest_covers_the_code_and_loading_leaves_it_unchanged(red, name, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "dont_write_bytecode", False)  # as a plain interpreter: imports write .pyc
    path, _ = _save(red, tmp_path, name, 0.25)
    recorded = digest.write_manifest(path)
    files = json.loads((path / digest.MANIFEST).read_text())["files"]
    assert {f"code/{name}/models.py", f"code/{name}/fns.py", f"code/{name}/__init__.py"} <= set(files)
    load_model_dir(path)
    assert digest.verify(path) == recorded  # no __pycache__ appeared
    (path / "code" / name / "fns.py").write_text("OFFSET = 100.0\n")
    with pytest.raises(ServingError, match="files differ from the digest recorded"):
        digest.verify(path, recorded)


@pytest.mark.slow
def test_code_key_outside_the_model_directory_is_refused(red, name, tmp_path):
    path, _ = _save(red, tmp_path, name, 0.25)
    mlmodel = yaml.safe_load((path / "MLmodel").read_text())
    mlmodel["flavors"]["sklearn"]["code"] = "../.."
    (path / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    with pytest.raises(ServingError, match=r"names code directory '\.\./\.\.', which is not a folder"):
        load_model_dir(path)


@pytest.mark.slow
def test_spark_worker_keeps_the_code_folder_only(red, name, tmp_path):
    path, expected = _save(red, tmp_path, name, 0.25)
    files = model_files(path)
    model = cached_model(files_digest(files), lambda: files)
    x = np.ascontiguousarray(red.drop(columns="quality").to_numpy(dtype=np.float64))
    np.testing.assert_array_equal(model.predict(x), expected)
    kept = Path(sys.modules[name].__file__ or "").parents[1]
    assert kept.name == "code" and not kept.is_relative_to(path)
    assert sorted(p.name for p in kept.parent.iterdir()) == ["code"]
    shutil.rmtree(kept.parent)
