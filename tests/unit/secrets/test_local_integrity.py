"""The local store as a whole is authenticated: edits, put-back values, old copies and links are refused."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from vintage.errors import SecretError
from vintage.secrets import local
from vintage.secrets.local import LocalStore, new_master_key
from vintage.secrets.names import Scope

SHARED = Scope("ci")
STAGING = Scope("staging/azureml")
OLD_VALUE = "old-revoked-api-key-0001"
NEW_VALUE = "new-api-key-0002"


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    store = LocalStore(tmp_path / ".vintage")
    store.create_scope(SHARED)
    store.create_scope(STAGING)
    store.put(SHARED, "token", OLD_VALUE)
    store.put(SHARED, "user", "someone-0003")
    store.put(STAGING, "client_secret", "staging-secret-0004")
    return store


def _data(store: LocalStore) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(store.path.read_text())
    return data


def _write(store: LocalStore, data: dict[str, Any]) -> None:
    store.path.write_text(json.dumps(data, indent=1))


def _refused_everywhere(store: LocalStore, match: str) -> SecretError:
    """Every read, list and write is refused, and the file is left as it is."""
    before = store.path.read_bytes()
    calls: list[Callable[[], object]] = [
        lambda: store.get(SHARED, "user"),
        lambda: store.get(STAGING, "client_secret"),
        lambda: store.put(SHARED, "token", "overwrite-attempt"),
        lambda: store.delete(SHARED, "user"),
        lambda: store.create_scope(Scope("other")),
        lambda: store.delete_scope(STAGING),
        store.list_scopes,
        lambda: store.list_keys(SHARED),
        store.rotate_key,
    ]
    first = None
    for call in calls:
        with pytest.raises(SecretError, match=match) as exc:
            call()
        first = first or exc.value
    assert store.path.read_bytes() == before
    assert first is not None
    assert str(store.state_dir) not in f"{first.headline} {first.hint}"
    return first


# ------------------------------------------------------------------------------ edits of the file


def test_older_value_put_back_is_refused(store: LocalStore) -> None:
    """A revoked value copied back from an older copy of the file decrypts (same scope and key), so only
    the store's MAC can tell: it is refused, not handed out."""
    revoked = _data(store)["scopes"]["ci"]["keys"]["token"]
    store.put(SHARED, "token", NEW_VALUE)  # the old value is revoked
    data = _data(store)
    data["scopes"]["ci"]["keys"]["token"] = revoked
    _write(store, data)
    with pytest.raises(SecretError) as exc:
        store.get(SHARED, "token")
    assert exc.value.headline == (
        "the secret store secrets/store.json was modified outside vintage (an entry was added, removed or "
        "replaced, or the file was edited); nothing was read or written"
    )
    assert "restore secrets/store.json from a backup" in (exc.value.hint or "")
    assert OLD_VALUE not in f"{exc.value.headline} {exc.value.hint}"
    _refused_everywhere(store, "modified outside vintage")


def _remove_key(data: dict[str, Any]) -> None:
    del data["scopes"]["ci"]["keys"]["token"]


def _remove_scope(data: dict[str, Any]) -> None:
    del data["scopes"]["staging/azureml"]


def _copy_entry(data: dict[str, Any]) -> None:
    data["scopes"]["staging/azureml"]["keys"]["token"] = data["scopes"]["ci"]["keys"]["token"]


def _add_scope(data: dict[str, Any]) -> None:
    data["scopes"]["production/serving"] = {"created": "2024", "updated": "2024", "keys": {}}


def _touch_time(data: dict[str, Any]) -> None:
    data["scopes"]["ci"]["keys"]["user"]["updated"] = "2030-01-01T00:00:00+00:00"


def _bump_generation(data: dict[str, Any]) -> None:
    data["generation"] += 10


def _drop_mac(data: dict[str, Any]) -> None:
    del data["mac"]


@pytest.mark.parametrize(
    "edit",
    [_remove_key, _remove_scope, _copy_entry, _add_scope, _touch_time, _bump_generation, _drop_mac],
)
def test_any_edit_is_refused(store: LocalStore, edit: Callable[[dict[str, Any]], None]) -> None:
    data = _data(store)
    edit(data)
    _write(store, data)
    _refused_everywhere(store, "modified outside vintage")


def test_seal_removed_to_pass_as_an_old_store_is_refused(store: LocalStore) -> None:
    data = _data(store)
    for field in ("mac", "generation"):
        del data[field]
    data["format"] = local.LEGACY_FORMAT
    _write(store, data)
    store.generation_file.unlink()  # even with the generation record gone
    _refused_everywhere(store, r"modified outside vintage \(its seal was removed\)")


def test_reformatting_the_file_is_not_an_edit(store: LocalStore) -> None:
    """The MAC covers the content, not the layout of the JSON."""
    _write(store, _data(store))
    store.path.write_text(json.dumps(_data(store), indent=4, sort_keys=False))
    assert store.get(SHARED, "token") == OLD_VALUE


