"""Which project code a fitted model needs (vintage.training.code), and what is refused."""

from __future__ import annotations

import importlib
import sys
import types
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from support.project_code import forget, write_package
from vintage.errors import TrainingError
from vintage.training import code as shipped
from vintage.training.track import check_code

X = np.random.default_rng(0).normal(size=(40, 3))
Y = X @ np.array([1.0, -2.0, 0.5]) + 5.0


@pytest.fixture
def pkg(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A fresh project package (unique name) importable from ``tmp_path``."""
    name = f"proj_{uuid.uuid4().hex[:8]}"
    path = write_package(tmp_path, name)
    sys.path.insert(0, str(tmp_path))
    yield name, path
    forget(name, tmp_path)


def _ridge(name: str) -> type:
    return importlib.import_module(f"{name}.models").ClippedRidge  # type: ignore[no-any-return]


def test_plain_sklearn_model_needs_no_code():
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), RandomForestRegressor(n_estimators=3, random_state=0)).fit(X, Y)
    assert not shipped.plan(model)
    assert shipped.plan(model).modules == ()


def test_custom_estimator_ships_its_top_level_package(pkg):
    name, path = pkg
    code = shipped.plan(_ridge(name)().fit(X, Y))
    assert code.modules == (name,)
    assert code.sources == (path.resolve(),)


@pytest.mark.parametrize("form", ["pipeline", "target", "voting", "function"])
def test_custom_class_inside_a_fitted_model_is_found(pkg, form):
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.ensemble import VotingRegressor
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    name, _ = pkg
    ridge = _ridge(name)
    log1p = importlib.import_module(f"{name}.fns").log1p_abs
    model = {
        "pipeline": lambda: Pipeline([("scale", StandardScaler()), ("model", ridge())]),
        "target": lambda: TransformedTargetRegressor(regressor=ridge(), func=np.log, inverse_func=np.exp),
        "voting": lambda: VotingRegressor([("a", LinearRegression()), ("b", ridge())]),
        "function": lambda: Pipeline([("f", FunctionTransformer(log1p)), ("m", LinearRegression())]),
    }[form]().fit(X, Y)
    assert shipped.plan(model).modules == (name,)


def test_single_module_file_ships_as_the_file(tmp_path: Path):
    name = f"solo_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        "from sklearn.linear_model import Ridge\n\nclass Solo(Ridge):\n    pass\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        model = importlib.import_module(name).Solo().fit(X, Y)
        code = shipped.plan(model)
    finally:
        forget(name, tmp_path)
    assert code.modules == (name,)
    assert code.sources == ((tmp_path / f"{name}.py").resolve(),)


def test_class_in_main_is_refused_with_one_line_and_a_hint(monkeypatch):
    from sklearn.linear_model import Ridge

    cls = type("InMain", (Ridge,), {"__module__": "__main__"})
    with pytest.raises(TrainingError) as err:
        shipped.plan(cls().fit(X, Y))
    assert "__main__.InMain is defined in __main__" in err.value.headline
    assert "\n" not in err.value.headline
    assert err.value.hint and "module file" in err.value.hint


def test_extension_module_is_refused(monkeypatch, tmp_path):
    from sklearn.linear_model import Ridge

    name = f"ext_{uuid.uuid4().hex[:8]}"
    fake = types.ModuleType(name)
    fake.__file__ = str(tmp_path / f"{name}.cpython-311-x86_64-linux-gnu.so")
    monkeypatch.setitem(sys.modules, name, fake)
    cls = type("Fast", (Ridge,), {"__module__": name})
    with pytest.raises(TrainingError, match=r"which is not Python source, so it cannot be shipped"):
        shipped.plan(cls().fit(X, Y))


def test_compiled_file_in_package_is_refused(pkg):
    name, path = pkg
    (path / "fast.cpython-311-x86_64-linux-gnu.so").write_bytes(b"\x7fELF")
    with pytest.raises(TrainingError, match=r"holds the compiled file .*fast\.cpython"):
        shipped.plan(_ridge(name)().fit(X, Y))


def test_symlink_in_package_is_refused(pkg, tmp_path):
    name, path = pkg
    (tmp_path / "outside.txt").write_text("x")
    (path / "link.txt").symlink_to(tmp_path / "outside.txt")
    with pytest.raises(TrainingError, match=r"link\.txt, which is not a regular file"):
        shipped.plan(_ridge(name)().fit(X, Y))


def test_too_large_package_is_refused(pkg, monkeypatch):
    name, path = pkg
    monkeypatch.setattr(shipped, "MAX_BYTES", 5_000)
    (path / "table.csv").write_text("1," * 3_000)
    with pytest.raises(TrainingError, match=rf"module {name} holds 0\.0 MB \(over 0 MB\), too much"):
        shipped.plan(_ridge(name)().fit(X, Y))
    monkeypatch.setattr(shipped, "MAX_BYTES", 10_000_000)
    monkeypatch.setattr(shipped, "MAX_FILES", 3)
    with pytest.raises(TrainingError, match=rf"module {name} has 4 files \(over 3\)"):
        shipped.plan(_ridge(name)().fit(X, Y))


def test_stage_copies_source_without_caches_or_hidden_files(pkg, tmp_path):
    name, path = pkg
    (path / "__pycache__").mkdir()
    (path / "__pycache__" / "models.cpython-311.pyc").write_bytes(b"junk")
    (path / "stale.pyc").write_bytes(b"junk")
    (path / ".env").write_text("TOKEN=do-not-ship")
    (path / ".git").mkdir()
    (path / ".git" / "HEAD").write_text("ref")
    (path / "sub").mkdir()
    (path / "sub" / "__init__.py").write_text("")
    (path / "sub" / "table.csv").write_text("a,b\n")
    dest = tmp_path / "staged"
    dest.mkdir()
    paths = shipped.stage(shipped.plan(_ridge(name)().fit(X, Y)), dest)
    assert paths == [str(dest / name)]
    got = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    kept = ("__init__.py", "fns.py", "models.py", "sub/__init__.py", "sub/table.csv")
    assert got == [f"{name}/{f}" for f in kept]


def test_check_code_refuses_a_configured_class_before_fitting(monkeypatch, tmp_path):
    from sklearn.linear_model import Ridge

    name = f"ext_{uuid.uuid4().hex[:8]}"
    fake = types.ModuleType(name)
    fake.__file__ = str(tmp_path / f"{name}.so")
    fake.Fast = type("Fast", (Ridge,), {"__module__": name})  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, name, fake)
    check_code(["sklearn.linear_model.ElasticNet"])  # installed: nothing to ship, no error
    with pytest.raises(TrainingError, match=rf"{name}\.Fast comes from {name}\.so"):
        check_code(["sklearn.linear_model.ElasticNet", f"{name}.Fast"])
