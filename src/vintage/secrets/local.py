"""The embedded secret store: one AES-256-GCM encrypted JSON file under ``<state_dir>/secrets/``.

Layout (directory 0700, files 0600)::

    secrets/store.json      {"format": "vintage-secrets/1", "key_check": {...},
                             "scopes": {NAME: {"created", "updated", "keys": {KEY: {"nonce", "ciphertext",
                                                                                   "created", "updated"}}}}}
    secrets/master.key      32 random bytes, url-safe base64 (unless VINTAGE_MASTER_KEY is set)

Each value is encrypted on its own with a fresh 96-bit nonce; the scope and key names are the associated
data, so a ciphertext moved to another key no longer decrypts. ``key_check`` is a known value encrypted
under the master key: a wrong key is detected before anything is read or written, even in an empty store.

Writes hold a file lock, write a temp file in the same directory, fsync it and rename it over the store,
so a process killed at any moment leaves the old store or the new one, never a torn file.

``rotate-key`` writes the new key to ``master.key.next`` first, then the store under the new key, then
renames the key file. An interruption at any point is finished (or undone) the next time the store opens.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import secrets as pysecrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vintage.errors import ConfigError, SecretError
from vintage.fsutil import write_private
from vintage.secrets.base import ScopeInfo, SecretInfo, no_key, no_scope
from vintage.secrets.names import Scope

FORMAT = "vintage-secrets/1"
MASTER_KEY_ENV = "VINTAGE_MASTER_KEY"
_CHECK_AAD = b"vintage-secrets/key-check"
_CHECK_PLAIN = b"vintage secret store key check"


def new_master_key() -> str:
    """A new master key: 32 random bytes as url-safe base64 (44 characters)."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def _decode_key(text: str, source: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(text.strip().encode())
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise ConfigError(
            f"{source} is not a vintage master key (expected 44 characters of url-safe base64, 32 bytes)",
            hint="generate one with `vintage secrets new-master-key`",
        )
    return raw


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode(), validate=True)


def _aad(scope: str, key: str) -> bytes:
    return f"vintage-secrets/1\0{scope}\0{key}".encode()


