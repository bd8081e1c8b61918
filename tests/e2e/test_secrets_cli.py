"""`vintage secrets` end to end: every command, hidden input, terminals, wrong keys, kill -9, sync, audit."""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import select
import signal
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

VINTAGE = str(Path(sys.executable).with_name("vintage"))

AZUREML = {
    "tenant_id": "0b6c7a4e-tenant-4d1f",
    "client_id": "5f3e2d1c-client-9a8b",
    "client_secret": "cl13nt/s3cr3t+with=odd&chars?",
    "subscription_id": "9e8d7c6b-subscription",
    "resource_group": "rg-wine-quality",
    "workspace_name": "ws-wine-quality",
}


def put(cli, monkeypatch, scope: str, key: str, value: str, *extra: str):
    monkeypatch.setattr(sys, "stdin", io.StringIO(value + "\n"))
    return cli("secrets", "put", "--scope", scope, "--key", key, *extra)


def store_file(project: Path) -> Path:
    return project / ".vintage" / "secrets" / "store.json"


def test_round_trip_through_every_command(project, cli, monkeypatch):
    assert cli("secrets", "create-scope", "staging/azureml").code == 0
    assert cli("secrets", "create-scope", "ci").code == 0
    for key, value in AZUREML.items():
        res = put(cli, monkeypatch, "staging/azureml", key, value)
        assert res.code == 0, res.err
        assert value not in res.out + res.err

    scopes = json.loads(cli("secrets", "list-scopes", "--json").out)
    assert {(s["scope"], s["environment"], s["keys"]) for s in scopes} == {
        ("ci", None, 0),
        ("staging/azureml", "staging", 6),
    }
    listed = cli("secrets", "list", "--scope", "staging/azureml", "--json")
    keys = json.loads(listed.out)
    assert sorted(k["key"] for k in keys) == sorted(AZUREML)
    assert all(k["created"] and k["updated"] for k in keys)
    assert not any(v in listed.out for v in AZUREML.values())
    table = cli("secrets", "list", "--scope", "staging/azureml")
    assert "client_secret" in table.out and AZUREML["client_secret"] not in table.out

    got = cli("secrets", "get", "--scope", "staging/azureml", "--key", "client_secret")
    assert got.code == 0 and got.out == AZUREML["client_secret"]  # piped: the exact value, nothing added

    # put again: the value changes, `created` stays
    before = {k["key"]: k for k in keys}["client_id"]
    time.sleep(1.1)
    assert put(cli, monkeypatch, "staging/azureml", "client_id", "a-new-client-id").code == 0
    after = {k["key"]: k for k in json.loads(cli("secrets", "list", "-s", "staging/azureml", "--json").out)}
    assert after["client_id"]["created"] == before["created"]
    assert after["client_id"]["updated"] > before["updated"]
    assert cli("secrets", "get", "-s", "staging/azureml", "-k", "client_id").out == "a-new-client-id"

    assert cli("secrets", "delete", "-s", "staging/azureml", "-k", "tenant_id").code == 0
    missing = cli("secrets", "get", "-s", "staging/azureml", "-k", "tenant_id")
    assert missing.code == 1 and "staging/azureml/tenant_id not found" in missing.err
    assert cli("secrets", "delete-scope", "staging/azureml").code == 0
    gone = cli("secrets", "list", "-s", "staging/azureml")
    assert gone.code == 1 and "scope staging/azureml does not exist" in gone.err
    assert [s["scope"] for s in json.loads(cli("secrets", "list-scopes", "--json").out)] == ["ci"]

    # every change and every read is in the audit trail, values never
    trail = cli("audit", "--action", "s", "--json", "--limit", "100")
    actions = [(e["action"], e["target"]) for e in json.loads(trail.out)]
    assert ("scope.create", "staging/azureml") in actions
    assert ("secret.put", "staging/azureml/client_secret") in actions
    assert ("secret.read", "staging/azureml/client_secret") in actions
    assert ("secret.delete", "staging/azureml/tenant_id") in actions
    assert ("scope.delete", "staging/azureml") in actions
    assert not any(v in trail.out for v in AZUREML.values())
    audit_bytes = (project / ".vintage" / "audit.db").read_bytes()
    assert not any(v.encode() in audit_bytes for v in AZUREML.values())


