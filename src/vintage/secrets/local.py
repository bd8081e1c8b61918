"""The embedded secret store: one AES-256-GCM encrypted JSON file under ``<state_dir>/secrets/``.

Layout (directory 0700, files 0600)::

    secrets/store.json        {"format": "vintage-secrets/2", "generation": N, "key_check": {...},
                               "scopes": {NAME: {"created", "updated", "keys": {KEY: {"nonce", "ciphertext",
                                                                                     "created", "updated"}}}},
                               "mac": ...}
    secrets/store.generation  N: the generation vintage last wrote
    secrets/master.key        32 random bytes, url-safe base64 (unless VINTAGE_MASTER_KEY is set)

Each value is encrypted on its own with a fresh 96-bit nonce; the scope and key names are the associated
data, so a ciphertext moved to another key no longer decrypts. ``key_check`` is a known value encrypted
under the master key: a wrong key is detected before anything is read or written, even in an empty store.

The store as a whole is authenticated: ``mac`` is an HMAC-SHA256, under a key derived from the master key
(HKDF), over everything else in the file (names, times, ciphertexts, ``generation``). It is checked on every
open, before anything is read or written, so an entry put back from an older copy (a revoked value), added
or removed by editing the file is refused. Each write raises ``generation`` and then records it in
``store.generation``: a whole store replaced by an older copy of itself (a valid MAC, a lower generation)
is refused too, as long as ``store.generation`` was not replaced with it.

Stores written before the MAC (``vintage-secrets/1``) are read as they are and sealed on their next write.
A sealed store's key check uses other associated data, so stripping the MAC to pass it off as an old store
does not work. Symbolic links in place of the directory or its files are refused, never followed.

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
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from vintage.errors import ConfigError, SecretError
from vintage.fsutil import write_private
from vintage.secrets.base import ScopeInfo, SecretInfo, no_key, no_scope
from vintage.secrets.names import Scope

if TYPE_CHECKING:
    from vintage.config.models import SecretsSpec

FORMAT = "vintage-secrets/2"
LEGACY_FORMAT = "vintage-secrets/1"  # no MAC, no generation: read as is, sealed on the next write
MASTER_KEY_ENV = "VINTAGE_MASTER_KEY"
_CHECK_AAD = {LEGACY_FORMAT: b"vintage-secrets/key-check", FORMAT: b"vintage-secrets/2/key-check"}
_CHECK_PLAIN = b"vintage secret store key check"
_MAC_INFO = b"vintage-secrets/2 store mac"


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


def _canonical(data: dict[str, Any]) -> bytes:
    """What the MAC covers: every field but the MAC, in one fixed serialisation."""
    body = {k: v for k, v in data.items() if k != "mac"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


@dataclass(frozen=True)
class _Keys:
    """What one master key opens: the values (AES-GCM) and the store's MAC (HMAC key derived by HKDF)."""

    aead: Any
    mac_key: bytes

    @classmethod
    def of(cls, key: bytes) -> _Keys:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        mac_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_MAC_INFO).derive(key)
        return cls(AESGCM(key), mac_key)

    def mac(self, data: dict[str, Any]) -> str:
        from cryptography.hazmat.primitives import hashes, hmac

        h = hmac.HMAC(self.mac_key, hashes.SHA256())
        h.update(_canonical(data))
        return _b64(h.finalize())

    def mac_matches(self, data: dict[str, Any]) -> bool:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes, hmac

        try:
            tag = _unb64(data["mac"])
        except (KeyError, TypeError, ValueError, AttributeError, binascii.Error):
            return False
        h = hmac.HMAC(self.mac_key, hashes.SHA256())
        h.update(_canonical(data))
        try:
            h.verify(tag)
        except InvalidSignature:
            return False
        return True


