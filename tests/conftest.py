"""Fixtures shared by every test: a clean environment, a throwaway project, an in-process CLI."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # lets tests import `support.*`

from support.env import FOREIGN_VARS  # noqa: E402


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test sees the developer's tracking server or vintage settings."""
    for var in FOREIGN_VARS:
        monkeypatch.delenv(var, raising=False)
    for var in [v for v in os.environ if v.startswith(("VINTAGE_SECRET__", "DATABRICKS_"))]:
        monkeypatch.delenv(var)
    from vintage import redact

    redact.clear()  # values registered by one test must not redact another test's output
    yield
    _reset_mlflow_uris()
    from vintage import statedb

    statedb.unbind_all()  # a test's shared-state binding never reaches the next test


def _reset_mlflow_uris() -> None:
    """Forget the store URIs set in this process.

    mlflow.set_tracking_uri / set_registry_uri (called in-process by the CLI and some tests and module
    fixtures) set process globals and export MLFLOW_TRACKING_URI: left alone, the next test (and its
    subprocesses) would talk to that store.
    """
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.pop("MLFLOW_REGISTRY_URI", None)


@pytest.fixture(autouse=True, scope="module")
def _no_store_uri_across_modules() -> Iterator[None]:
    """Module-scoped fixtures run before the per-test ``_clean_env``: without this, one that starts a
    ``vintage`` subprocess would inherit a store URI exported by an earlier module (and train into that
    module's store), and a URI a module fixture exports would be restored after each of its tests."""
    _reset_mlflow_uris()
    yield
    _reset_mlflow_uris()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project directory holding a copy of the repo's vintage.yaml, as the working directory.

    Its state (sqlite store, artifacts) lands in ``project/.vintage``.
    """
    shutil.copy(REPO / "vintage.yaml", tmp_path / "vintage.yaml")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@dataclass
class CliResult:
    """Exit code and captured output of one in-process CLI call."""

    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Iterator[object]:
    """Call the real ``vintage`` entry point in-process: ``cli("train", "--json")`` -> CliResult."""
    from vintage.cli.main import run

    def invoke(*args: str) -> CliResult:
        capsys.readouterr()
        # mlflow.set_tracking_uri() exports MLFLOW_TRACKING_URI; a real CLI call is its own process,
        # so the next call (or a subprocess) must not inherit it.
        saved = os.environ.get("MLFLOW_TRACKING_URI")
        try:
            with pytest.raises(SystemExit) as exc:
                run(list(args))
        finally:
            if saved is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = saved
        captured = capsys.readouterr()
        code = exc.value.code
        return CliResult(
            code if isinstance(code, int) else (0 if code is None else 1), captured.out, captured.err
        )

    yield invoke


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (initdb in a temp dir), once per session; yields the
    SQLAlchemy URL of its ``mlflow`` database. Started only by the tests that ask for it."""
    from support.servers import postgres_cluster

    with postgres_cluster() as url:
        yield url


@pytest.fixture
def state_db(postgres_server: str) -> Iterator[str]:
    """A fresh, empty database on the session's PostgreSQL for one test; yields its ``postgresql://`` URL."""
    import secrets

    from sqlalchemy import create_engine, text

    name = f"state_{secrets.token_hex(4)}"
    admin = create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
        base = postgres_server.replace("postgresql+psycopg2://", "postgresql://").rsplit("/", 1)[0]
        yield f"{base}/{name}"
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    finally:
        admin.dispose()


@pytest.fixture(scope="session")
def mlflow_server_url(postgres_server: str) -> Iterator[str]:
    """A real ``mlflow server`` on the session's PostgreSQL (its ``mlflow`` database), once per session.

    Yields the server's base URL (``http://127.0.0.1:PORT``). Never skips: without PostgreSQL the
    fixture errors, telling to run scripts/install-system-deps.sh (the Makefile does it).
    """
    from support.servers import mlflow_server

    with mlflow_server(postgres_server) as url:
        yield url


# -- wall time per tier (tests/unit, tests/integration, tests/e2e), printed at the end of every run ---------

_TIERS: dict[str, list[float]] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Add each phase (setup, call, teardown: fixtures count where they run) to its tier's time."""
    parts = report.nodeid.split("/")
    tier = parts[1] if len(parts) > 2 and parts[0] == "tests" else "other"
    seconds = _TIERS.setdefault(tier, [0.0, 0])
    seconds[0] += report.duration
    if report.when == "call" or (report.when == "setup" and report.skipped):
        seconds[1] += 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _TIERS:
        return
    terminalreporter.write_sep("=", "wall time per tier")
    for tier in sorted(_TIERS, key=lambda t: -_TIERS[t][0]):
        seconds, count = _TIERS[tier]
        terminalreporter.write_line(f"{tier:<12} {seconds:8.1f} s  {int(count):5d} tests")
    total = sum(s for s, _ in _TIERS.values())
    terminalreporter.write_line(f"{'all':<12} {total:8.1f} s")