class LocalStore:
    """The encrypted store of one state directory. Thread- and process-safe (file lock on writes)."""

    name = "local"
    writable = True

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.dir = state_dir / "secrets"
        self.path = self.dir / "store.json"
        self.key_file = self.dir / "master.key"
        self.next_key_file = self.dir / "master.key.next"
        self._lock_path = state_dir / "locks" / "secrets.lock"

    # ----------------------------------------------------------------------------------------- keys

    def _env_key(self) -> bytes | None:
        text = os.environ.get(MASTER_KEY_ENV)
        return _decode_key(text, MASTER_KEY_ENV) if text else None

    def _file_key(self, path: Path) -> bytes | None:
        try:
            text = path.read_text(encoding="ascii")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise SecretError(
                f"cannot read the master key file secrets/{path.name} ({exc.__class__.__name__})"
            ) from exc
        if os.name == "posix" and path.stat().st_mode & 0o077:
            raise SecretError(
                f"the master key file secrets/{path.name} is readable by other users",
                hint=f"chmod 600 {path}",
            )
        return _decode_key(text, f"secrets/{path.name}")

    def key_source(self) -> str:
        """Where the master key comes from: the environment variable or the key file."""
        return MASTER_KEY_ENV if os.environ.get(MASTER_KEY_ENV) else "secrets/master.key"

    def _aead(self, key: bytes) -> Any:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        return AESGCM(key)

    def _check(self, data: dict[str, Any], aead: Any) -> bool:
        from cryptography.exceptions import InvalidTag

        check = data.get("key_check") or {}
        try:
            plain = aead.decrypt(_unb64(check["nonce"]), _unb64(check["ciphertext"]), _CHECK_AAD)
        except (InvalidTag, KeyError, TypeError, ValueError, binascii.Error):
            return False
        return bool(plain == _CHECK_PLAIN)

    def _wrong_key(self) -> SecretError:
        return SecretError(
            f"the master key from {self.key_source()} does not open the secret store",
            hint=f"set {MASTER_KEY_ENV} to the key the store was created with (or restore "
            "secrets/master.key); nothing was changed",
        )

    # ----------------------------------------------------------------------------------------- file

    def _read(self) -> dict[str, Any] | None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SecretError(f"cannot read the secret store ({exc.__class__.__name__})") from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SecretError(
                "the secret store file is not valid JSON (not written by vintage, or edited by hand)",
                hint="restore secrets/store.json from a backup; vintage never leaves a partly written store",
            ) from exc
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise SecretError(f"the secret store has an unknown format (expected {FORMAT})")
        return data

    def _open(self, *, create: bool, locked: bool = True) -> tuple[dict[str, Any], Any]:
        """The store's data and the AEAD of its key; creates an empty store (and key) when ``create``.

        ``locked``: the caller holds the store lock. Only then is an interrupted rotation finished or
        undone; without the lock, a ``master.key.next`` may belong to a rotation still under way.
        """
        data = self._read()
        env_key = self._env_key()
        if data is None:
            if not create:
                return {"format": FORMAT, "scopes": {}}, None
            key = env_key or self._file_key(self.key_file)
            if key is None:
                self.dir.mkdir(parents=True, exist_ok=True)
                self.dir.chmod(0o700)
                text = new_master_key()
                write_private(self.key_file, text.encode())
                key = _decode_key(text, "secrets/master.key")
            aead = self._aead(key)
            data = {"format": FORMAT, "key_check": self._seal_check(aead), "scopes": {}}
            return data, aead
        if env_key is not None:
            aead = self._aead(env_key)
            if not self._check(data, aead):
                raise self._wrong_key()
            return data, aead
        if not locked and self.next_key_file.exists():
            # A rotation is under way or was interrupted: wait for it, or finish / undo it, under the lock.
            with self._lock():
                return self._open(create=create, locked=True)
        key = self._file_key(self.key_file)
        if key is not None and self._check(data, aead := self._aead(key)):
            with contextlib.suppress(OSError):
                self.next_key_file.unlink()  # an interrupted rotation that never reached the store
            return data, aead
        nxt = self._file_key(self.next_key_file)
        if nxt is not None and self._check(data, aead := self._aead(nxt)):
            # A rotation wrote the store under the new key but was stopped before renaming the key file.
            self.next_key_file.replace(self.key_file)
            return data, aead
        if key is None:
            raise SecretError(
                "the secret store exists but its master key is missing",
                hint=f"set {MASTER_KEY_ENV} or restore secrets/master.key; the store was left untouched",
            )
        raise self._wrong_key()

    def _seal_check(self, aead: Any) -> dict[str, str]:
        nonce = os.urandom(12)
        return {"nonce": _b64(nonce), "ciphertext": _b64(aead.encrypt(nonce, _CHECK_PLAIN, _CHECK_AAD))}

    def _write(self, data: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        # Called under the lock: a temp file left now is from a writer killed mid-write.
        for stale in self.dir.glob(f".{self.path.name}.*.tmp"):
            with contextlib.suppress(OSError):
                stale.unlink()
        write_private(self.path, json.dumps(data, indent=1, sort_keys=True).encode())

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        from filelock import FileLock

        self._lock_path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self._lock_path), timeout=60):
            yield

    @contextlib.contextmanager
    def _locked(self) -> Iterator[tuple[dict[str, Any], Any]]:
        with self._lock():
            data, aead = self._open(create=True)
            yield data, aead

    # ----------------------------------------------------------------------------------- provider

    def list_scopes(self) -> list[ScopeInfo]:
        data = self._read() or {"scopes": {}}
        return [
            ScopeInfo(name, Scope(name).environment, len(body.get("keys", {})), self.name)
            for name, body in sorted(data["scopes"].items())
        ]

    def create_scope(self, scope: Scope) -> None:
        with self._locked() as (data, _):
            if scope.name in data["scopes"]:
                raise SecretError(f"scope {scope} already exists")
            now = _now()
            data["scopes"][scope.name] = {"created": now, "updated": now, "keys": {}}
            self._write(data)

    def delete_scope(self, scope: Scope) -> None:
        with self._locked() as (data, _):
            if data["scopes"].pop(scope.name, None) is None:
                raise no_scope(scope, self.name)
            self._write(data)

    def list_keys(self, scope: Scope) -> list[SecretInfo]:
        data = self._read() or {"scopes": {}}
        body = data["scopes"].get(scope.name)
        if body is None:
            raise no_scope(scope, self.name)
        return [SecretInfo(k, v.get("created"), v.get("updated")) for k, v in sorted(body["keys"].items())]

    def has_scope(self, scope: Scope) -> bool:
        """True when the scope exists (no key needed)."""
        data = self._read() or {"scopes": {}}
        return scope.name in data["scopes"]

    def get(self, scope: Scope, key: str) -> str | None:
        from cryptography.exceptions import InvalidTag

        data, aead = self._open(create=False, locked=False)
        entry = data["scopes"].get(scope.name, {}).get("keys", {}).get(key)
        if entry is None or aead is None:
            return None
        try:
            plain = aead.decrypt(_unb64(entry["nonce"]), _unb64(entry["ciphertext"]), _aad(scope.name, key))
        except (InvalidTag, KeyError, ValueError, binascii.Error) as exc:
            raise SecretError(
                f"secret {scope}/{key} cannot be decrypted: the store entry was altered",
                hint=f"put the value again with `vintage secrets put --scope {scope} --key {key}`",
            ) from exc
        return bytes(plain).decode()

    def put(self, scope: Scope, key: str, value: str) -> None:
        with self._locked() as (data, aead):
            body = data["scopes"].get(scope.name)
            if body is None:
                raise no_scope(scope, self.name)
            now = _now()
            old = body["keys"].get(key, {})
            nonce = os.urandom(12)
            body["keys"][key] = {
                "nonce": _b64(nonce),
                "ciphertext": _b64(aead.encrypt(nonce, value.encode(), _aad(scope.name, key))),
                "created": old.get("created", now),
                "updated": now,
            }
            body["updated"] = now
            self._write(data)

    def delete(self, scope: Scope, key: str) -> None:
        with self._locked() as (data, _):
            body = data["scopes"].get(scope.name)
            if body is None:
                raise no_scope(scope, self.name)
            if body["keys"].pop(key, None) is None:
                raise no_key(scope, key, self.name)
            body["updated"] = _now()
            self._write(data)

    # ------------------------------------------------------------------------------------ rotation

    def rotate_key(self, new_key_file: Path | None = None) -> int:
        """Re-encrypt every value under a new master key; returns the number of values.

        With the key in the key file, the new key replaces it. With ``VINTAGE_MASTER_KEY`` set, the new
        key is written to ``new_key_file`` (which must not exist) and the caller must update the variable.

        Raises:
            SecretError: the store cannot be opened, or the new key file cannot be written.
            ConfigError: ``new_key_file`` is needed (env key) or already exists.
        """
        env_key = os.environ.get(MASTER_KEY_ENV)
        if env_key and new_key_file is None:
            raise ConfigError(
                f"the master key comes from {MASTER_KEY_ENV}; give --new-key-file PATH for the new key",
                hint=f"then set {MASTER_KEY_ENV} to the content of that file",
            )
        if new_key_file is not None and new_key_file.exists():
            raise ConfigError(f"{new_key_file.name} already exists; give a path that does not exist")
        with self._locked() as (data, aead):
            text = new_master_key()
            new_aead = self._aead(_decode_key(text, "new key"))
            count = 0
            from cryptography.exceptions import InvalidTag

            rotated: dict[str, Any] = {
                "format": FORMAT,
                "key_check": self._seal_check(new_aead),
                "scopes": {},
            }
            for name, body in data["scopes"].items():
                keys = {}
                for key, entry in body["keys"].items():
                    aad = _aad(name, key)
                    try:
                        plain = aead.decrypt(_unb64(entry["nonce"]), _unb64(entry["ciphertext"]), aad)
                    except (InvalidTag, KeyError, ValueError, binascii.Error) as exc:
                        raise SecretError(
                            f"secret {name}/{key} cannot be decrypted; rotation stopped, nothing changed"
                        ) from exc
                    nonce = os.urandom(12)
                    keys[key] = {
                        **entry,
                        "nonce": _b64(nonce),
                        "ciphertext": _b64(new_aead.encrypt(nonce, plain, aad)),
                    }
                    count += 1
                rotated["scopes"][name] = {**body, "keys": keys}
            target = new_key_file if env_key else self.next_key_file
            assert target is not None
            self.dir.mkdir(parents=True, exist_ok=True)
            write_private(target, text.encode())
            self._write(rotated)
            if not env_key:
                self.next_key_file.replace(self.key_file)
            return count


def generate_value(nbytes: int = 32) -> str:
    """A random url-safe secret (e.g. an API key), ``nbytes`` of entropy."""
    return pysecrets.token_urlsafe(nbytes)