class LocalStore:
    """The encrypted store of one state directory. Thread- and process-safe (file lock on writes)."""

    name = "local"
    writable = True

    @classmethod
    def from_spec(cls, spec: SecretsSpec | None, state_dir: Path) -> Self:
        """The store of ``state_dir`` (``secrets/`` in it)."""
        return cls(state_dir)

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.dir = state_dir / "secrets"
        self.path = self.dir / "store.json"
        self.generation_file = self.dir / "store.generation"
        self.key_file = self.dir / "master.key"
        self.next_key_file = self.dir / "master.key.next"
        self._lock_path = state_dir / "locks" / "secrets.lock"

    # ------------------------------------------------------------------------------------ the files

    def _check_dir(self) -> None:
        """Refuse a secrets directory that is a symbolic link (or not a directory)."""
        try:
            mode = os.lstat(self.dir).st_mode
        except FileNotFoundError:
            return
        if stat.S_ISLNK(mode):
            raise SecretError(
                "the secrets directory (secrets/ in the state directory) is a symbolic link; vintage does "
                "not follow links to its secret store",
                hint="move the real directory into the state directory in place of the link",
            )
        if not stat.S_ISDIR(mode):
            raise SecretError("secrets/ in the state directory is not a directory")

    def _read_private(self, path: Path) -> tuple[bytes, int] | None:
        """The bytes and mode of one file of the secrets directory, never through a symbolic link."""
        self._check_dir()
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            return None
        except OSError as exc:
            if path.is_symlink():
                raise SecretError(
                    f"secrets/{path.name} is a symbolic link; vintage does not follow links to its secret "
                    "store or key",
                    hint="put the file itself in place of the link, in the secrets directory",
                ) from None
            raise SecretError(f"cannot read secrets/{path.name} ({exc.__class__.__name__})") from exc
        with os.fdopen(fd, "rb") as fh:
            mode = os.fstat(fh.fileno()).st_mode
            if not stat.S_ISREG(mode):
                raise SecretError(f"secrets/{path.name} is not a regular file")
            try:
                return fh.read(), mode
            except OSError as exc:
                raise SecretError(f"cannot read secrets/{path.name} ({exc.__class__.__name__})") from exc

    def _prepare_dir(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._check_dir()
        self.dir.chmod(0o700)

    # ----------------------------------------------------------------------------------------- keys

    def _env_key(self) -> bytes | None:
        text = os.environ.get(MASTER_KEY_ENV)
        return _decode_key(text, MASTER_KEY_ENV) if text else None

    def _file_key(self, path: Path) -> bytes | None:
        found = self._read_private(path)
        if found is None:
            return None
        raw, mode = found
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError as exc:
            raise SecretError(f"cannot read the master key file secrets/{path.name} (not ASCII)") from exc
        if os.name == "posix" and mode & 0o077:
            raise SecretError(
                f"the master key file secrets/{path.name} is readable by other users",
                hint=f"chmod 600 {path}",
            )
        return _decode_key(text, f"secrets/{path.name}")

    def key_source(self) -> str:
        """Where the master key comes from: the environment variable or the key file."""
        return MASTER_KEY_ENV if os.environ.get(MASTER_KEY_ENV) else "secrets/master.key"

    def _check(self, data: dict[str, Any], keys: _Keys) -> bool:
        """True when ``keys`` open the store. A sealed store passed off as an old one is refused."""
        if self._check_with(data, keys, data["format"]):
            return True
        if data["format"] == LEGACY_FORMAT and self._check_with(data, keys, FORMAT):
            raise self._modified("its seal was removed")
        return False

    def _check_with(self, data: dict[str, Any], keys: _Keys, fmt: str) -> bool:
        from cryptography.exceptions import InvalidTag

        check = data.get("key_check") or {}
        try:
            plain = keys.aead.decrypt(_unb64(check["nonce"]), _unb64(check["ciphertext"]), _CHECK_AAD[fmt])
        except (InvalidTag, KeyError, TypeError, ValueError, binascii.Error):
            return False
        return bool(plain == _CHECK_PLAIN)

    def _wrong_key(self) -> SecretError:
        return SecretError(
            f"the master key from {self.key_source()} does not open the secret store",
            hint=f"set {MASTER_KEY_ENV} to the key the store was created with (or restore "
            "secrets/master.key); nothing was changed",
        )

    # ---------------------------------------------------------------------------------- integrity

    def _modified(self, what: str) -> SecretError:
        return SecretError(
            f"the secret store secrets/store.json was modified outside vintage ({what}); nothing was "
            "read or written",
            hint="restore secrets/store.json from a backup of its last version; vintage never writes a "
            "store without its seal",
        )

    def _recorded_generation(self) -> int:
        found = self._read_private(self.generation_file)
        if found is None:
            return 0
        try:
            return int(found[0].decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            raise SecretError(
                "secrets/store.generation does not hold a number",
                hint="if secrets/store.json is the store you want, delete secrets/store.generation",
            ) from None

    def _verify(self, data: dict[str, Any], keys: _Keys, recorded: int) -> None:
        """Refuse a store whose MAC does not match, or that is older than the last one written.

        Raises:
            SecretError: an entry was added, removed or replaced, or an older copy was put back.
        """
        if data["format"] == FORMAT:
            if not keys.mac_matches(data):
                raise self._modified("an entry was added, removed or replaced, or the file was edited")
            generation = data.get("generation")
            if not isinstance(generation, int) or isinstance(generation, bool):
                raise self._modified("its generation is not a number")
        else:
            generation = 0
        if generation < recorded:
            raise SecretError(
                f"the secret store secrets/store.json is an older copy (generation {generation}; vintage "
                f"last wrote generation {recorded}): it was replaced with a backup or an old version",
                hint="restore the latest store; if you mean to go back to this copy, delete "
                "secrets/store.generation first (values put or deleted since then are lost)",
            )

    def _seal(self, data: dict[str, Any], keys: _Keys) -> dict[str, Any]:
        """``data`` with the next generation and its MAC (sealing an old unsealed store)."""
        sealed = {k: v for k, v in data.items() if k != "mac"}
        if sealed.get("format") != FORMAT:
            sealed["format"] = FORMAT
            sealed["key_check"] = self._seal_check(keys)
        sealed["generation"] = int(data.get("generation", 0)) + 1
        sealed["mac"] = keys.mac(sealed)
        return sealed

    # ----------------------------------------------------------------------------------------- file

    def _read(self) -> dict[str, Any] | None:
        found = self._read_private(self.path)
        if found is None:
            return None
        try:
            data = json.loads(found[0].decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SecretError(
                "the secret store file is not valid JSON (not written by vintage, or edited by hand)",
                hint="restore secrets/store.json from a backup; vintage never leaves a partly written store",
            ) from exc
        if not isinstance(data, dict) or data.get("format") not in (FORMAT, LEGACY_FORMAT):
            raise SecretError(f"the secret store has an unknown format (expected {FORMAT})")
        if not isinstance(data.get("scopes"), dict):
            raise self._modified("it has no scopes")
        return data

    def _open(self, *, create: bool, locked: bool = True) -> tuple[dict[str, Any], _Keys | None]:
        """The store's data and the keys that open it; creates an empty store (and key) when ``create``.

        The MAC and the generation are checked before anything is returned. ``locked``: the caller holds
        the store lock. Only then is an interrupted rotation finished or undone; without the lock, a
        ``master.key.next`` may belong to a rotation still under way.
        """
        recorded = self._recorded_generation()  # before the store: a writer records after writing
        data = self._read()
        env_key = self._env_key()
        if data is None:
            if recorded:
                raise SecretError(
                    f"the secret store secrets/store.json is missing, but vintage wrote generation "
                    f"{recorded} of it",
                    hint="restore it from a backup; to start a new empty store, delete "
                    "secrets/store.generation as well",
                )
            if not create:
                return {"format": FORMAT, "scopes": {}}, None
            key = env_key or self._file_key(self.key_file)
            if key is None:
                self._prepare_dir()
                text = new_master_key()
                write_private(self.key_file, text.encode())
                key = _decode_key(text, "secrets/master.key")
            keys = _Keys.of(key)
            return {
                "format": FORMAT,
                "generation": 0,
                "key_check": self._seal_check(keys),
                "scopes": {},
            }, keys
        if env_key is not None:
            keys = _Keys.of(env_key)
            if not self._check(data, keys):
                raise self._wrong_key()
            self._verify(data, keys, recorded)
            return data, keys
        if not locked and os.path.lexists(self.next_key_file):
            # A rotation is under way or was interrupted: wait for it, or finish / undo it, under the lock.
            with self._lock():
                return self._open(create=create, locked=True)
        key = self._file_key(self.key_file)
        if key is not None and self._check(data, keys := _Keys.of(key)):
            self._verify(data, keys, recorded)
            with contextlib.suppress(OSError):
                self.next_key_file.unlink()  # an interrupted rotation that never reached the store
            return data, keys
        nxt = self._file_key(self.next_key_file)
        if nxt is not None and self._check(data, keys := _Keys.of(nxt)):
            # A rotation wrote the store under the new key but was stopped before renaming the key file.
            self._verify(data, keys, recorded)
            self.next_key_file.replace(self.key_file)
            return data, keys
        if key is None:
            raise SecretError(
                "the secret store exists but its master key is missing",
                hint=f"set {MASTER_KEY_ENV} or restore secrets/master.key; the store was left untouched",
            )
        raise self._wrong_key()

    def _seal_check(self, keys: _Keys) -> dict[str, str]:
        nonce = os.urandom(12)
        return {
            "nonce": _b64(nonce),
            "ciphertext": _b64(keys.aead.encrypt(nonce, _CHECK_PLAIN, _CHECK_AAD[FORMAT])),
        }

    def _write(self, data: dict[str, Any]) -> None:
        """Write a sealed store, then record its generation (a crash in between leaves a newer store)."""
        self._prepare_dir()
        # Called under the lock: a temp file left now is from a writer killed mid-write.
        for name in (self.path.name, self.generation_file.name):
            for stale in self.dir.glob(f".{name}.*.tmp"):
                with contextlib.suppress(OSError):
                    stale.unlink()
        write_private(self.path, json.dumps(data, indent=1, sort_keys=True).encode())
        write_private(self.generation_file, f"{data['generation']}\n".encode())

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        from filelock import FileLock

        self._lock_path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self._lock_path), timeout=60):
            yield

    @contextlib.contextmanager
    def _locked(self) -> Iterator[tuple[dict[str, Any], _Keys]]:
        with self._lock():
            data, keys = self._open(create=True)
            assert keys is not None
            yield data, keys

    def _commit(self, data: dict[str, Any], keys: _Keys) -> None:
        self._write(self._seal(data, keys))

    def _listing(self) -> dict[str, Any]:
        """The store for listing names: verified when a master key is at hand (names need none)."""
        if self._env_key() is None and not any(
            os.path.lexists(p) for p in (self.key_file, self.next_key_file)
        ):
            return self._read() or {"scopes": {}}
        return self._open(create=False, locked=False)[0]

    # ----------------------------------------------------------------------------------- provider

    def list_scopes(self) -> list[ScopeInfo]:
        data = self._listing()
        return [
            ScopeInfo(name, Scope(name).environment, len(body.get("keys", {})), self.name)
            for name, body in sorted(data["scopes"].items())
        ]

    def create_scope(self, scope: Scope) -> None:
        with self._locked() as (data, keys):
            if scope.name in data["scopes"]:
                raise SecretError(f"scope {scope} already exists")
            now = _now()
            data["scopes"][scope.name] = {"created": now, "updated": now, "keys": {}}
            self._commit(data, keys)

    def delete_scope(self, scope: Scope) -> None:
        with self._locked() as (data, keys):
            if data["scopes"].pop(scope.name, None) is None:
                raise no_scope(scope, self.name)
            self._commit(data, keys)

    def list_keys(self, scope: Scope) -> list[SecretInfo]:
        body = self._listing()["scopes"].get(scope.name)
        if body is None:
            raise no_scope(scope, self.name)
        return [SecretInfo(k, v.get("created"), v.get("updated")) for k, v in sorted(body["keys"].items())]

    def has_scope(self, scope: Scope) -> bool:
        """True when the scope exists."""
        return scope.name in self._listing()["scopes"]

    def get(self, scope: Scope, key: str) -> str | None:
        from cryptography.exceptions import InvalidTag

        data, keys = self._open(create=False, locked=False)
        entry = data["scopes"].get(scope.name, {}).get("keys", {}).get(key)
        if entry is None or keys is None:
            return None
        try:
            plain = keys.aead.decrypt(
                _unb64(entry["nonce"]), _unb64(entry["ciphertext"]), _aad(scope.name, key)
            )
        except (InvalidTag, KeyError, ValueError, binascii.Error) as exc:
            raise SecretError(
                f"secret {scope}/{key} cannot be decrypted: the store entry was altered",
                hint=f"put the value again with `vintage secrets put --scope {scope} --key {key}`",
            ) from exc
        return bytes(plain).decode()

    def put(self, scope: Scope, key: str, value: str) -> None:
        with self._locked() as (data, keys):
            body = data["scopes"].get(scope.name)
            if body is None:
                raise no_scope(scope, self.name)
            now = _now()
            old = body["keys"].get(key, {})
            nonce = os.urandom(12)
            body["keys"][key] = {
                "nonce": _b64(nonce),
                "ciphertext": _b64(keys.aead.encrypt(nonce, value.encode(), _aad(scope.name, key))),
                "created": old.get("created", now),
                "updated": now,
            }
            body["updated"] = now
            self._commit(data, keys)

    def delete(self, scope: Scope, key: str) -> None:
        with self._locked() as (data, keys):
            body = data["scopes"].get(scope.name)
            if body is None:
                raise no_scope(scope, self.name)
            if body["keys"].pop(key, None) is None:
                raise no_key(scope, key, self.name)
            body["updated"] = _now()
            self._commit(data, keys)

    # ------------------------------------------------------------------------------------ rotation

    def rotate_key(self, new_key_file: Path | None = None) -> int:
        """Re-encrypt every value under a new master key and seal the store with it; returns the number
        of values.

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
        if new_key_file is not None and os.path.lexists(new_key_file):
            raise ConfigError(f"{new_key_file.name} already exists; give a path that does not exist")
        with self._locked() as (data, keys):
            text = new_master_key()
            new_keys = _Keys.of(_decode_key(text, "new key"))
            count = 0
            from cryptography.exceptions import InvalidTag

            rotated: dict[str, Any] = {
                "format": FORMAT,
                "generation": data.get("generation", 0),
                "key_check": self._seal_check(new_keys),
                "scopes": {},
            }
            for name, body in data["scopes"].items():
                new_entries = {}
                for key, entry in body["keys"].items():
                    aad = _aad(name, key)
                    try:
                        plain = keys.aead.decrypt(_unb64(entry["nonce"]), _unb64(entry["ciphertext"]), aad)
                    except (InvalidTag, KeyError, ValueError, binascii.Error) as exc:
                        raise SecretError(
                            f"secret {name}/{key} cannot be decrypted; rotation stopped, nothing changed"
                        ) from exc
                    nonce = os.urandom(12)
                    new_entries[key] = {
                        **entry,
                        "nonce": _b64(nonce),
                        "ciphertext": _b64(new_keys.aead.encrypt(nonce, plain, aad)),
                    }
                    count += 1
                rotated["scopes"][name] = {**body, "keys": new_entries}
            sealed = self._seal(rotated, new_keys)
            target = new_key_file if env_key else self.next_key_file
            assert target is not None
            self._prepare_dir()
            write_private(target, text.encode())
            self._write(sealed)
            if not env_key:
                self.next_key_file.replace(self.key_file)
            return count


def generate_value(nbytes: int = 32) -> str:
    """A random url-safe secret (e.g. an API key), ``nbytes`` of entropy."""
    return pysecrets.token_urlsafe(nbytes)
