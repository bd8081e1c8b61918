"""`vintage serve --environment ...`: API keys from the environment's secret scope, rotation, isolation."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from support.scoring import Server, free_port, wait_ready

VINTAGE = str(Path(sys.executable).with_name("vintage"))
ROW = {"inputs": [[7.4, 0.7, 0.0, 1.9, 0.076, 11.0, 34.0, 0.9978, 3.51, 0.56, 9.4]]}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project with version 1 of winequality registered (alias candidate)."""
    proj = tmp_path_factory.mktemp("serve-secrets")
    (proj / "vintage.yaml").write_text((Path(__file__).parents[2] / "vintage.yaml").read_text())
    res = subprocess.run([VINTAGE, "train"], cwd=proj, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    return proj


@contextmanager
def serving(project: Path, *args: str) -> Iterator[Server]:
    port = free_port()
    log = project / f"serve-{port}.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [VINTAGE, "serve", "--port", str(port), *args], cwd=project, stdout=fh, stderr=subprocess.STDOUT
        )
    srv = Server(proc, port, log)
    try:
        wait_ready(srv)
        yield srv
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def secret(project: Path, scope: str, key: str) -> str:
    res = subprocess.run(
        [VINTAGE, "secrets", "get", "-s", scope, "-k", key], cwd=project, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    return res.stdout


def vintage(project: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [VINTAGE, *args], cwd=project, capture_output=True, text=True, input=stdin, timeout=120
    )


def test_production_refuses_to_serve_without_keys(trained):
    res = vintage(trained, "serve", "-e", "production", "--port", str(free_port()))
    assert res.returncode == 1
    assert "no API key in scope production/serving" in res.stderr
    assert "vintage secrets put --scope production/serving --key primary --generate" in res.stderr


def test_production_keys_come_from_its_scope_and_rotate(trained):
    assert vintage(trained, "secrets", "create-scope", "production/serving").returncode == 0
    assert (
        vintage(
            trained, "secrets", "put", "-s", "production/serving", "-k", "primary", "--generate"
        ).returncode
        == 0
    )
    first = secret(trained, "production/serving", "primary")
    with serving(trained, "--environment", "production") as srv:
        assert srv.post_json(ROW).status == 401
        assert srv.post_json(ROW, key="x" * 43).status == 401
        ok = srv.post_json(ROW, key=first)
        assert ok.status == 200 and len(ok.json()["predictions"]) == 1

        # rotation: the new key becomes primary, the old one secondary, then the old one goes
        assert (
            vintage(
                trained, "secrets", "put", "-s", "production/serving", "-k", "secondary", stdin=first
            ).returncode
            == 0
        )
        assert (
            vintage(
                trained, "secrets", "put", "-s", "production/serving", "-k", "primary", "--generate"
            ).returncode
            == 0
        )
        second = secret(trained, "production/serving", "primary")
        srv.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while srv.post_json(ROW, key=second).status != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert srv.post_json(ROW, key=second).status == 200
        assert srv.post_json(ROW, key=first).status == 200  # still accepted as the secondary
        assert (
            vintage(trained, "secrets", "delete", "-s", "production/serving", "-k", "secondary").returncode
            == 0
        )
        srv.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while srv.post_json(ROW, key=first).status != 401 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert srv.post_json(ROW, key=first).status == 401
        assert srv.post_json(ROW, key=second).status == 200
    log = srv.log.read_text()
    assert first not in log and second not in log
    reads = json.loads(
        vintage(trained, "audit", "--json", "--action", "secret.read", "--limit", "500").stdout
    )
    served = [e for e in reads if e["reader"] == "serve:production"]
    assert {e["target"] for e in served} >= {"production/serving/primary", "production/serving/secondary"}
    assert all(e["environment"] == "production" for e in served)


def test_staging_cannot_use_production_keys(trained):
    res = vintage(
        trained, "serve", "-e", "staging", "--api-key-scope", "production/serving", "--port", str(free_port())
    )
    assert res.returncode == 1
    assert "serve:staging (environment 'staging') may not read scope production/serving" in res.stderr
    denied = json.loads(vintage(trained, "audit", "--json", "--action", "secret.read").stdout)
    assert any(e["reader"] == "serve:staging" and e["outcome"] == "denied" for e in denied)


def test_staging_serves_without_keys_by_default(trained):
    with serving(trained, "--environment", "staging") as srv:
        assert srv.post_json(ROW).status == 200


def test_key_file_and_scope_together_is_a_usage_error(trained, tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("k" * 20)
    keys.chmod(0o600)
    res = vintage(trained, "serve", "--api-key-file", str(keys), "--api-key-scope", "production/serving")
    assert res.returncode == 2 and "not both" in res.stderr


def test_short_scope_key_is_refused(trained):
    assert vintage(trained, "secrets", "create-scope", "staging/serving").returncode == 0
    assert (
        vintage(
            trained, "secrets", "put", "-s", "staging/serving", "-k", "primary", stdin="too-short"
        ).returncode
        == 0
    )
    res = vintage(
        trained, "serve", "-e", "staging", "--api-key-scope", "staging/serving", "--port", str(free_port())
    )
    assert res.returncode == 1 and "at least 16 characters" in res.stderr
    assert "too-short" not in res.stderr
