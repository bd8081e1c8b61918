"""The project wheel a Databricks job installs: built for real with ``pip wheel --no-deps`` from this tree."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from vintage.compute.databricks import build_wheel, find_project_dir

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_build_wheel_makes_an_installable_vintage_wheel_with_the_packaged_data(tmp_path: Path) -> None:
    project = find_project_dir()
    assert project == REPO
    build_dir = REPO / "build"
    stamp = build_dir.stat().st_mtime_ns if build_dir.exists() else None

    wheel = build_wheel(project, tmp_path / "dist")

    assert wheel.parent == tmp_path / "dist" and wheel.name.startswith("vintage-")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        scripts = zf.read(entry_points).decode()
    assert {
        "vintage/__init__.py",
        "vintage/cli/main.py",
        "vintage/pipeline/remote.py",
        "vintage/py.typed",
        "vintage/data/wine_quality/winequality-red.csv",
        "vintage/data/wine_quality/winequality-white.csv",
    } <= names
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    # The python_wheel_task runs the entry point "vintage" of package "vintage".
    assert "[console_scripts]" in scripts and "vintage = vintage.cli.main:run" in scripts
    # Built on a copy: the source tree gets no build/ output.
    assert (build_dir.stat().st_mtime_ns if build_dir.exists() else None) == stamp

    # Installable: pip installs it (no dependencies: they are this venv's), and the installed copy
    # imports and reads its packaged data.
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    code = (
        "import vintage, importlib.resources as r; "
        "print(vintage.__file__); "
        "print(len(r.files('vintage.data').joinpath('wine_quality/winequality-red.csv').read_text().splitlines()))"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env, cwd=tmp_path
    ).stdout.split()
    assert Path(out[0]).is_relative_to(target)
    assert int(out[1]) == 1600  # header + 1599 red wines
