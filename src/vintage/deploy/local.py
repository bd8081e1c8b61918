"""The local deploy target: one detached ``python -m vintage.serving`` process per environment.

State of an environment lives under ``<state_dir>/envs/<environment>/``:

``server.pid``
    the server's process id (the leader of its own session, so it outlives the deploying process);
``server.log``
    the server's output, appended to across restarts (each start writes a marker line first);
``deployments.json``
    every deployment, oldest first (written atomically: temp file + rename).

A deploy hot-swaps the model of a live server (``POST /admin/model``: the old model serves until the new one
is loaded, validated and warm, so no request fails) or starts a server when none answers. Callers hold the
environment's lock around :meth:`LocalTarget.deploy`; this module only makes its file writes atomic.

Only the standard library talks HTTP here, always to the server's own port, on 127.0.0.1 when the server
listens on a loopback or wildcard address.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vintage import audit
from vintage.deploy.base import Deployment, DeployOutcome
from vintage.errors import DeployError, VintageError
from vintage.fsutil import write_private
from vintage.redact import redact

READY_TIMEOUT_S = 60.0
POLL_S = 0.02
DRAIN_TIMEOUT_S = 30.0
UNRESPONSIVE_GRACE_S = 5.0
PROBE_TIMEOUT_S = 2.0
SWAP_TIMEOUT_S = 300.0
LOG_TAIL_LINES = 20
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "0.0.0.0", "", "::", "::1"})
_FIELDS = frozenset(f.name for f in dataclasses.fields(Deployment))

# Servers started by this process, by pid: polling them reaps them, so a stopped child never lingers as a
# zombie that still looks alive to ``kill(pid, 0)``.
_children: dict[int, subprocess.Popen[bytes]] = {}


class LocalTarget:
    """Runs an environment's scoring server as a local process on ``host:port``.

    Args:
        environment: The environment served (``staging``, ``production``).
        state_dir: The project's state directory (environment state, audit trail, local secret store).
        host: The address the server binds.
        port: The port the server listens on.
        workers: Server worker processes.
        key_scope: Secret scope holding the API keys (``primary``, ``secondary``); ``None`` = no keys.
        secrets: The ``secrets`` settings of vintage.yaml (providers), as a plain mapping.
    """

    TYPE = "local"

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
    ) -> None:
        self.environment = environment
        self.state_dir = Path(state_dir).resolve()
        self.host = host
        self.port = port
        self.workers = max(1, workers)
        self.key_scope = key_scope
        self.secrets: dict[str, Any] = dict(secrets or {})
        self.dir = self.state_dir / "envs" / environment
        self.pid_file = self.dir / "server.pid"
        self.log_file = self.dir / "server.log"
        self.history_file = self.dir / "deployments.json"
        self.url = f"http://{host}:{port}"
        self._probe_host = "127.0.0.1" if host in _LOOPBACK else host
        self._key: str | None = None

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
            current, previous, action = self._deploy(model_dir, model_name, version)
        except VintageError as exc:
            self._audit("deploy", "failed", f"{detail}: {exc.headline}")
            raise
        self._audit("deploy", "ok", f"{detail} {action}")
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
            current, _, action = self._deploy(Path(previous.model_dir), previous.model_name, previous.version)
        except VintageError as exc:
            self._audit("rollback", "failed", f"{detail}: {exc.headline}")
            raise
        self._audit("rollback", "ok", f"{detail} {action}")
        return current

    def status(self) -> Deployment | None:
        """What serves now, ``healthy`` from a live ``/ready`` probe; ``None`` when nothing runs."""
        pid = self._running_pid()
        if pid is None:
            return None
        healthy = self._probe("/ready")
        history = self.history()
        if history:
            return dataclasses.replace(history[-1], pid=pid, healthy=healthy)
        served = self._served() or {}  # a server runs but was never recorded: report what it says it serves
        return Deployment(
            environment=self.environment,
            model_name=str(served.get("name") or ""),
            version=_int(served.get("version")),
            model_dir="",
            url=self.url,
            pid=pid,
            since=str(served.get("served_since") or ""),
            healthy=healthy,
        )

    def stop(self) -> bool:
        """SIGTERM the server, wait up to 30 s for its drain, then SIGKILL; ``False`` when nothing ran."""
        stopped = self._stop()
        if stopped:
            self._audit("stop", "ok", f"port {self.port}")
        return stopped

    def history(self) -> list[Deployment]:
        """Every deployment of this environment, oldest first.

        Raises:
            DeployError: deployments.json is not readable.
        """
        try:
            raw = json.loads(self.history_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise DeployError(
                f"the deployment history of {self.environment} cannot be read ({exc.__class__.__name__})",
                hint=f"fix or remove {self.history_file}",
            ) from exc
        try:
            if not isinstance(raw, list):
                raise TypeError("not a list")
            return [Deployment(**{k: v for k, v in d.items() if k in _FIELDS}) for d in raw]
        except (TypeError, AttributeError) as exc:
            raise DeployError(
                f"the deployment history of {self.environment} is not a list of deployments",
                hint=f"fix or remove {self.history_file}",
            ) from exc

    # -- deploy ------------------------------------------------------------------------------------------

    def _deploy(
        self, model_dir: Path, model_name: str, version: int
    ) -> tuple[Deployment, Deployment | None, str]:
        history = self.history()
        pid = self._live_pid()
        if pid is not None:
            previous = dataclasses.replace(history[-1], pid=pid) if history else None
            served = self._served()
            if (
                previous is not None
                and previous.model_dir == str(model_dir)
                and previous.version == version
                and served is not None
                and str(served.get("version")) == str(version)
                and served.get("name") == model_name
            ):
                return previous, previous, "unchanged"
            self._swap(model_dir, model_name, version)
            action = "swapped"
        else:
            previous = None
            pid = self._start(model_dir, model_name, version)
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
        )
        self._write_json(self.history_file, [dataclasses.asdict(d) for d in [*history, current]])
        return current, previous, action

    def _swap(self, model_dir: Path, model_name: str, version: int) -> None:
        headers = {"Content-Type": "application/json"}
        if self.key_scope:
            headers["Authorization"] = f"Bearer {self._admin_key()}"
        body = json.dumps({"path": str(model_dir)}).encode()
        what = f"{model_name} v{version}"
        try:
            status, answer = self._request("POST", "/admin/model", body, headers, timeout=SWAP_TIMEOUT_S)
        except (OSError, http.client.HTTPException) as exc:
            raise DeployError(
                f"the server for {self.environment} did not answer the swap to {what} "
                f"({exc.__class__.__name__})",
                hint=f"see {self.log_file}",
            ) from exc
        if status == 401:
            raise DeployError(
                f"the server for {self.environment} refused the swap to {what}: the API key was not accepted",
                hint=f"the server and the deploy must use the same key scope ({self.key_scope or 'none'}); "
                "after rotating keys, reload them on the server (SIGHUP) before deploying",
            )
        if status != 200:
            message = _error_message(answer)
            raise DeployError(
                f"the server for {self.environment} rejected {what} (HTTP {status}): {message}; "
                "the model it served before keeps serving",
                hint="check the model directory (vintage.serving.materialize); it must take the same columns",
            )
        self._confirm(model_name, version)

    def _confirm(self, model_name: str, version: int) -> None:
        """``/version`` reports the new model (several workers: consistently, as they follow one by one)."""
        needed = 1 if self.workers == 1 else 3 * self.workers
        if self.workers > 1:
            # Other workers follow the swap through the server's control file, which each checks every
            # 0.5 s: after a full period plus margin every idle worker has switched.
            time.sleep(WORKER_FOLLOW_S)
        deadline = time.monotonic() + 15.0
        streak, served = 0, None
        while True:
            served = self._served()
            match = served is not None and _reports(served, model_name, version)
            streak = streak + 1 if match else 0
            if streak >= needed:
                return
            if time.monotonic() > deadline:
                break
            time.sleep(0.05 if streak == 0 else POLL_S)
        seen = f"{served.get('name')} v{served.get('version')}" if served else "nothing"
        raise DeployError(
            f"the server for {self.environment} should serve {model_name} v{version} but reports {seen}",
            hint=f"see {self.log_file}",
        )

    def _start(self, model_dir: Path, model_name: str, version: int) -> int:
        if not self._port_free():
            raise self._port_taken()
        self.dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "vintage.serving",
            "--model-dir",
            str(model_dir),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
        ]
        if self.key_scope:
            cmd += [
                "--environment",
                self.environment,
                "--api-key-scope",
                self.key_scope,
                "--state-dir",
                str(self.state_dir),
                "--secrets-json",
                json.dumps(self.secrets),
            ]
        fd = os.open(self.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as log:
            offset = log.seek(0, os.SEEK_END)
            stamp = datetime.now(UTC).isoformat(timespec="seconds")
            log.write(
                f"--- {stamp} deploy {self.environment}: starting {model_name} v{version} ({model_dir}) "
                f"on {self.host}:{self.port}\n".encode()
            )
            log.flush()
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own session: survives the deploying process and its terminal
                close_fds=True,
                cwd=self.dir,
            )
        _children[proc.pid] = proc
        self._write_text(self.pid_file, f"{proc.pid}\n")
        failure = self._wait_ready(proc)
        if failure is None:
            try:
                self._confirm(model_name, version)
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
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            code = proc.poll()
            if code is not None:
                return f"it exited with code {code}"
            if self._probe("/ready"):
                return None
            time.sleep(POLL_S)
        return f"it was not ready after {READY_TIMEOUT_S:.0f} s"

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

    def _admin_key(self) -> str:
        if self._key is None:
            from vintage.config.models import SecretsSpec
            from vintage.secrets.access import SecretReader

            reader = SecretReader.from_spec(
                SecretsSpec.model_validate(self.secrets),
                self.state_dir,
                reader=f"deploy:{self.environment}",
                environment=self.environment,
            )
            try:
                self._key = reader.get(f"{self.key_scope}/primary")
            except VintageError as exc:
                raise DeployError(
                    f"cannot read the API key to swap the model of {self.environment}: {exc.headline}",
                    hint=exc.hint,
                ) from exc
        return self._key

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
        if _alive(pid) and _is_server(pid):
            return pid
        self._forget_pid(pid)
        return None

    def _live_pid(self) -> int | None:
        """The server's pid when it runs and answers ``/health``; a process that does not answer is killed."""
        pid = self._running_pid()
        if pid is None:
            return None
        if self._probe("/health"):
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
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
        if _wait_gone(pid, grace_s) and _group_gone(pid, 5.0):
            return  # the server and every worker of its session are gone
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)  # the server leads its own session: its workers go too
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
        _wait_gone(pid, 5.0)

    def _forget_pid(self, pid: int) -> None:
        if self._read_pid() == pid:
            with contextlib.suppress(FileNotFoundError):
                self.pid_file.unlink()

    # -- HTTP ------------------------------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = PROBE_TIMEOUT_S,
    ) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(self._probe_host, self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def _probe(self, path: str) -> bool:
        try:
            return self._request("GET", path)[0] == 200
        except (OSError, http.client.HTTPException):
            return False

    def _served(self) -> dict[str, Any] | None:
        """What ``/version`` says, or ``None`` when it does not answer."""
        try:
            status, body = self._request("GET", "/version")
            data = json.loads(body) if status == 200 else None
        except (OSError, http.client.HTTPException, ValueError):
            return None
        return data if isinstance(data, dict) else None

    # -- files -----------------------------------------------------------------------------------------------

    def _write_json(self, path: Path, value: Any) -> None:
        self._write_text(path, json.dumps(value, indent=2) + "\n")

    def _write_text(self, path: Path, text: str) -> None:
        """Write atomically (temp file + fsync + rename), mode 0600."""
        path.parent.mkdir(parents=True, exist_ok=True)
        write_private(path, text.encode())

    def _audit(self, action: str, outcome: str, detail: str) -> None:
        audit.record(
            self.state_dir, action, self.environment, outcome, environment=self.environment, detail=detail
        )


WORKER_FOLLOW_S = 1.2  # > the serving control-file period (0.5 s) twice, plus margin


def _group_gone(pgid: int, timeout: float) -> bool:
    """Wait until no process of group ``pgid`` (the server's workers) is left."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone; a child of this process is reaped)."""
    child = _children.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        del _children[pid]
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive, and never ours (see _is_server)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): kill(0) is all we know
    return stat.rsplit(")", 1)[-1].split()[:1] != ["Z"]


def _is_server(pid: int) -> bool:
    """True when ``pid`` runs ``vintage.serving`` (guards against a recycled pid; needs /proc)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return not Path("/proc/self").exists()  # no /proc (macOS): cannot tell, trust the pid file
    return b"vintage.serving" in cmdline


def _wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_S)
    return True


def _reports(served: dict[str, Any], model_name: str, version: int) -> bool:
    """True when ``/version`` names ``model_name`` v``version`` (or nothing: a directory without
    vintage-model.json carries no registry metadata, so there is nothing to check)."""
    name, served_version = served.get("name"), served.get("version")
    if name is None and served_version is None:
        return True
    return (name, str(served_version)) == (model_name, str(version))


def _error_message(body: bytes) -> str:
    try:
        data = json.loads(body)
        message = data["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = body.decode("utf-8", errors="replace").strip()[:300] or "no message"
    return redact(str(message))


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