def test_values_from_file_and_generate(project, cli, tmp_path):
    assert cli("secrets", "create-scope", "production/serving").code == 0
    src = tmp_path / "value.txt"
    src.write_text("from-a-file-value\n")
    assert cli("secrets", "put", "-s", "production/serving", "-k", "other", "--from-file", str(src)).code == 0
    assert cli("secrets", "get", "-s", "production/serving", "-k", "other").out == "from-a-file-value"

    res = cli("secrets", "put", "-s", "production/serving", "-k", "primary", "--generate")
    assert res.code == 0, res.err
    key = cli("secrets", "get", "-s", "production/serving", "-k", "primary").out
    assert len(key) >= 40 and key not in res.out + res.err
    res2 = cli("secrets", "put", "-s", "production/serving", "-k", "primary", "--generate")
    assert res2.code == 0
    assert cli("secrets", "get", "-s", "production/serving", "-k", "primary").out != key


@pytest.mark.parametrize(
    "args, needle",
    [
        (["create-scope", "bad name"], "invalid scope name"),
        (["create-scope", "a/b/c"], "more than one '/'"),
        (["create-scope", "vintage-internal"], "reserved"),
        (["create-scope", "x" * 65], "at most 64"),
        (["list", "--scope", "_hidden"], "invalid scope name"),
        (["list", "--scope", "Vintage"], "reserved"),
        (["get", "--scope", "ci", "--key", "bad key"], "invalid secret key"),
        (["get", "--scope", "ci", "--key", "k" * 129], "at most 128"),
        (["put", "--scope", "ci", "--key", "token", "the-value-on-argv"], "unexpected extra argument"),
    ],
)
def test_bad_names_and_argv_values_are_usage_errors(project, cli, args, needle):
    res = cli("secrets", *args)
    assert res.code == 2, (res.out, res.err)
    assert needle in res.err
    assert "the-value-on-argv" not in res.err or "unexpected extra argument" in res.err


def test_short_and_empty_values_are_refused_and_store_unchanged(project, cli, monkeypatch):
    assert cli("secrets", "create-scope", "ci").code == 0
    assert put(cli, monkeypatch, "ci", "token", "good-value").code == 0
    before = store_file(project).read_bytes()
    res = put(cli, monkeypatch, "ci", "token", "abc")
    assert res.code == 2 and "at least 4 characters" in res.err
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    empty = cli("secrets", "put", "-s", "ci", "-k", "token")
    assert empty.code == 2 and "no value on standard input" in empty.err
    assert store_file(project).read_bytes() == before


def test_put_into_missing_scope_and_writes_to_env_provider(project, cli, monkeypatch):
    res = put(cli, monkeypatch, "nowhere", "token", "some-value")
    assert res.code == 1 and "scope nowhere does not exist" in res.err and "create-scope nowhere" in res.err
    res = put(cli, monkeypatch, "ci", "token", "some-value", "--provider", "env")
    assert res.code == 1 and "read-only" in res.err


def test_file_modes(project, cli, monkeypatch):
    assert cli("secrets", "create-scope", "ci").code == 0
    assert put(cli, monkeypatch, "ci", "token", "mode-check-value").code == 0
    secrets_dir = project / ".vintage" / "secrets"
    assert secrets_dir.stat().st_mode & 0o777 == 0o700
    assert (secrets_dir / "store.json").stat().st_mode & 0o777 == 0o600
    assert (secrets_dir / "master.key").stat().st_mode & 0o777 == 0o600
    assert b"mode-check-value" not in (secrets_dir / "store.json").read_bytes()