# ---------------------------------------------------------------------------- old copies (rollback)


def test_whole_store_put_back_from_an_older_copy_is_refused(store: LocalStore) -> None:
    copy = store.path.read_bytes()  # a valid store, MAC and all, from before the rotation of the key
    store.put(SHARED, "token", NEW_VALUE)
    store.delete(SHARED, "user")
    store.path.write_bytes(copy)
    error = _refused_everywhere(store, "is an older copy")
    assert "(generation 5; vintage last wrote generation 7)" in error.headline
    assert "delete secrets/store.generation" in (error.hint or "")
    # Going back on purpose: delete the generation record, and the copy is the store again.
    store.generation_file.unlink()
    assert store.get(SHARED, "token") == OLD_VALUE
    store.put(SHARED, "other", "after-going-back")
    assert store.generation_file.read_text() == "6\n"


def test_not_detected_store_and_generation_record_put_back_together(store: LocalStore) -> None:
    """The limit: state kept next to the store goes back with it. Documented in docs/secrets.md."""
    copies = (store.path.read_bytes(), store.generation_file.read_bytes())
    store.put(SHARED, "token", NEW_VALUE)
    store.path.write_bytes(copies[0])
    store.generation_file.write_bytes(copies[1])
    assert store.get(SHARED, "token") == OLD_VALUE


def test_deleted_store_file_is_refused(store: LocalStore) -> None:
    store.path.unlink()
    for call in (lambda: store.get(SHARED, "token"), lambda: store.create_scope(SHARED), store.list_scopes):
        with pytest.raises(SecretError, match="is missing, but vintage wrote generation 5 of it"):
            call()
    assert not store.path.exists()
    store.generation_file.unlink()  # starting over, on purpose
    store.create_scope(SHARED)
    assert [s.name for s in store.list_scopes()] == ["ci"]


def test_generation_record_that_is_not_a_number(store: LocalStore) -> None:
    store.generation_file.write_text("five")
    with pytest.raises(SecretError, match="does not hold a number"):
        store.get(SHARED, "token")


def test_each_write_raises_the_generation(store: LocalStore) -> None:
    assert _data(store)["generation"] == 5
    assert store.generation_file.read_text() == "5\n"
    store.put(SHARED, "token", NEW_VALUE)
    store.delete(SHARED, "user")
    store.delete_scope(STAGING)
    assert _data(store)["generation"] == 8
    assert store.generation_file.read_text() == "8\n"


