"""Start `python -m vintage.serving` as a real process on 127.0.0.1 and talk HTTP to it.

The command line comes from :mod:`vintage.serving.launch` and the HTTP/admin calls from
:mod:`vintage.serving.client`, as for the deploy target: the tests exercise the code that ships.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vintage.serving.client import NotReadyError, Response, ServerClient, ServerUnavailableError
from vintage.serving.launch import ServerCommand, start

__all__ = ["Response", "Server", "free_port", "invoke", "scoring_server", "wait_ready"]


def free_port() -> int:
    """A TCP port nobody listens on right now (127.0.0.1)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A running scoring server."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    admin_socket: Path | None = None
    client: ServerClient = field(init=False)

    def __post_init__(self) -> None:
        self.client = ServerClient(f"http://127.0.0.1:{self.port}", admin_socket=self.admin_socket)

    def admin(self, op: str, **fields: Any) -> dict[str, Any]:
        """One request over the server's admin channel (raises ServingError on a refusal)."""
        assert self.admin_socket is not None, "start the server with model_store= for an admin channel"
        return self.client.admin(op, timeout=120, **fields)

    def swap(self, model_dir: Path) -> dict[str, Any]:
        """Swap to a materialised model directory (its recorded digest) over the admin channel."""
        from vintage.model.digest import recorded

        return self.client.swap(model_dir, recorded(model_dir), timeout=120)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | str | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 30.0,
    ) -> Response:
        """One request on a fresh connection (the headers as given: no key is added)."""
        return self.client.request(method, path, body, headers, timeout=timeout)

    def post_json(self, payload: Any, key: str | None = None, path: str = "/invocations") -> Response:
        """POST a JSON document, with a bearer key if given."""
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return self.request("POST", path, json.dumps(payload), headers)


@contextmanager
def scoring_server(
    model_dir: Path,
    log_dir: Path,
    *extra: str,
    env: dict[str, str] | None = None,
    model_store: Path | None = None,
) -> Iterator[Server]:
    """Run the server until the block ends (SIGTERM, then SIGKILL after 30 s).

    With ``model_store`` the server has an admin channel (a socket in ``log_dir``) that swaps in models
    from that directory, and its audit trail is ``log_dir/audit.db``.
    """
    port = free_port()
    log = log_dir / f"serve-{port}.log"
    admin_socket = log_dir / f"admin-{port}.sock" if model_store is not None else None
    command = ServerCommand(
        model_dir,
        port=port,
        admin_socket=admin_socket,
        model_store=model_store,
        state_dir=log_dir if model_store is not None else None,
        extra=extra,
    )
    with log.open("wb") as fh:
        proc = start(command, stdout=fh, env=env)
    server = Server(proc, port, log, admin_socket)
    try:
        wait_ready(server)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_ready(server: Server, timeout: float = 60.0) -> None:
    """Poll /ready until 200. Fails fast, with the log's end, if the process died."""
    try:
        server.client.wait_ready(timeout, exited=server.proc.poll)
    except NotReadyError as exc:
        raise RuntimeError(f"{exc.headline}: {server.log.read_text()[-2000:]}") from exc


def invoke(url: str, payload: Any, key: str | None = None, timeout: float = 10.0) -> tuple[int, Any]:
    """POST ``payload`` as JSON to ``url``/invocations (Bearer ``key`` if given): (status, JSON body or None).

    Status 0 when nothing answers (connection refused, reset).
    """
    try:
        resp = ServerClient(url, api_key=key).predict(payload, timeout=timeout)
    except ServerUnavailableError:
        return 0, None
    return resp.status, (resp.json() if resp.status < 400 else None)