def test_wrong_and_missing_master_key_change_nothing(project, cli, monkeypatch):
    from vintage.secrets.local import new_master_key

    key_a, key_b = new_master_key(), new_master_key()
    monkeypatch.setenv("VINTAGE_MASTER_KEY", key_a)
    assert cli("secrets", "create-scope", "ci").code == 0
    assert put(cli, monkeypatch, "ci", "token", "value-under-key-a").code == 0
    assert not (project / ".vintage" / "secrets" / "master.key").exists()  # env key: no key file
    before = store_file(project).read_bytes()

    monkeypatch.setenv("VINTAGE_MASTER_KEY", key_b)
    for res in (
        put(cli, monkeypatch, "ci", "token", "value-under-key-b"),
        cli("secrets", "get", "-s", "ci", "-k", "token"),
        cli("secrets", "rotate-key", "--new-key-file", str(project / "new.key")),
    ):
        assert res.code == 1, res.err
        assert "does not open the secret store" in res.err
        assert key_a not in res.err and key_b not in res.err and "value-under-key" not in res.err
    assert store_file(project).read_bytes() == before
    assert not (project / "new.key").exists()

    monkeypatch.setenv("VINTAGE_MASTER_KEY", "not-a-key")
    bad = cli("secrets", "get", "-s", "ci", "-k", "token")
    assert bad.code == 2 and "is not a vintage master key" in bad.err and "not-a-key" not in bad.err

    monkeypatch.delenv("VINTAGE_MASTER_KEY")
    missing = cli("secrets", "get", "-s", "ci", "-k", "token")
    assert missing.code == 1 and "master key is missing" in missing.err
    assert not (project / ".vintage" / "secrets" / "master.key").exists()  # never invents a new key
    assert store_file(project).read_bytes() == before

    monkeypatch.setenv("VINTAGE_MASTER_KEY", key_a)
    assert cli("secrets", "get", "-s", "ci", "-k", "token").out == "value-under-key-a"


def test_rotate_key_with_key_file_and_with_env_key(project, cli, monkeypatch):
    assert cli("secrets", "create-scope", "ci").code == 0
    for i in range(5):
        assert put(cli, monkeypatch, "ci", f"k{i}", f"value-number-{i}").code == 0
    key_file = project / ".vintage" / "secrets" / "master.key"
    old_key = key_file.read_text()
    res = cli("secrets", "rotate-key")
    assert res.code == 0 and "re-encrypted 5 secret(s)" in res.err
    assert key_file.read_text() != old_key and key_file.stat().st_mode & 0o777 == 0o600
    assert [cli("secrets", "get", "-s", "ci", "-k", f"k{i}").out for i in range(5)] == [
        f"value-number-{i}" for i in range(5)
    ]
    monkeypatch.setenv("VINTAGE_MASTER_KEY", old_key)
    assert "does not open" in cli("secrets", "get", "-s", "ci", "-k", "k0").err

    # key from the environment: the new key goes to a file the operator asked for
    monkeypatch.setenv("VINTAGE_MASTER_KEY", key_file.read_text())
    key_file.unlink()
    needs = cli("secrets", "rotate-key")
    assert needs.code == 2 and "--new-key-file" in needs.err
    new_file = project / "rotated.key"
    assert cli("secrets", "rotate-key", "--new-key-file", str(new_file)).code == 0
    assert new_file.stat().st_mode & 0o777 == 0o600
    assert "does not open" in cli("secrets", "get", "-s", "ci", "-k", "k0").err  # old env key
    monkeypatch.setenv("VINTAGE_MASTER_KEY", new_file.read_text())
    assert cli("secrets", "get", "-s", "ci", "-k", "k3").out == "value-number-3"
    events = json.loads(cli("audit", "--action", "key.rotate", "--json").out)
    assert [e["outcome"] for e in events] == ["ok", "failed", "ok"]  # the one without --new-key-file


