"""The local deploy target: one detached ``python -m vintage.serving`` process per environment.

State of an environment lives under ``<state_dir>/envs/<environment>/``:

``server.pid``
    the server's process id (the leader of its own session, so it outlives the deploying process);
``server.log``
    the server's output, appended to across restarts (each start writes a marker line first);
``deployments.json``
    every deployment, oldest first (written atomically: temp file + rename);
``admin.sock``
    the server's admin channel (mode 0600, in this 0700 directory: only the deploying OS user reaches it).
``inference/``
    the inference log (``environments.<env>.inference_log``): rotated Parquet files of sampled scored rows,
    mode 0600 in a 0700 directory (see :mod:`vintage.serving.inference_log`).

A deploy asks the server over the admin channel which model digest it serves. The same digest: nothing to
do (``unchanged``). Another one (a newer version, or a server someone tampered with): hot swap over the
admin channel (the old model serves until the new one is verified against its digest, loaded, validated
and warm, so no request fails). No server, or one whose admin channel does not answer: start one (a
process that does not answer is stopped first). Callers hold the environment's lock around
:meth:`LocalTarget.deploy`; this module only makes its file writes atomic.

Only ``/health`` and ``/ready`` are probed over HTTP (they need no key), on 127.0.0.1 when the server
listens on a loopback or wildcard address.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from vintage.config.environments import TargetSettings
from vintage.deploy import process
from vintage.deploy.base import Deployment, DeployOutcome
from vintage.deploy.records import EnvironmentRecords, as_int, verified
from vintage.errors import DeployError, VintageError
from vintage.fsutil import shown_path, write_private
from vintage.model import digest as model_digest
from vintage.redact import redact
from vintage.serving import admin, inference_log
from vintage.serving.client import NotReadyError, ServerClient
from vintage.serving.launch import ServerCommand, start

if TYPE_CHECKING:
    from vintage.config import Spec

READY_TIMEOUT_S = 60.0
DRAIN_TIMEOUT_S = 30.0
UNRESPONSIVE_GRACE_S = 5.0
SWAP_TIMEOUT_S = 300.0
LOG_TAIL_LINES = 20
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "0.0.0.0", "", "::", "::1"})


class LocalTarget(EnvironmentRecords):
    """Runs an environment's scoring server as a local process on ``host:port``.

    Args:
        environment: The environment served (``staging``, ``production``).
        state_dir: The project's state directory (environment state, audit trail, local secret store).
        host: The address the server binds.
        port: The port the server listens on.
        workers: Server worker processes.
        key_scope: Secret scope holding the API keys (``primary``, ``secondary``); ``None`` = no keys.
        secrets: The ``secrets`` settings of vintage.yaml (providers), as a plain mapping.
        public_metadata: Serve ``/version``, ``/metrics``, ``/openapi.json`` without the API key.
        model_store: Where materialised models live (default ``<state_dir>/models``); the server swaps
            in nothing from elsewhere.
        inference_log: The server's inference log settings (``InferenceLogSpec.server_settings``);
            ``None``: the server records nothing.
    """

    TYPE = "local"
    Settings = TargetSettings  # no settings beyond the common environment keys

    def __init__(
        self,
        environment: str,
        state_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int,
        workers: int = 1,
        key_scope: str | None = None,
        secrets: dict[str, Any] | None = None,
        public_metadata: bool = False,
        model_store: Path | None = None,
        inference_log: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(environment, state_dir)
        self.inference_log = inference_log
        self.host = host
        self.port = port
        self.workers = max(1, workers)
        self.key_scope = key_scope
        self.secrets: dict[str, Any] = dict(secrets or {})
        self.public_metadata = public_metadata
        self.pid_file = self.dir / "server.pid"
        self.log_file = self.dir / "server.log"
        self.admin_socket = self.dir / admin.SOCKET_NAME
        self.model_store = Path(model_store).resolve() if model_store else self.state_dir / "models"
        self.url = f"http://{host}:{port}"
        self._probe_host = "127.0.0.1" if host in _LOOPBACK else host
        url_host = f"[{self._probe_host}]" if ":" in self._probe_host else self._probe_host  # IPv6
        self.client = ServerClient(f"http://{url_host}:{port}", admin_socket=self.admin_socket)

    @classmethod
    def from_spec(cls, spec: Spec, environment: str) -> Self:
        """The target of ``environments.<environment>`` in vintage.yaml (``target: local``)."""
        env = spec.environments[environment]
        return cls(
            environment,
            spec.state_dir.resolve(),
            host=env.host,
            port=env.port,
            workers=env.workers,
            key_scope=spec.key_scope(environment),
            secrets=spec.secrets.model_dump(mode="json"),
            public_metadata=env.public_metadata,
            inference_log=env.inference_log.server_settings(
                inference_log.log_dir(spec.state_dir.resolve(), environment)
            ),
        )

    # -- the DeployTarget protocol ----------------------------------------------------------------------

    def deploy(self, model_dir: Path, model_name: str, version: int) -> DeployOutcome:
        """Serve ``model_dir``: hot-swap a live server, else start one; returns once the model answers.

        Raises:
            DeployError: the server did not start, the port is taken, or the server rejected the model (the
                old model then keeps serving).
        """
        model_dir = Path(model_dir).resolve()
        detail = f"{model_name} v{version}"
        try:
            digest = verified(model_dir)
            current, previous, action = self._deploy(model_dir, model_name, version, digest)
        except VintageError as exc:
            self._audit("deploy", "failed", f"{detail}: {exc.headline}")
            raise
        self._audit("deploy", "ok", f"{detail} ({model_digest.short(digest)}) {action}")
        return DeployOutcome(current=current, previous=previous, action=action, history=self.history())

    def restore(self, previous: Deployment | None) -> Deployment | None:
        """Serve ``previous`` again (hot swap back, or start it if the server is gone); ``None`` stops.

        Raises:
            DeployError: the server could not be started or swapped back.
        """
        if previous is None:
            stopped = self._stop()
            self._audit("rollback", "ok", "stopped" if stopped else "nothing was running")
            return None
        detail = f"{previous.model_name} v{previous.version}"
        try:
            model_dir = Path(previous.model_dir)
            digest = verified(model_dir, previous.digest)
            current, _, action = self._deploy(model_dir, previous.model_name, previous.version, digest)
        except VintageError as exc:
            self._audit("rollback", "failed", f"{detail}: {exc.headline}")
            raise
        self._audit("rollback", "ok", f"{detail} {action}")
        return current

    def status(self) -> Deployment | None:
        """What serves now: ``healthy`` from a live ``/ready`` probe, ``served_digest`` from the server's
        admin channel (``None`` when it does not answer); ``None`` when nothing runs."""
        pid = self._read_pid()
        if pid is None or not self._is_our_server(pid):  # (a stale pid file stays: see crashed())
            return None
        healthy = self.client.ready()
        served = self._served()
        served_digest = served.get("digest") if served else None
        history = self.history()
        if history:
            return dataclasses.replace(history[-1], pid=pid, healthy=healthy, served_digest=served_digest)
        served = served or {}  # a server runs but was never recorded: report what it says it serves
        return Deployment(
            environment=self.environment,
            model_name=str(served.get("name") or ""),
            version=as_int(served.get("version")),
            model_dir="",
            url=self.url,
            pid=pid,
            since=str(served.get("served_since") or ""),
            healthy=healthy,
            served_digest=served_digest,
        )

    def crashed(self) -> str | None:
        """The pid file outlives its server only when the server ended without ``stop``: killed, crashed,
        or the machine restarted."""
        pid = self._read_pid()
        if pid is None or self._is_our_server(pid):
            return None
        return f"its server (pid {pid}) is gone but was never stopped; its log: {shown_path(self.log_file)}"

    def stop(self) -> bool:
        """SIGTERM the server, wait up to 30 s for its drain, then SIGKILL; ``False`` when nothing ran."""
        stopped = self._stop()
        if stopped:
            self._audit("stop", "ok", f"port {self.port}")
        return stopped

    # -- deploy ------------------------------------------------------------------------------------------

    def _deploy(
        self, model_dir: Path, model_name: str, version: int, digest: str
    ) -> tuple[Deployment, Deployment | None, str]:
        history = self.history()
        pid = self._live_pid()
        served = self._served() if pid is not None else None
        if pid is not None and served is None:
            # alive, but its admin channel does not answer (a server from before the admin channel, or a
            # broken one): it cannot be swapped safely, so it is replaced
            self._terminate(pid, DRAIN_TIMEOUT_S)
            self._forget_pid(pid)
            pid = None
        if pid is not None and served is not None:
            previous = dataclasses.replace(history[-1], pid=pid) if history else None
            if previous is not None and served.get("digest") == digest and previous.digest == digest:
                return previous, previous, "unchanged"
            self._swap(model_dir, model_name, version, digest)
            action = "swapped"
        else:
            previous = None
            pid = self._start(model_dir, model_name, version, digest)
            action = "started"
        current = Deployment(
            environment=self.environment,
            model_name=model_name,
            version=version,
            model_dir=str(model_dir),
            url=self.url,
            pid=pid,
            since=datetime.now(UTC).isoformat(timespec="seconds"),
            healthy=True,
            digest=digest,
            served_digest=digest,
        )
        self.write_history([*history, current])
        return current, previous, action

    def _swap(self, model_dir: Path, model_name: str, version: int, digest: str) -> None:
        what = f"{model_name} v{version}"
        try:
            self.client.swap(model_dir, digest)
        except admin.AdminUnavailableError as exc:
            raise DeployError(
                f"the server for {self.environment} did not answer the swap to {what}: {exc.headline}",
                hint=f"see {self.log_file}",
            ) from exc
        except VintageError as exc:
            raise DeployError(
                f"the server for {self.environment} rejected {what}: {exc.headline}; "
                "the model it served before keeps serving",
                hint="the model must take the same columns; see the server log",
            ) from exc
        self._confirm(model_name, version, digest)

    def _confirm(self, model_name: str, version: int, digest: str) -> None:
        """The server (every worker) reports ``digest`` over the admin channel."""
        deadline = time.monotonic() + 15.0
        served: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            served = self._served()
            if served is not None and served.get("digest") == digest:
                return
            time.sleep(0.05)
        seen = (
            f"{served.get('name')} v{served.get('version')} ({model_digest.short(served.get('digest'))})"
            if served
            else "nothing"
        )
        raise DeployError(
            f"the server for {self.environment} should serve {model_name} v{version} "
            f"({model_digest.short(digest)}) but reports {seen}",
            hint=f"see {self.log_file}",
        )

    def _start(self, model_dir: Path, model_name: str, version: int, digest: str) -> int:
        if not self._port_free():
            raise self._port_taken()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)  # the admin socket inside is reachable by the deploying user only
        command = ServerCommand(
            model_dir,
            host=self.host,
            port=self.port,
            workers=self.workers,
            model_digest=digest,
            admin_socket=self.admin_socket,
            model_store=self.model_store,
            environment=self.environment,
            state_dir=self.state_dir,
            api_key_scope=self.key_scope,
            secrets=self.secrets,
            public_metadata=self.public_metadata,
            inference_log=self.inference_log,
        )
        fd = os.open(self.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as log:
            offset = log.seek(0, os.SEEK_END)
            stamp = datetime.now(UTC).isoformat(timespec="seconds")
            log.write(
                f"--- {stamp} deploy {self.environment}: starting {model_name} v{version} ({model_dir}) "
                f"on {self.host}:{self.port}\n".encode()
            )
            log.flush()
            # its own session: survives the deploying process and its terminal
            proc = start(command, stdout=log, cwd=self.dir, new_session=True)
        process.adopt(proc)
        self._write_text(self.pid_file, f"{proc.pid}\n")
        failure = self._wait_ready(proc)
        if failure is None:
            try:
                self._confirm(model_name, version, digest)
            except DeployError as exc:
                failure = exc.headline
        if failure is not None:
            if proc.poll() is None:
                self._terminate(proc.pid, UNRESPONSIVE_GRACE_S)
            self._forget_pid(proc.pid)
            tail = self._log_tail(offset)
            if any("address already in use" in line.lower() for line in tail):
                raise self._port_taken(tail)
            raise DeployError(
                f"the server for {self.environment} did not start: {failure}",
                hint=f"the last lines of its log are below; the whole log is {self.log_file}",
                details=tail,
            )
        return proc.pid

    def _wait_ready(self, proc: subprocess.Popen[bytes]) -> str | None:
        """``None`` once ``/ready`` answers 200, else why not."""
        try:
            self.client.wait_ready(READY_TIMEOUT_S, exited=proc.poll)
        except NotReadyError as exc:
            return exc.reason
        return None

    def _port_taken(self, tail: list[str] | None = None) -> DeployError:
        return DeployError(
            f"port {self.port} on {self.host} is already in use by another process, "
            f"so the server for {self.environment} cannot start",
            hint=f"stop whatever listens on port {self.port}, or give {self.environment} another port",
            details=tail,
        )

    def _port_free(self) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: TIME_WAIT is no conflict
            try:
                sock.bind((self._probe_host, self.port))
            except OSError:
                return False
        return True

    def _log_tail(self, offset: int) -> list[str]:
        try:
            with self.log_file.open("rb") as fh:
                fh.seek(offset)
                text = fh.read().decode("utf-8", errors="replace")
        except OSError:
            return []
        lines = [line for line in text.splitlines() if line.strip() and not line.startswith("--- ")]
        return [redact(line)[:500] for line in lines[-LOG_TAIL_LINES:]]

    # -- the process ---------------------------------------------------------------------------------------

    def _read_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text(encoding="utf-8").strip())
        except (OSError, ValueError):
            return None
        return pid if pid > 0 else None

    def _running_pid(self) -> int | None:
        """The recorded pid when that process is alive and is a scoring server; a stale pid file goes."""
        pid = self._read_pid()
        if pid is None:
            return None
        if self._is_our_server(pid):
            return pid
        self._forget_pid(pid)
        return None

    @staticmethod
    def _is_our_server(pid: int) -> bool:
        return process.alive(pid) and process.is_server(pid)

    def _live_pid(self) -> int | None:
        """The server's pid when it runs and answers ``/health``; a process that does not answer is killed."""
        pid = self._running_pid()
        if pid is None:
            return None
        if self.client.health():
            return pid
        self._terminate(pid, UNRESPONSIVE_GRACE_S)
        self._forget_pid(pid)
        return None

    def _stop(self) -> bool:
        pid = self._running_pid()
        if pid is None:
            return False
        self._terminate(pid, DRAIN_TIMEOUT_S)
        self._forget_pid(pid)
        return True

    def _terminate(self, pid: int, grace_s: float) -> None:
        """SIGTERM the server (it drains, and stops its workers), then SIGKILL its process group."""
        process.terminate(pid, grace_s)

    def _forget_pid(self, pid: int) -> None:
        if self._read_pid() == pid:
            with contextlib.suppress(FileNotFoundError):
                self.pid_file.unlink()

    def _served(self) -> dict[str, Any] | None:
        """What the server says it serves over its admin channel, or ``None`` when that does not answer."""
        return self.client.served()

    # -- files -----------------------------------------------------------------------------------------------

    def _write_text(self, path: Path, text: str) -> None:
        """Write atomically (temp file + fsync + rename), mode 0600."""
        path.parent.mkdir(parents=True, exist_ok=True)
        write_private(path, text.encode())
