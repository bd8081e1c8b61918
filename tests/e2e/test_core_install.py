"""The core install as `make demo` makes it: a fresh virtual environment from requirements/core.txt alone
(no pyarrow, Spark, Kubernetes client, full MLflow, Jinja) runs the whole pipeline, and each command that
needs an extra says which one, with exit 2 and nothing written."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from support.scoring import free_port

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
UV = shutil.which("uv", path=str(Path(sys.executable).parent)) or "uv"


@pytest.fixture(scope="module")
def core_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with requirements/core.txt and vintage (editable, without dependencies), as `make demo`."""
    venv = tmp_path_factory.mktemp("core") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    for args in (
        ["--require-hashes", "-r", str(REPO / "requirements" / "core.txt")],
        ["--no-deps", "-e", str(REPO)],
    ):
        install = [UV, "pip", "install", "--quiet", "--python", python, *args]
        # as the Makefile: uv's cache first, the index for what it lacks
        if subprocess.run([*install, "--offline"], capture_output=True).returncode != 0:
            subprocess.run(install, check=True)
    return venv


@pytest.fixture
def project(tmp_path: Path, core_venv: Path) -> Path:
    """A project made by the core venv's `vintage init`, environments on free ports."""
    done = _vintage(core_venv, tmp_path, "init", ".")
    assert done.returncode == 0, done.stderr
    spec = yaml.safe_load((tmp_path / "vintage.yaml").read_text())
    spec["environments"] = {
        "staging": {"port": free_port()},
        "production": {"port": free_port(), "api_keys": True},
    }
    (tmp_path / "vintage.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return tmp_path


def _vintage(venv: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # As `make demo`: the venv's processes write the .pyc files of what they import.
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "VINTAGE_", "PYTHONDONTWRITE"))
    }
    return subprocess.run(
        [str(venv / "bin" / "vintage"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def test_the_core_lacks_the_extras(core_venv: Path) -> None:
    probe = "import importlib.util as u; print(*[m for m in %r if u.find_spec(m)])"
    heavy = ("pyarrow", "pyspark", "kubernetes", "flask", "jinja2", "psycopg2", "pytest")
    found = subprocess.run(
        [str(core_venv / "bin" / "python"), "-c", probe % (heavy,)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert found.stdout.split() == []


def test_the_core_runs_the_whole_pipeline(core_venv: Path, project: Path) -> None:
    steps = [
        ("secrets", "create-scope", "production/serving"),
        ("secrets", "put", "-s", "production/serving", "-k", "primary", "--generate"),
        ("run", "--auto-approve"),
    ]
    try:
        for args in steps:
            done = _vintage(core_venv, project, *args)
            assert done.returncode == 0, f"vintage {' '.join(args)}: {done.stderr}"
        status = _vintage(core_venv, project, "status", "--json")
        assert status.returncode == 0, status.stderr
        served = json.loads(status.stdout)
        assert {env: (dep["version"], dep["healthy"]) for env, dep in served.items()} == {
            "staging": (1, True),
            "production": (1, True),
        }
    finally:
        for env in ("staging", "production"):
            _vintage(core_venv, project, "stop", env)


@pytest.mark.parametrize(
    ("args", "extra"),
    [
        (("score", "-i", "rows.csv", "-o", "out.csv", "-m", "models:/winequality@candidate"), "scoring"),
        (("score", "--engine", "spark", "-i", "rows.csv", "-o", "out.csv"), "spark"),
        (("train", "--engine", "spark"), "spark"),
        (("dashboard",), "dashboard"),
        (("ui",), "ui"),
    ],
)
def test_a_command_that_needs_an_extra_names_it(
    core_venv: Path, project: Path, args: tuple[str, ...], extra: str
) -> None:
    (project / "rows.csv").write_text("alcohol\n9.4\n")
    done = _vintage(core_venv, project, *args)
    assert done.returncode == 2, done.stderr
    headline, hint = done.stderr.strip().splitlines()[:2]
    assert f"needs the '{extra}' extra" in headline
    assert (
        hint == f"hint: pip install 'vintage[{extra}]' (in a clone of vintage: make install EXTRAS={extra})"
    )
    assert not (project / "out.csv").exists()


def test_a_kubernetes_environment_names_its_extra_when_the_config_is_checked(
    core_venv: Path, project: Path
) -> None:
    spec = yaml.safe_load((project / "vintage.yaml").read_text())
    spec["environments"]["production"] = {"target": "kubernetes", "registry": "127.0.0.1:5000"}
    (project / "vintage.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    done = _vintage(core_venv, project, "config", "validate")
    assert done.returncode == 2
    assert "needs the 'kubernetes' extra (kubernetes)" in done.stderr