def test_sync_from_ci_environment_into_local_store(project, cli, monkeypatch):
    monkeypatch.setenv("VINTAGE_SECRET__CI__DATABRICKS_TOKEN", "dapi-from-ci-0123456789")
    monkeypatch.setenv("VINTAGE_SECRET__STAGING__AZUREML__CLIENT_SECRET", "staging-client-secret-ci")
    monkeypatch.setenv("VINTAGE_SECRET__PRODUCTION__AZUREML__CLIENT_SECRET", "production-client-secret-ci")
    listed = cli("secrets", "list-scopes", "--provider", "env", "--json")
    assert {s["scope"] for s in json.loads(listed.out)} == {"ci", "staging/azureml", "production/azureml"}

    res = cli(
        "secrets", "sync", "--from", "env", "--to", "local", "--scope", "ci", "--scope", "staging/azureml"
    )
    assert res.code == 0, res.err
    assert "copied 2 secret(s)" in res.err
    assert "dapi-from-ci" not in res.out + res.err
    monkeypatch.delenv("VINTAGE_SECRET__CI__DATABRICKS_TOKEN")
    assert cli("secrets", "get", "-s", "ci", "-k", "databricks_token").out == "dapi-from-ci-0123456789"
    scopes = {s["scope"] for s in json.loads(cli("secrets", "list-scopes", "--json").out)}
    assert scopes == {"ci", "staging/azureml"}  # production was not asked for

    everything = cli("secrets", "sync", "--from", "env", "--to", "local")
    assert everything.code == 0 and "copied 2 secret(s)" in everything.err  # the two still in the env

    for var in [v for v in os.environ if v.startswith("VINTAGE_SECRET__")]:
        monkeypatch.delenv(var)
    empty = cli("secrets", "sync", "--from", "env", "--to", "local")
    assert empty.code == 1 and "no secrets to copy" in empty.err
    into_env = cli("secrets", "sync", "--from", "local", "--to", "env")
    assert into_env.code == 1 and "read-only" in into_env.err


def _events(cli, action: str) -> list[dict]:
    return json.loads(cli("audit", "--action", action, "--json", "--limit", "1000").out)


def test_store_edited_outside_vintage_is_refused_and_failed_writes_audited(project, cli, monkeypatch):
    assert cli("secrets", "create-scope", "production/serving").code == 0
    assert put(cli, monkeypatch, "production/serving", "primary", "revoked-api-key-0001").code == 0
    assert put(cli, monkeypatch, "production/serving", "secondary", "second-api-key-0002").code == 0
    path = store_file(project)
    older = path.read_bytes()
    revoked = json.loads(older)["scopes"]["production/serving"]["keys"]["primary"]
    assert put(cli, monkeypatch, "production/serving", "primary", "current-api-key-0003").code == 0

    # 1. the revoked key's ciphertext put back in place of the current one
    data = json.loads(path.read_text())
    data["scopes"]["production/serving"]["keys"]["primary"] = revoked
    path.write_text(json.dumps(data, indent=1))
    edited = path.read_bytes()
    got = cli("secrets", "get", "-s", "production/serving", "-k", "primary")
    assert got.code == 1 and got.out == ""
    assert "the secret store secrets/store.json was modified outside vintage" in got.err
    assert "revoked-api-key" not in got.out + got.err and str(project) not in got.err
    res = put(cli, monkeypatch, "production/serving", "primary", "another-api-key-0004")
    assert res.code == 1 and "modified outside vintage" in res.err
    assert cli("secrets", "delete", "-s", "production/serving", "-k", "secondary").code == 1
    assert cli("secrets", "create-scope", "ci").code == 1
    assert cli("secrets", "delete-scope", "production/serving").code == 1
    assert cli("secrets", "list", "-s", "production/serving").code == 1
    assert path.read_bytes() == edited

    failed = [(e["action"], e["target"], e["outcome"]) for e in _events(cli, "s") if e["outcome"] != "ok"]
    assert failed == [
        ("secret.read", "production/serving/primary", "error"),
        ("secret.put", "production/serving/primary", "failed"),
        ("secret.delete", "production/serving/secondary", "failed"),
        ("scope.create", "ci", "failed"),
        ("scope.delete", "production/serving", "failed"),
    ]
    [put_failed] = [e for e in _events(cli, "secret.put") if e["outcome"] == "failed"]
    assert "error=the secret store secrets/store.json was modified outside vintage" in put_failed["detail"]
    audit_bytes = b"".join(p.read_bytes() for p in (project / ".vintage").glob("audit.db*"))
    for value in ("revoked-api-key-0001", "current-api-key-0003", "another-api-key-0004"):
        assert value.encode() not in audit_bytes

    # 2. an entry deleted by editing the file
    data = json.loads(older)
    del data["scopes"]["production/serving"]["keys"]["secondary"]
    path.write_text(json.dumps(data))
    res = cli("secrets", "get", "-s", "production/serving", "-k", "primary")
    assert res.code == 1 and "modified outside vintage" in res.err

    # 3. the whole file put back from the older copy: a valid seal, an older generation
    path.write_bytes(older)
    res = cli("secrets", "get", "-s", "production/serving", "-k", "primary")
    assert res.code == 1 and "secrets/store.json is an older copy (generation 3" in res.err
    assert "revoked-api-key" not in res.out


