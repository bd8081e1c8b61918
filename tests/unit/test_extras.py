"""Extras: which extra a module comes from, the one error a missing one gives, and where it is checked."""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path
from typing import Any

import pytest

from vintage import extras, plugins
from vintage.errors import EXIT_USAGE
from vintage.extras import MissingExtra, installed, missing_extra, require

REPO = Path(__file__).resolve().parents[2]


def _without(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    """Make ``modules`` look uninstalled to :func:`importlib.util.find_spec` (nothing is uninstalled)."""
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.split(".")[0] in modules:
            return None
        return real(name, *args, **kwargs)

    monkeypatch.setattr(extras.importlib.util, "find_spec", find_spec)


def test_every_extra_of_pyproject_is_known_and_installed_by_make_test() -> None:
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(extras.MODULES) == set(declared) - {"all", "dev"}
    # make test installs requirements/lock.txt: every extra is there, so each check below can fail.
    assert all(installed(extra) for extra in extras.MODULES)
    for module, extra in extras.EXTRA_OF.items():
        assert module in {m.split(".")[0] for m in extras.MODULES[extra]}


def test_require_names_the_extra_what_needed_it_and_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    require("scoring", "vintage score")  # installed: nothing happens
    _without(monkeypatch, "pyarrow")
    with pytest.raises(MissingExtra) as caught:
        require("scoring", "vintage score")
    err = caught.value
    assert err.exit_code == EXIT_USAGE
    assert err.headline == "vintage score needs the 'scoring' extra (pyarrow), which is not installed"
    assert err.hint == "pip install 'vintage[scoring]' (in a clone of vintage: make install EXTRAS=scoring)"
    assert not installed("spark")  # spark needs pyarrow too
    assert installed("kubernetes")


def test_a_dotted_module_whose_package_is_missing_counts_as_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    _without(monkeypatch, "databricks")
    with pytest.raises(MissingExtra, match=r"'databricks' extra \(databricks\)"):
        require("databricks", "secrets.providers: databricks")


def test_missing_extra_maps_only_modules_an_extra_installs() -> None:
    found = missing_extra(
        ModuleNotFoundError("No module named 'pyspark.sql'", name="pyspark.sql"), "vintage x"
    )
    assert found is not None and found.extra == "spark" and found.module == "pyspark"
    assert missing_extra(ModuleNotFoundError("no", name="somethingelse"), "vintage x") is None
    assert missing_extra(ImportError("cannot import name 'x'", name="pyarrow"), "vintage x") is None


@pytest.mark.parametrize(
    ("table", "name", "extra"),
    [
        (plugins.DEPLOY_TARGETS, "kubernetes", "kubernetes"),
        (plugins.DEPLOY_TARGETS, "container", "containers"),
        (plugins.SCORING_ENGINES, "local", "scoring"),
        (plugins.SCORING_ENGINES, "spark", "spark"),
        (plugins.COMPUTE_ENGINES, "spark", "spark"),
        (plugins.STAGE_BACKENDS, "databricks", "databricks"),
        (plugins.SECRET_PROVIDERS, "databricks", "databricks"),
    ],
)
def test_plugin_rows_check_their_extra_before_importing(
    monkeypatch: pytest.MonkeyPatch, table: plugins.Table, name: str, extra: str
) -> None:
    assert table.extras[name] == extra
    module = extras.MODULES[extra][0].split(".")[0]
    _without(monkeypatch, module)
    monkeypatch.setattr(table, "_loaded", {})  # loaded earlier in this session: load() would return it
    with pytest.raises(MissingExtra, match=f"^{table.key}.{{1,2}}{name} needs the '{extra}' extra"):
        table.load(name)


def test_core_rows_need_no_extra() -> None:
    assert "local" not in plugins.DEPLOY_TARGETS.extras
    assert "local" not in plugins.COMPUTE_ENGINES.extras
    assert "local" not in plugins.SECRET_PROVIDERS.extras


def test_the_cli_names_the_extra_for_a_checked_command(
    cli: Any, project: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    data = tmp_path / "rows.csv"
    data.write_text("a\n1\n")
    _without(monkeypatch, "pyarrow")
    monkeypatch.setattr(plugins.SCORING_ENGINES, "_loaded", {})
    result = cli("score", "-i", str(data), "-o", str(tmp_path / "out.csv"), "-m", "models:/x@candidate")
    assert result.code == 2
    assert "needs the 'scoring' extra (pyarrow)" in result.err
    assert "make install EXTRAS=scoring" in result.err
    assert not (tmp_path / "out.csv").exists()


def test_the_cli_turns_an_unforeseen_import_of_an_extra_into_the_same_error(
    cli: Any, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vintage.pipeline import ops

    def fails(*args: Any, **kwargs: Any) -> None:
        raise ModuleNotFoundError("No module named 'kubernetes'", name="kubernetes")

    monkeypatch.setattr(ops, "status", fails)
    result = cli("-c", "vintage.yaml", "status")
    assert result.code == 2
    assert result.err.startswith("error: vintage status needs the 'kubernetes' extra (kubernetes)")
    assert "Traceback" not in result.err


def test_any_other_missing_module_is_still_an_unexpected_error(
    cli: Any, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vintage.pipeline import ops

    def fails(*args: Any, **kwargs: Any) -> None:
        raise ModuleNotFoundError("No module named 'nosuchthing'", name="nosuchthing")

    monkeypatch.setattr(ops, "status", fails)
    result = cli("status")
    assert result.code == 1
    assert "unexpected ModuleNotFoundError: No module named 'nosuchthing'" in result.err
