"""The encrypted local store: round trips, encryption, file modes, keys, rotation, concurrency."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vintage.errors import ConfigError, SecretError
from vintage.secrets import local
from vintage.secrets.base import ScopeInfo
from vintage.secrets.local import LocalStore, new_master_key
from vintage.secrets.names import Scope

SHARED = Scope("ci")
STAGING = Scope("staging/azureml")
VALUE = "s3cr3t/value+with=chars?&"


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / ".vintage"


@pytest.fixture
def store(state_dir: Path) -> LocalStore:
    return LocalStore(state_dir)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _filled(store: LocalStore) -> dict[tuple[Scope, str], str]:
    """A store with a few values in two scopes; returns what was put."""
    values = {
        (SHARED, "token"): "ci-token-0001",
        (SHARED, "user"): "ci-user-0002",
        (STAGING, "client-secret"): "staging-secret-0003",
    }
    for scope in (SHARED, STAGING):
        store.create_scope(scope)
    for (scope, key), value in values.items():
        store.put(scope, key, value)
    return values


def _resealed(store: LocalStore, data: dict[str, Any]) -> None:
    """Write ``data`` as the store with a valid MAC, as only someone holding the master key could."""
    keys = local._Keys.of(base64.urlsafe_b64decode(store.key_file.read_text()))
    data["mac"] = keys.mac(data)
    store.path.write_text(json.dumps(data))


def _entry(store: LocalStore, scope: str, key: str) -> dict[str, str]:
    data = json.loads(store.path.read_text())
    entry: dict[str, str] = data["scopes"][scope]["keys"][key]
    return entry


# ------------------------------------------------------------------------------------------ round trip


def test_round_trip(store: LocalStore) -> None:
    assert store.list_scopes() == []
    assert store.get(SHARED, "token") is None  # no store yet: nothing, no error

    store.create_scope(SHARED)
    store.create_scope(STAGING)
    store.put(SHARED, "token", VALUE)
    store.put(SHARED, "user", "someone-1")
    store.put(STAGING, "client-secret", "staging-value")

    assert store.get(SHARED, "token") == VALUE
    assert store.get(SHARED, "user") == "someone-1"
    assert store.get(STAGING, "client-secret") == "staging-value"
    assert store.get(SHARED, "absent") is None
    assert store.get(Scope("other"), "token") is None
    assert store.list_scopes() == [
        ScopeInfo("ci", None, 2, "local"),
        ScopeInfo("staging/azureml", "staging", 1, "local"),
    ]
    assert [k.key for k in store.list_keys(SHARED)] == ["token", "user"]
    assert store.has_scope(STAGING)
    assert not store.has_scope(Scope("other"))

    # A second instance (another process) sees the same store.
    assert LocalStore(store.state_dir).get(SHARED, "token") == VALUE

    store.delete(SHARED, "token")
    assert store.get(SHARED, "token") is None
    assert [k.key for k in store.list_keys(SHARED)] == ["user"]

    store.delete_scope(SHARED)
    assert not store.has_scope(SHARED)
    assert store.get(SHARED, "user") is None
    assert [s.name for s in store.list_scopes()] == ["staging/azureml"]
    assert store.get(STAGING, "client-secret") == "staging-value"


def test_put_overwrites(store: LocalStore) -> None:
    store.create_scope(SHARED)
    store.put(SHARED, "token", "first-value")
    store.put(SHARED, "token", "second-value")
    assert store.get(SHARED, "token") == "second-value"
    assert len(store.list_keys(SHARED)) == 1


def test_put_into_missing_scope(store: LocalStore) -> None:
    store.create_scope(SHARED)
    before = store.path.read_bytes()
    with pytest.raises(SecretError, match="scope staging/azureml does not exist") as exc:
        store.put(STAGING, "client-secret", VALUE)
    assert "create-scope staging/azureml" in (exc.value.hint or "")
    assert store.path.read_bytes() == before


def test_errors_for_missing_and_duplicate_things(store: LocalStore) -> None:
    store.create_scope(SHARED)
    with pytest.raises(SecretError, match="already exists"):
        store.create_scope(SHARED)
    with pytest.raises(SecretError, match="secret ci/absent does not exist"):
        store.delete(SHARED, "absent")
    with pytest.raises(SecretError, match="does not exist"):
        store.delete(STAGING, "absent")
    with pytest.raises(SecretError, match="does not exist"):
        store.delete_scope(STAGING)
    with pytest.raises(SecretError, match="does not exist"):
        store.list_keys(STAGING)


def test_created_and_updated_times(store: LocalStore, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter(["2024-01-01T00:00:00+00:00", "2024-01-02T00:00:00+00:00", "2024-01-03T00:00:00+00:00"])
    monkeypatch.setattr(local, "_now", lambda: next(clock))
    store.create_scope(SHARED)  # t1
    store.put(SHARED, "token", "first-value")  # t2
    store.put(SHARED, "token", "second-value")  # t3
    [info] = store.list_keys(SHARED)
    assert info.created == "2024-01-02T00:00:00+00:00"
    assert info.updated == "2024-01-03T00:00:00+00:00"
    body = json.loads(store.path.read_text())["scopes"]["ci"]
    assert body["created"] == "2024-01-01T00:00:00+00:00"
    assert body["updated"] == "2024-01-03T00:00:00+00:00"


# ---------------------------------------------------------------------------------------- the files


def test_file_modes(store: LocalStore) -> None:
    store.create_scope(SHARED)
    store.put(SHARED, "token", VALUE)
    assert _mode(store.dir) == 0o700
    assert _mode(store.path) == 0o600
    assert _mode(store.key_file) == 0o600
    # Modes stay private after a rewrite.
    store.put(SHARED, "token", VALUE + "-2")
    assert _mode(store.path) == 0o600
    assert _mode(store.generation_file) == 0o600
    # No temp files left behind.
    assert sorted(p.name for p in store.dir.iterdir()) == ["master.key", "store.generation", "store.json"]


def test_write_removes_temp_files_of_killed_writers(store: LocalStore) -> None:
    store.create_scope(SHARED)
    stale = store.dir / ".store.json.killed.tmp"
    stale.write_bytes(b'{"format": "vintage-secrets/1", "sco')  # a writer killed mid-write
    assert store.get(SHARED, "token") is None  # reads ignore it
    store.put(SHARED, "token", VALUE)
    assert not stale.exists()
    assert store.get(SHARED, "token") == VALUE


def test_env_key_creates_no_key_file(store: LocalStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VINTAGE_MASTER_KEY", new_master_key())
    store.create_scope(SHARED)
    store.put(SHARED, "token", VALUE)
    assert not store.key_file.exists()
    assert _mode(store.dir) == 0o700
    assert _mode(store.path) == 0o600
    assert store.get(SHARED, "token") == VALUE


def test_store_holds_no_plaintext(store: LocalStore) -> None:
    store.create_scope(SHARED)
    store.put(SHARED, "token", VALUE)
    raw = store.path.read_bytes()
    for form in (
        VALUE.encode(),
        base64.b64encode(VALUE.encode()),
        base64.b64encode(VALUE.encode()).rstrip(b"="),
        base64.urlsafe_b64encode(VALUE.encode()).rstrip(b"="),
        VALUE.encode().hex().encode(),
    ):
        assert form not in raw
    # The names are in the clear (they are not secret), the value is not.
    assert b'"token"' in raw


def test_each_entry_has_its_own_nonce(store: LocalStore) -> None:
    store.create_scope(SHARED)
    store.put(SHARED, "a", VALUE)
    store.put(SHARED, "b", VALUE)
    a, b = _entry(store, "ci", "a"), _entry(store, "ci", "b")
    assert a["nonce"] != b["nonce"]
    assert a["ciphertext"] != b["ciphertext"]
    assert len(base64.b64decode(a["nonce"])) == 12
    # Putting the same value again under the same key also draws a new nonce.
    store.put(SHARED, "a", VALUE)
    assert _entry(store, "ci", "a")["nonce"] != a["nonce"]


@pytest.mark.parametrize(("scope", "key"), [("ci", "other"), ("staging/azureml", "token")])
def test_ciphertext_bound_to_its_scope_and_key(store: LocalStore, scope: str, key: str) -> None:
    store.create_scope(SHARED)
    store.create_scope(STAGING)
    store.put(SHARED, "token", VALUE)
    store.put(Scope(scope), key, "placeholder")
    data = json.loads(store.path.read_text())
    data["scopes"][scope]["keys"][key] = dict(data["scopes"]["ci"]["keys"]["token"])
    _resealed(store, data)  # the names are bound to each value even under a valid store MAC
    with pytest.raises(SecretError, match="cannot be decrypted") as exc:
        store.get(Scope(scope), key)
    assert VALUE not in str(exc.value)
    assert store.get(SHARED, "token") == VALUE  # the original still decrypts


def test_tampered_ciphertext(store: LocalStore) -> None:
    store.create_scope(SHARED)
    store.put(SHARED, "token", VALUE)
    data = json.loads(store.path.read_text())
    entry = data["scopes"]["ci"]["keys"]["token"]
    raw = bytearray(base64.b64decode(entry["ciphertext"]))
    raw[0] ^= 1
    entry["ciphertext"] = base64.b64encode(bytes(raw)).decode()
    _resealed(store, data)
    with pytest.raises(SecretError, match="altered"):
        store.get(SHARED, "token")


# ------------------------------------------------------------------------------------------- keys


def test_wrong_env_key(store: LocalStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VINTAGE_MASTER_KEY", new_master_key())
    store.create_scope(SHARED)
    store.put(SHARED, "token", VALUE)
    before = store.path.read_bytes()

    monkeypatch.setenv("VINTAGE_MASTER_KEY", new_master_key())
    with pytest.raises(SecretError, match="does not open the secret store") as exc:
        store.get(SHARED, "token")
    assert "VINTAGE_MASTER_KEY" in exc.value.headline
    with pytest.raises(SecretError, match="does not open"):
        store.put(SHARED, "token", "overwrite-attempt")
    with pytest.raises(SecretError, match="does not open"):
        store.create_scope(STAGING)
    with pytest.raises(SecretError, match="does not open"):
        store.delete_scope(SHARED)
    assert store.path.read_bytes() == before
    assert not store.key_file.exists()


def test_env_key_other_than_key_file(store: LocalStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store.create_scope(SHARED)  # key file created
    store.put(SHARED, "token", VALUE)
    before = store.path.read_bytes()
    monkeypatch.setenv("VINTAGE_MASTER_KEY", new_master_key())
    with pytest.raises(SecretError, match="does not open"):
        store.put(SHARED, "token", "overwrite-attempt")
    assert store.path.read_bytes() == before
    # The right key in the variable works as well as the file.
    monkeypatch.setenv("VINTAGE_MASTER_KEY", store.key_file.read_text())
    assert store.get(SHARED, "token") == VALUE


def test_wrong_key_file(store: LocalStore) -> None:
    store.create_scope(SHARED)
    store.put(SHARED, "token", VALUE)
    before = store.path.read_bytes()
    store.key_file.write_text(new_master_key())
    with pytest.raises(SecretError, match=r"secrets/master\.key does not open"):
        store.get(SHARED, "token")
    with pytest.raises(SecretError, match="does not open"):
        store.put(SHARED, "token", "overwrite-attempt")
    assert store.path.read_bytes() == before


def test_missing_key_file(store: LocalStore) -> None:
    store.create_scope(SHARED)
    store.put(SHARED, "token", VALUE)
    before = store.path.read_bytes()
    store.key_file.unlink()
    with pytest.raises(SecretError, match="master key is missing"):
        store.get(SHARED, "token")
    with pytest.raises(SecretError, match="master key is missing"):
        store.put(SHARED, "token", "overwrite-attempt")
    with pytest.raises(SecretError, match="master key is missing"):
        store.create_scope(STAGING)
    assert not store.key_file.exists()  # no new key silently created for an existing store
    assert store.path.read_bytes() == before


@pytest.mark.parametrize(
    "bad",
    [
        "not-a-key-but-a-password-123",
        base64.urlsafe_b64encode(b"sixteen-byte-key").decode(),  # valid base64, wrong length
        "!!!!" * 11,
    ],
)
def test_malformed_env_key(store: LocalStore, monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    monkeypatch.setenv("VINTAGE_MASTER_KEY", bad)
    with pytest.raises(ConfigError) as exc:
        store.create_scope(SHARED)
    text = f"{exc.value.headline} {exc.value.hint} {exc.value!r}"
    assert "VINTAGE_MASTER_KEY" in exc.value.headline
    assert bad not in text
    assert exc.value.__cause__ is None and exc.value.__context__ is None
    assert not store.path.exists()


def test_world_readable_key_file_refused(store: LocalStore) -> None:
    store.create_scope(SHARED)
    store.put(SHARED, "token", VALUE)
    before = store.path.read_bytes()
    store.key_file.chmod(0o644)
    with pytest.raises(SecretError, match="readable by other users") as exc:
        store.get(SHARED, "token")
    assert "chmod 600" in (exc.value.hint or "")
    with pytest.raises(SecretError, match="readable by other users"):
        store.put(SHARED, "token", "overwrite-attempt")
    assert store.path.read_bytes() == before
    store.key_file.chmod(0o600)
    assert store.get(SHARED, "token") == VALUE


def test_corrupt_store(store: LocalStore) -> None:
    store.create_scope(SHARED)
    store.path.write_text('{"format": "vintage-secrets/1", "scopes": {')
    for call in (
        lambda: store.get(SHARED, "token"),
        lambda: store.put(SHARED, "token", VALUE),
        store.list_scopes,
        lambda: store.create_scope(STAGING),
    ):
        with pytest.raises(SecretError, match="not valid JSON"):
            call()
    assert store.path.read_text() == '{"format": "vintage-secrets/1", "scopes": {'


@pytest.mark.parametrize("content", ['{"format": "other/9", "scopes": {}}', "[1, 2]", '"text"'])
def test_unknown_store_format(store: LocalStore, content: str) -> None:
    store.dir.mkdir(parents=True)
    store.path.write_text(content)
    with pytest.raises(SecretError, match="unknown format"):
        store.get(SHARED, "token")


# --------------------------------------------------------------------------------------- rotation


def test_rotate_key_with_key_file(store: LocalStore, monkeypatch: pytest.MonkeyPatch) -> None:
    values = _filled(store)
    old_key = store.key_file.read_text()
    old_entry = _entry(store, "ci", "token")

    assert store.rotate_key() == len(values) == 3

    new_key = store.key_file.read_text()
    assert new_key != old_key
    assert _mode(store.key_file) == 0o600
    assert _mode(store.path) == 0o600
    assert not store.next_key_file.exists()
    new_entry = _entry(store, "ci", "token")
    assert new_entry["ciphertext"] != old_entry["ciphertext"]
    assert new_entry["created"] == old_entry["created"]  # metadata kept
    for (scope, key), value in values.items():
        assert LocalStore(store.state_dir).get(scope, key) == value

    monkeypatch.setenv("VINTAGE_MASTER_KEY", old_key)
    with pytest.raises(SecretError, match="does not open"):
        store.get(SHARED, "token")
    monkeypatch.setenv("VINTAGE_MASTER_KEY", new_key)
    assert store.get(SHARED, "token") == values[(SHARED, "token")]


def test_rotate_empty_store(store: LocalStore) -> None:
    assert store.rotate_key() == 0
    assert store.key_file.exists()
    store.create_scope(SHARED)
    store.put(SHARED, "token", VALUE)
    assert store.get(SHARED, "token") == VALUE


def test_rotate_key_with_env_key(store: LocalStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    old_key = new_master_key()
    monkeypatch.setenv("VINTAGE_MASTER_KEY", old_key)
    values = _filled(store)
    before = store.path.read_bytes()

    with pytest.raises(ConfigError, match="--new-key-file"):
        store.rotate_key()
    existing = tmp_path / "exists.key"
    existing.write_text("keep me")
    with pytest.raises(ConfigError, match="already exists"):
        store.rotate_key(existing)
    assert existing.read_text() == "keep me"
    assert store.path.read_bytes() == before

    new_file = tmp_path / "new.key"
    assert store.rotate_key(new_file) == 3
    assert _mode(new_file) == 0o600
    new_key = new_file.read_text()
    assert new_key != old_key
    assert not store.key_file.exists()
    assert not store.next_key_file.exists()

    with pytest.raises(SecretError, match="does not open"):
        store.get(SHARED, "token")  # the variable still holds the old key
    monkeypatch.setenv("VINTAGE_MASTER_KEY", new_key)
    for (scope, key), value in values.items():
        assert store.get(scope, key) == value


def test_rotate_with_wrong_key_changes_nothing(store: LocalStore, monkeypatch: pytest.MonkeyPatch) -> None:
    _filled(store)
    before = store.path.read_bytes()
    key_before = store.key_file.read_text()
    store.key_file.write_text(new_master_key())
    with pytest.raises(SecretError, match="does not open"):
        store.rotate_key()
    assert store.path.read_bytes() == before
    assert not store.next_key_file.exists()
    store.key_file.write_text(key_before)
    assert store.get(SHARED, "token") == "ci-token-0001"


def test_interrupted_rotation_after_store_written(store: LocalStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed between writing the store (under the new key) and renaming master.key.next."""
    values = _filled(store)
    old_key = store.key_file.read_text()
    real_replace = Path.replace

    def replace(self: Path, target: str | os.PathLike[str]) -> Path:
        if self == store.next_key_file:
            raise KeyboardInterrupt("killed before the key file was renamed")
        return real_replace(self, target)

    monkeypatch.setattr(Path, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        store.rotate_key()
    monkeypatch.setattr(Path, "replace", real_replace)

    new_key = store.next_key_file.read_text()
    assert new_key != old_key
    assert store.key_file.read_text() == old_key  # the rename never happened...
    reopened = LocalStore(store.state_dir)
    for (scope, key), value in values.items():  # ...but the next open finishes the rotation
        assert reopened.get(scope, key) == value
    assert store.key_file.read_text() == new_key
    assert _mode(store.key_file) == 0o600
    assert not store.next_key_file.exists()
    reopened.put(SHARED, "token", "after-recovery")
    assert reopened.get(SHARED, "token") == "after-recovery"
    monkeypatch.setenv("VINTAGE_MASTER_KEY", old_key)
    with pytest.raises(SecretError):
        reopened.get(SHARED, "user")


def test_interrupted_rotation_before_store_written(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after writing master.key.next, before the store: the stale next key is dropped."""
    values = _filled(store)
    old_key = store.key_file.read_text()
    before = store.path.read_bytes()

    def write(data: object) -> None:
        raise KeyboardInterrupt("killed before the store was written")

    monkeypatch.setattr(store, "_write", write)
    with pytest.raises(KeyboardInterrupt):
        store.rotate_key()
    assert store.next_key_file.exists()
    assert store.path.read_bytes() == before

    reopened = LocalStore(store.state_dir)
    for (scope, key), value in values.items():
        assert reopened.get(scope, key) == value
    assert not store.next_key_file.exists()
    assert store.key_file.read_text() == old_key
    assert store.path.read_bytes() == before


def test_reader_during_rotation_loses_nothing(store: LocalStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A get() while a rotation holds the lock must not delete master.key.next (the store would be
    re-encrypted under a key that no longer exists anywhere)."""
    values = _filled(store)
    reader = LocalStore(store.state_dir)
    reached_lock = threading.Event()
    real_lock = reader._lock

    @contextlib.contextmanager
    def lock() -> Iterator[None]:
        reached_lock.set()
        with real_lock():
            yield

    monkeypatch.setattr(reader, "_lock", lock)
    result: list[object] = []

    def read() -> None:
        try:
            result.append(reader.get(SHARED, "token"))
        except Exception as exc:  # reported through `result`
            result.append(exc)

    real_write = store._write
    thread = threading.Thread(target=read)

    def write(data: dict[str, object]) -> None:
        # master.key.next is written; the store is not yet. A concurrent reader arrives now.
        thread.start()
        reached_lock.wait(timeout=30)
        real_write(data)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "_write", write)
    assert store.rotate_key() == 3
    thread.join(timeout=60)
    assert reached_lock.is_set(), "the reader did not wait for the rotation's lock"
    assert result == [values[(SHARED, "token")]]
    assert not store.next_key_file.exists()
    for (scope, key), value in values.items():
        assert LocalStore(store.state_dir).get(scope, key) == value


# ------------------------------------------------------------------------------------ concurrency


def test_concurrent_puts_from_threads(store: LocalStore) -> None:
    store.create_scope(SHARED)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        own = LocalStore(store.state_dir)
        try:
            for i in range(5):
                own.put(SHARED, f"t{n}-k{i}", f"value-{n}-{i}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    data = json.loads(store.path.read_text())  # still valid JSON
    assert len(data["scopes"]["ci"]["keys"]) == 30
    for n in range(6):
        for i in range(5):
            assert store.get(SHARED, f"t{n}-k{i}") == f"value-{n}-{i}"


_CHILD = """
import sys
from pathlib import Path
from vintage.secrets.local import LocalStore
from vintage.secrets.names import Scope
store = LocalStore(Path(sys.argv[1]))
for i in range(5):
    store.put(Scope("ci"), f"p{sys.argv[2]}-k{i}", f"value-{sys.argv[2]}-{i}")
"""


def test_concurrent_puts_from_processes(store: LocalStore) -> None:
    store.create_scope(SHARED)  # the key file exists before the children start
    env = {k: v for k, v in os.environ.items() if k != "VINTAGE_MASTER_KEY"}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(store.state_dir), str(n)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(4)
    ]
    for child in children:
        _, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
    data = json.loads(store.path.read_text())
    assert len(data["scopes"]["ci"]["keys"]) == 20
    for n in range(4):
        for i in range(5):
            assert store.get(SHARED, f"p{n}-k{i}") == f"value-{n}-{i}"
    assert sorted(p.name for p in store.dir.iterdir()) == ["master.key", "store.generation", "store.json"]
    assert json.loads(store.path.read_text())["generation"] == int(store.generation_file.read_text()) == 21


def test_new_master_key_and_generate_value() -> None:
    key = new_master_key()
    assert len(key) == 44
    assert len(base64.urlsafe_b64decode(key)) == 32
    assert key != new_master_key()
    value = local.generate_value()
    assert len(value) >= 40
    assert value != local.generate_value()