@pytest.mark.parametrize("name", ["store.json", "master.key"])
def test_symlinked_store_or_key_is_refused(project, cli, monkeypatch, tmp_path, name):
    assert cli("secrets", "create-scope", "ci").code == 0
    assert put(cli, monkeypatch, "ci", "token", "linked-value-0001").code == 0
    link = project / ".vintage" / "secrets" / name
    real = tmp_path / f"elsewhere-{name}"
    link.rename(real)
    link.symlink_to(real)
    for res in (
        cli("secrets", "get", "-s", "ci", "-k", "token"),
        put(cli, monkeypatch, "ci", "token", "through-the-link"),
        cli("secrets", "list-scopes"),
    ):
        assert res.code == 1, res.err
        assert f"secrets/{name} is a symbolic link; vintage does not follow" in res.err
        assert str(tmp_path) not in res.err and "linked-value" not in res.out
    assert link.is_symlink()


def test_names_that_would_read_another_environments_variable(project, cli, monkeypatch):
    """VINTAGE_SECRET__PRODUCTION__SERVING__PRIMARY is production/serving's key. The shared scope
    production with key serving__primary (or the scope production__serving) spelled the same variable."""
    monkeypatch.setenv("VINTAGE_SECRET__PRODUCTION__SERVING__PRIMARY", "production-api-key-0001")
    for args in (
        ["secrets", "create-scope", "production__serving"],
        ["secrets", "put", "-s", "production", "-k", "serving__primary", "--generate"],
        ["serve", "-e", "staging", "--api-key-scope", "production__serving", "--port", "1"],
    ):
        res = cli(*args)
        assert res.code == 2, (args, res.err)
        assert "has '_', '-' or '.' twice in a row or at the end" in res.err
    # Even an operator does not get it: the variable that would be read belongs to production.
    got = cli("secrets", "get", "-s", "production", "-k", "serving__primary", "--provider", "env")
    assert got.code == 1 and got.out == ""
    assert "its variable VINTAGE_SECRET__PRODUCTION__SERVING__PRIMARY belongs to environment" in got.err
    assert "production-api-key" not in got.err
    [event] = _events(cli, "secret.read")
    assert (event["target"], event["outcome"]) == ("production/serving__primary", "denied")
    # The real name still reads it.
    ok = cli("secrets", "get", "-s", "production/serving", "-k", "primary", "--provider", "env")
    assert ok.code == 0 and ok.out == "production-api-key-0001"


