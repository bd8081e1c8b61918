"""The operator token (issued 0600, compared in constant time, revoked at exit), the Host and Origin
checks, and the command's refusal to listen beyond loopback without saying so."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from vintage.dashboard import guard


def test_a_token_is_issued_private_and_revoked(tmp_path: Path) -> None:
    token = guard.issue(tmp_path, "alice")

    assert token.path == tmp_path / "dashboard" / "operator-token"
    assert token.path.read_text().strip() == token.value and len(token.value) >= 40
    assert stat.S_IMODE(token.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(token.path.parent.stat().st_mode) == 0o700
    assert token.matches(token.value) and not token.matches(token.value + "x") and not token.matches(None)
    second = guard.issue(tmp_path, "alice")
    assert second.value != token.value
    guard.revoke(token)  # another dashboard's token stays
    assert second.path is not None and second.path.exists()
    guard.revoke(second)
    assert not second.path.exists()


def test_the_token_never_shows_in_a_message(tmp_path: Path) -> None:
    from vintage.errors import VintageError

    token = guard.issue(tmp_path, "alice")
    assert token.value not in VintageError(f"oops {token.value}").headline


def test_hosts_the_dashboard_answers() -> None:
    assert guard.allowed_hosts("127.0.0.1", 8090) == {"127.0.0.1:8090", "localhost:8090", "[::1]:8090"}
    assert guard.allowed_hosts("10.0.0.5", 80) == {"10.0.0.5:80"}
    assert guard.allowed_hosts("0.0.0.0", 80) is None  # reached by names it cannot know


@pytest.mark.parametrize(
    ("origin", "site", "refused"),
    [
        (None, None, False),
        ("http://127.0.0.1:8090", "same-origin", False),
        ("http://127.0.0.1:8090", "none", False),
        ("http://127.0.0.1:8090", "same-site", True),
        ("https://127.0.0.1:8090", None, True),
        ("http://localhost:8090", None, True),
        ("null", None, True),
    ],
)
def test_cross_origin(origin: str | None, site: str | None, refused: bool) -> None:
    assert (guard.cross_origin("127.0.0.1:8090", origin, site) is not None) is refused


def test_another_host_needs_the_explicit_flag(project: Path, cli) -> None:
    res = cli("dashboard", "--host", "0.0.0.0")
    assert res.code == 2
    assert "refusing to serve the dashboard on 0.0.0.0" in res.err and "--allow-network-access" in res.err
    assert not (project / ".vintage" / "dashboard" / "operator-token").exists()


def test_help_imports_neither_the_web_stack_nor_mlflow() -> None:
    code = (
        "import sys\n"
        "from vintage.cli.main import run\n"
        "try:\n    run(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('HEAVY=' + ','.join(sorted(m for m in ('starlette', 'jinja2', 'uvicorn', 'mlflow', "
        "'vintage.dashboard') if m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY=\n" in out, out
    assert (
        "dashboard"
        in subprocess.run(
            [sys.executable, "-m", "vintage", "--help"], capture_output=True, text=True, check=True
        ).stdout
    )


def test_the_experiment_id_is_read_from_the_embedded_store_without_creating_it(project: Path) -> None:
    import sqlite3

    from vintage.cli.dashboard import _experiment_id
    from vintage.config import load_spec

    spec = load_spec()
    assert _experiment_id(spec) is None
    assert not (project / ".vintage" / "mlflow.db").exists()  # never created by the dashboard
    (project / ".vintage").mkdir()
    with sqlite3.connect(project / ".vintage" / "mlflow.db") as conn:
        conn.execute("CREATE TABLE experiments (experiment_id INTEGER, name TEXT, lifecycle_stage TEXT)")
        conn.execute(
            "INSERT INTO experiments VALUES (1, 'DrinksQuality', 'deleted'), (3, 'DrinksQuality', 'active')"
        )
    assert _experiment_id(spec) == "3"


def test_a_lookup_retries_until_it_finds_a_value() -> None:
    import time

    from vintage.dashboard.app import Lookup

    answers = iter([None, "7"])
    lookup = Lookup(lambda: next(answers), retry_s=0)
    deadline = time.monotonic() + 10
    while lookup() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert lookup() == "7"
