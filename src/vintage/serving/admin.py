"""The admin channel of a scoring server: a Unix socket that only the deploying OS user can reach.

Scoring clients reach the TCP port: ``/invocations`` and the probes, nothing else. Everything that changes
what the server runs (a model swap, a key reload) or asks what it runs for a deploy decision travels here:

* the socket lives in the environment's state directory and is created mode 0600 (the directory is
  0700), and every connection's peer is checked with ``SO_PEERCRED``: only the server's own OS user is
  answered, whatever the file mode says;
* one JSON request per connection, one JSON answer (``{"ok": true, ...}`` or
  ``{"ok": false, "error": "..."}``);
* a swap names a directory inside the server's model store and the content digest it must have; a path
  outside the store is refused without saying whether it exists, and the directory's files are checked
  against the digest recorded at materialisation before anything is unpickled;
* every swap and key reload, done or refused, is logged at INFO and appended to the audit trail: who
  (the peer's uid and pid, and the actor the client names), the channel, old and new version and digest.

Unix socket paths are limited to 107 bytes; a longer one is reached through ``/proc/self/fd`` of its
directory (Linux).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import socketserver
import stat
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from vintage.errors import ServingError, VintageError
from vintage.model.digest import short
from vintage.redact import redact

log = logging.getLogger(__name__)

SOCKET_NAME: Final = "admin.sock"
MAX_REQUEST_BYTES: Final = 64 * 1024
CLIENT_TIMEOUT_S: Final = 300.0  # a swap loads, validates and warms a model
_MAX_SUN_PATH = 100
OPS: Final = ("status", "swap", "reload-keys")


class Controller(Protocol):
    """What the admin channel drives: one server process, or the supervisor of several workers."""

    def status(self) -> dict[str, Any]:
        """What is served now (``name``, ``version``, ``digest``, ...)."""
        ...

    def swap(self, path: Path, digest: str) -> dict[str, Any]:
        """Verify, load, validate and warm ``path``, then serve it; returns the new status."""
        ...

    def reload_keys(self) -> int:
        """Re-read the API keys; returns how many are accepted now."""
        ...


@dataclass(frozen=True)
class Peer:
    """Who is on the other end of an admin connection."""

    pid: int
    uid: int
    actor: str

    def describe(self) -> str:
        """For logs and the audit trail."""
        return f"{self.actor} (uid {self.uid}, pid {self.pid}) over the admin socket"


class Auditor(Protocol):
    """Appends admin events to the audit trail."""

    def __call__(self, action: str, outcome: str, detail: str, actor: str) -> None: ...


# --- server ----------------------------------------------------------------------------------------------


class AdminServer:
    """Serves the admin channel on a thread until :meth:`close`.

    Args:
        path: The socket file (created mode 0600; a stale one from a dead server is replaced).
        controller: What the requests drive.
        model_store: Directory that swapped-in models must lie in (``None``: swaps are refused).
        audit: Called for every swap and key reload.
    """

    def __init__(self, path: Path, controller: Controller, model_store: Path | None, audit: Auditor) -> None:
        self.path = path
        self.controller = controller
        self.model_store = Path(os.path.realpath(model_store)) if model_store else None
        self.audit = audit
        self._lock = threading.Lock()  # one admin operation at a time
        self._server = _bind(path, self)
        self._thread = threading.Thread(target=self._server.serve_forever, name="vintage-admin", daemon=True)

    def start(self) -> None:
        """Start answering (on a daemon thread)."""
        self._thread.start()
        log.info("admin channel on %s", self.path.name)

    def close(self) -> None:
        """Stop answering and remove the socket file."""
        self._server.shutdown()
        self._server.server_close()
        with contextlib.suppress(FileNotFoundError):
            if _is_socket(self.path):
                self.path.unlink()

    # called from the handler thread
    def handle(self, request: dict[str, Any], peer: Peer) -> dict[str, Any]:
        """Answer one request (never raises)."""
        op = request.get("op")
        if op not in OPS:
            return {"ok": False, "error": f"unknown operation; expected one of {', '.join(OPS)}"}
        with self._lock:
            if op == "status":
                return {"ok": True, **self.controller.status()}
            if op == "reload-keys":
                return self._reload_keys(peer)
            return self._swap(request, peer)

    def _reload_keys(self, peer: Peer) -> dict[str, Any]:
        try:
            n = self.controller.reload_keys()
        except VintageError as exc:
            log.error("API keys not reloaded (requested by %s): %s", peer.describe(), exc.headline)
            self.audit("serve.reload_keys", "failed", f"{peer.describe()}: {exc.headline}", peer.actor)
            return {"ok": False, "error": exc.headline}
        log.info("API keys reloaded (%d), requested by %s", n, peer.describe())
        self.audit("serve.reload_keys", "ok", f"{peer.describe()}: {n} key(s)", peer.actor)
        return {"ok": True, "keys": n}

    def _swap(self, request: dict[str, Any], peer: Peer) -> dict[str, Any]:
        before = self.controller.status()
        old = f"{before.get('name')} v{before.get('version')} ({short(before.get('digest'))})"
        raw_path, digest = request.get("path"), request.get("digest")
        try:
            if not isinstance(raw_path, str) or not isinstance(digest, str) or not digest:
                raise ServingError('a swap needs {"path": <model directory>, "digest": "sha256:..."}')
            path = self._in_store(raw_path)
            after = self.controller.swap(path, digest)
        except VintageError as exc:
            log.error("model swap refused (requested by %s): %s", peer.describe(), exc.headline)
            self.audit("serve.swap", "refused", f"{peer.describe()}: {old} kept; {exc.headline}", peer.actor)
            return {"ok": False, "error": exc.headline}
        new = f"{after.get('name')} v{after.get('version')} ({short(after.get('digest'))})"
        log.info("model swapped %s -> %s, requested by %s", old, new, peer.describe())
        self.audit("serve.swap", "ok", f"{peer.describe()}: {old} -> {new}", peer.actor)
        return {"ok": True, **after}

    def _in_store(self, raw: str) -> Path:
        """The real path of ``raw`` when it lies inside the model store; nothing is said about others."""
        refused = ServingError("the model directory is not in this server's model store; refusing it")
        if self.model_store is None or "\x00" in raw:
            raise refused
        real = Path(os.path.realpath(raw))
        if real == self.model_store or self.model_store not in real.parents:
            raise refused
        return real


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        self.connection.settimeout(10.0)
        pid, uid, _ = _peercred(self.connection)
        if uid != os.getuid():
            log.warning("admin connection from uid %d (pid %d) refused: not the server's user", uid, pid)
            self._answer({"ok": False, "error": "permission denied"})
            return
        try:
            line = self.rfile.readline(MAX_REQUEST_BYTES + 1)
            if len(line) > MAX_REQUEST_BYTES:
                raise ValueError("request too large")
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("not an object")
        except (OSError, ValueError):
            self._answer({"ok": False, "error": "malformed request: expected one JSON object on one line"})
            return
        actor = str(request.get("actor") or f"uid {uid}")[:100]
        self._answer(self.server.owner.handle(request, Peer(pid, uid, actor)))

    def _answer(self, answer: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):
            self.wfile.write(json.dumps(answer).encode() + b"\n")


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    owner: AdminServer


def _bind(path: Path, owner: AdminServer) -> _Server:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.exists() or path.is_symlink():
        if not _is_socket(path):
            raise ServingError(f"{path.name} exists and is not a socket; refusing to replace it")
        if _answers(path):
            raise ServingError(
                f"another server already answers on {path.name}",
                hint="stop it first (vintage stop ENVIRONMENT)",
            )
        path.unlink()
    old_umask = os.umask(0o177)  # the socket is created 0600: no window where others could connect
    try:
        with _short_path(path) as name:
            server = _Server(name, _Handler, bind_and_activate=True)
    except OSError as exc:
        raise ServingError(f"cannot create the admin socket {path.name}: {exc.strerror or exc}") from exc
    finally:
        os.umask(old_umask)
    path.chmod(0o600)
    server.owner = owner
    return server


def _is_socket(path: Path) -> bool:
    try:
        return stat.S_ISSOCK(path.lstat().st_mode)
    except OSError:
        return False


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        try:
            with _short_path(path) as name:
                sock.connect(name)
        except OSError:
            return False
    return True


def _peercred(sock: socket.socket) -> tuple[int, int, int]:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


@contextlib.contextmanager
def _short_path(path: Path) -> Iterator[str]:
    """A name for ``path`` that fits a Unix socket address."""
    text = str(path)
    if len(text.encode()) <= _MAX_SUN_PATH:
        yield text
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


# --- client ----------------------------------------------------------------------------------------------


class AdminUnavailableError(ServingError):
    """Nothing answers on the admin socket (no server, or one that predates the admin channel)."""


def request(socket_path: Path, op: str, timeout: float = CLIENT_TIMEOUT_S, **fields: Any) -> dict[str, Any]:
    """Send one admin request over ``socket_path`` and return the answer.

    Raises:
        AdminUnavailableError: nothing answers on ``socket_path``.
        ServingError: the server answered with an error (its message is the headline).
    """
    from vintage.audit import current_actor

    body = json.dumps({"op": op, "actor": current_actor(), **fields}).encode() + b"\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            with _short_path(socket_path) as name:
                sock.connect(name)
        except OSError as exc:
            msg = f"no scoring server answers on its admin socket ({exc.strerror})"
            raise AdminUnavailableError(msg) from exc
        try:
            sock.sendall(body)
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError as exc:
            raise ServingError(f"the admin channel broke off ({exc.__class__.__name__})") from exc
    try:
        answer = json.loads(data)
    except ValueError as exc:
        raise ServingError("the admin channel answered something that is not JSON") from exc
    if not isinstance(answer, dict) or not answer.get("ok"):
        message = answer.get("error") if isinstance(answer, dict) else None
        raise ServingError(redact(str(message or "the admin request failed")))
    return answer