def test_crash_between_store_and_generation_record(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store is written first: a writer killed before recording the generation leaves a store newer
    than the record, which opens."""
    real = local.write_private

    def write_private(path: Path, data: bytes) -> None:
        if path == store.generation_file:
            raise KeyboardInterrupt("killed before the generation was recorded")
        real(path, data)

    monkeypatch.setattr(local, "write_private", write_private)
    with pytest.raises(KeyboardInterrupt):
        store.put(SHARED, "token", NEW_VALUE)
    monkeypatch.setattr(local, "write_private", real)
    assert store.generation_file.read_text() == "5\n"
    assert store.get(SHARED, "token") == NEW_VALUE
    store.put(SHARED, "user", "after-the-crash")
    assert store.generation_file.read_text() == "7\n"


# ------------------------------------------------------------------------------------ rotation


def test_rotation_reseals_under_the_new_key(store: LocalStore) -> None:
    old_key = base64.urlsafe_b64decode(store.key_file.read_text())
    before = _data(store)
    assert store.rotate_key() == 3
    after = _data(store)
    new_key = base64.urlsafe_b64decode(store.key_file.read_text())
    assert after["generation"] == before["generation"] + 1
    assert local._Keys.of(new_key).mac_matches(after)
    assert not local._Keys.of(old_key).mac_matches(after)
    # An entry from before the rotation put back: refused (and it would not decrypt either).
    after["scopes"]["ci"]["keys"]["token"] = before["scopes"]["ci"]["keys"]["token"]
    _write(store, after)
    with pytest.raises(SecretError, match="modified outside vintage"):
        store.get(SHARED, "token")


def test_rotation_with_env_key_reseals(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("VINTAGE_MASTER_KEY", store.key_file.read_text())
    store.key_file.unlink()
    assert store.rotate_key(tmp_path / "new.key") == 3
    monkeypatch.setenv("VINTAGE_MASTER_KEY", (tmp_path / "new.key").read_text())
    assert store.get(SHARED, "token") == OLD_VALUE
    assert store.generation_file.read_text() == "6\n"


# --------------------------------------------------------------------- stores of the previous version


def _legacy_store(state_dir: Path, values: dict[tuple[str, str], str]) -> LocalStore:
    """A store exactly as the previous version wrote it: format 1, no MAC, no generation."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    store = LocalStore(state_dir)
    store.dir.mkdir(parents=True)
    key_text = new_master_key()
    store.key_file.write_text(key_text)
    store.key_file.chmod(0o600)
    aead = AESGCM(base64.urlsafe_b64decode(key_text))

    def seal(plain: bytes, aad: bytes) -> dict[str, str]:
        nonce = os.urandom(12)
        return {
            "nonce": base64.b64encode(nonce).decode(),
            "ciphertext": base64.b64encode(aead.encrypt(nonce, plain, aad)).decode(),
        }

    scopes: dict[str, Any] = {}
    for (scope, key), value in values.items():
        body = scopes.setdefault(scope, {"created": "2024-01-01", "updated": "2024-01-01", "keys": {}})
        entry = seal(value.encode(), f"vintage-secrets/1\0{scope}\0{key}".encode())
        body["keys"][key] = {**entry, "created": "2024-01-01", "updated": "2024-01-01"}
    data = {
        "format": "vintage-secrets/1",
        "key_check": seal(b"vintage secret store key check", b"vintage-secrets/key-check"),
        "scopes": scopes,
    }
    store.path.write_text(json.dumps(data, indent=1, sort_keys=True))
    store.path.chmod(0o600)
    return store


def test_old_store_read_as_is_then_sealed_on_the_next_write(tmp_path: Path) -> None:
    store = _legacy_store(tmp_path / ".vintage", {("ci", "token"): OLD_VALUE, ("ci", "user"): "someone-0003"})
    before = store.path.read_bytes()
    assert store.get(SHARED, "token") == OLD_VALUE
    assert [k.key for k in store.list_keys(SHARED)] == ["token", "user"]
    assert store.path.read_bytes() == before  # reading changes nothing
    assert not store.generation_file.exists()

    store.put(SHARED, "other", NEW_VALUE)
    data = _data(store)
    assert data["format"] == local.FORMAT
    assert data["generation"] == 1
    assert store.generation_file.read_text() == "1\n"
    assert store.get(SHARED, "token") == OLD_VALUE  # the values were kept as they were
    assert store.get(SHARED, "other") == NEW_VALUE
    # From now on it is authenticated like any other.
    del data["scopes"]["ci"]["keys"]["user"]
    _write(store, data)
    with pytest.raises(SecretError, match="modified outside vintage"):
        store.get(SHARED, "token")


def test_old_store_put_back_after_it_was_sealed_is_refused(tmp_path: Path) -> None:
    store = _legacy_store(tmp_path / ".vintage", {("ci", "token"): OLD_VALUE})
    old_copy = store.path.read_bytes()
    store.put(SHARED, "token", NEW_VALUE)
    store.path.write_bytes(old_copy)
    with pytest.raises(
        SecretError, match=r"is an older copy \(generation 0; vintage last wrote generation 1\)"
    ):
        store.get(SHARED, "token")


def test_old_store_rotated_is_sealed(tmp_path: Path) -> None:
    store = _legacy_store(tmp_path / ".vintage", {("ci", "token"): OLD_VALUE})
    assert store.rotate_key() == 1
    assert _data(store)["format"] == local.FORMAT
    assert store.get(SHARED, "token") == OLD_VALUE


# --------------------------------------------------------------------------------- symbolic links


def _move_behind_link(path: Path, elsewhere: Path) -> None:
    path.rename(elsewhere)
    path.symlink_to(elsewhere)


@pytest.mark.parametrize("name", ["store.json", "master.key", "store.generation"])
def test_linked_file_is_refused(store: LocalStore, tmp_path: Path, name: str) -> None:
    real = tmp_path / f"real-{name}"
    _move_behind_link(store.dir / name, real)
    content = real.read_bytes()
    for call in (
        lambda: store.get(SHARED, "token"),
        lambda: store.put(SHARED, "token", "through-a-link"),
        store.list_scopes,
    ):
        with pytest.raises(SecretError) as exc:
            call()
        assert exc.value.headline.startswith(f"secrets/{name} is a symbolic link; vintage does not follow")
        assert str(tmp_path) not in f"{exc.value.headline} {exc.value.hint}"
    assert (store.dir / name).is_symlink()
    assert real.read_bytes() == content


def test_linked_secrets_directory_is_refused(store: LocalStore, tmp_path: Path) -> None:
    real = tmp_path / "real-secrets"
    _move_behind_link(store.dir, real)
    before = (real / "store.json").read_bytes()
    for call in (
        lambda: store.get(SHARED, "token"),
        lambda: store.put(SHARED, "token", "through-a-link"),
        store.list_scopes,
    ):
        with pytest.raises(
            SecretError, match=r"the secrets directory \(secrets/ in the state directory\) is a symbolic"
        ):
            call()
    assert (real / "store.json").read_bytes() == before


def test_dangling_key_link_is_not_written_through(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / ".vintage")
    store.dir.mkdir(parents=True)
    target = tmp_path / "elsewhere.key"
    store.key_file.symlink_to(target)
    with pytest.raises(SecretError, match=r"secrets/master\.key is a symbolic link"):
        store.create_scope(SHARED)
    assert not target.exists()
    assert not store.path.exists()