def test_secret_stored_under_an_old_name_can_be_renamed(project, cli, monkeypatch):
    """A store written before the rule may hold ci/token__old: it can be read, put back under a new name
    and deleted; nothing else accepts the name."""
    from vintage.secrets.local import LocalStore
    from vintage.secrets.names import Scope

    store = LocalStore(project / ".vintage")
    store.create_scope(Scope("ci"))
    store.put(Scope("ci"), "token__old", "old-name-value-0001")  # below the name checks, as an old store
    assert json.loads(cli("secrets", "list", "-s", "ci", "--json").out)[0]["key"] == "token__old"
    got = cli("secrets", "get", "-s", "ci", "-k", "token__old")
    assert got.code == 0 and got.out == "old-name-value-0001"
    assert put(cli, monkeypatch, "ci", "token_new", got.out).code == 0
    assert put(cli, monkeypatch, "ci", "token__old", "overwrite").code == 2  # no new writes under it
    assert cli("secrets", "delete", "-s", "ci", "-k", "token__old").code == 0
    assert [k["key"] for k in json.loads(cli("secrets", "list", "-s", "ci", "--json").out)] == ["token_new"]


def test_failed_writes_are_audited(project, cli, monkeypatch):
    res = put(cli, monkeypatch, "nowhere", "token", "some-value-0001")
    assert res.code == 1
    assert put(cli, monkeypatch, "ci", "token", "ab").code == 2  # too short to store
    assert cli("secrets", "create-scope", "ci").code == 0
    assert cli("secrets", "create-scope", "ci").code == 1  # exists
    assert cli("secrets", "delete", "-s", "ci", "-k", "absent").code == 1
    assert cli("secrets", "delete-scope", "absent").code == 1
    assert cli("secrets", "create-scope", "ci2", "--provider", "env").code == 1  # read-only
    failed = [(e["action"], e["target"], e["outcome"], e["detail"]) for e in _events(cli, "s")]
    assert failed == [
        (
            "secret.put",
            "nowhere/token",
            "failed",
            "provider=local error=scope nowhere does not exist in the local provider",
        ),
        (
            "secret.put",
            "ci/token",
            "failed",
            "provider=local error=a secret value must have at least 4 characters "
            "(shorter values cannot be redacted safely from logs)",
        ),
        ("scope.create", "ci", "ok", "provider=local"),
        ("scope.create", "ci", "failed", "provider=local error=scope ci already exists"),
        (
            "secret.delete",
            "ci/absent",
            "failed",
            "provider=local error=secret ci/absent does not exist in the local provider",
        ),
        (
            "scope.delete",
            "absent",
            "failed",
            "provider=local error=scope absent does not exist in the local provider",
        ),
        ("scope.create", "ci2", "failed", "provider=env error=the env provider is read-only"),
    ]
    assert b"some-value-0001" not in b"".join(
        p.read_bytes() for p in (project / ".vintage").glob("audit.db*")
    )
    rot = cli("secrets", "rotate-key", "--new-key-file", str(project / "vintage.yaml"))
    assert rot.code == 2
    [event] = _events(cli, "key.rotate")
    assert (event["outcome"], event["detail"]) == (
        "failed",
        "error=vintage.yaml already exists; give a path that does not exist",
    )


def _echo_off(tty: int, wait: float = 10.0) -> bool:
    """Wait until the program switched terminal echo off (a hidden prompt); typing earlier is discarded."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if not termios.tcgetattr(tty)[3] & termios.ECHO:
            return True
        time.sleep(0.01)
    return False


def _run_on_tty(args: list[str], cwd: Path, typed: list[str] | None = None) -> tuple[int, str]:
    """Run vintage with stdin/stdout/stderr on a pseudo-terminal; return (exit code, transcript)."""
    master, slave = pty.openpty()

    def controlling_tty() -> None:  # like a login shell: the pty is the controlling terminal (/dev/tty)
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(
        [VINTAGE, *args],
        cwd=cwd,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        preexec_fn=controlling_tty,
    )
    transcript = b""
    pending = list(typed or [])
    answered = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            transcript += chunk
            prompts = transcript.count(b"Value:") + transcript.count(b"Repeat for confirmation:")
            if pending and prompts > answered and _echo_off(slave):
                # typed only once the prompt switched echo off: input typed earlier would be discarded
                os.write(master, pending.pop(0).encode() + b"\n")
                answered += 1
        elif proc.poll() is not None:
            break
    proc.wait(timeout=30)
    os.close(master)
    os.close(slave)
    return proc.returncode, transcript.decode(errors="replace")


def test_terminals_get_no_values_and_the_prompt_is_hidden(project, cli, monkeypatch):
    assert cli("secrets", "create-scope", "ci").code == 0
    code, transcript = _run_on_tty(
        ["secrets", "put", "-s", "ci", "-k", "typed"], project, ["typed-secret-value", "typed-secret-value"]
    )
    assert code == 0, transcript
    assert "typed-secret-value" not in transcript  # hidden prompt: no echo
    assert cli("secrets", "get", "-s", "ci", "-k", "typed").out == "typed-secret-value"

    code, transcript = _run_on_tty(["secrets", "get", "-s", "ci", "-k", "typed"], project)
    assert code == 2 and "refusing to print a secret to a terminal" in transcript
    assert "typed-secret-value" not in transcript
    code, transcript = _run_on_tty(["secrets", "get", "-s", "ci", "-k", "typed", "--reveal"], project)
    assert code == 0 and "typed-secret-value" in transcript


@pytest.mark.slow
def test_kill_9_during_put_leaves_old_or_new_store(project, cli, monkeypatch):
    from vintage.secrets.local import LocalStore
    from vintage.secrets.names import Scope

    store = LocalStore(project / ".vintage")
    store.create_scope(Scope("bulk"))
    # A big store (~20 MB on disk) makes every write long enough to be caught in the middle.
    for i in range(150):
        store.put(Scope("bulk"), f"blob{i:03d}", f"{i:03d}" + "x" * 100_000)
    store.put(Scope("bulk"), "target", "old-value-0")
    secrets_dir = project / ".vintage" / "secrets"

    caught_mid_write = 0
    current = "old-value-0"
    for attempt in range(1, 9):
        new = f"new-value-{attempt}"
        proc = subprocess.Popen(
            [VINTAGE, "secrets", "put", "-s", "bulk", "-k", "target"],
            cwd=project,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        assert proc.stdin is not None
        proc.stdin.write(new.encode())
        proc.stdin.close()
        while proc.poll() is None:
            if list(secrets_dir.glob(".store.json.*.tmp")):
                os.kill(proc.pid, signal.SIGKILL)
                caught_mid_write += 1
                break
            time.sleep(0.0005)
        proc.wait()
        value = LocalStore(project / ".vintage").get(Scope("bulk"), "target")
        assert value in (current, new), value  # the store opens and holds the old or the new value
        current = value
        assert LocalStore(project / ".vintage").get(Scope("bulk"), "blob149") == "149" + "x" * 100_000
    assert caught_mid_write >= 1, "no put was killed while writing; the test proved nothing"
    # the next write clears the killed writers' temp files and works
    monkeypatch.setattr(sys, "stdin", io.StringIO("after-the-kills"))
    assert cli("secrets", "put", "-s", "bulk", "-k", "target").code == 0
    assert not list(secrets_dir.glob(".store.json.*.tmp"))
    assert cli("secrets", "get", "-s", "bulk", "-k", "target").out == "after-the-kills"


def test_new_master_key_is_usable_and_not_shown_on_a_terminal(project, cli, monkeypatch):
    res = cli("secrets", "new-master-key")
    key = res.out.strip()
    assert res.code == 0 and len(key) == 44
    assert cli("secrets", "new-master-key").out.strip() != key
    monkeypatch.setenv("VINTAGE_MASTER_KEY", key)
    assert cli("secrets", "create-scope", "ci").code == 0
    assert put(cli, monkeypatch, "ci", "token", "under-a-new-key").code == 0
    assert not (project / ".vintage" / "secrets" / "master.key").exists()
    assert cli("secrets", "get", "-s", "ci", "-k", "token").out == "under-a-new-key"
    code, transcript = _run_on_tty(["secrets", "new-master-key"], project)
    assert code == 2 and "refusing to print a master key" in transcript
