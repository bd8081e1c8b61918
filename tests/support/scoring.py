"""Start `python -m vintage.serving` as a real process on 127.0.0.1 and talk HTTP to it."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def free_port() -> int:
    """A TCP port nobody listens on right now (127.0.0.1)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Response:
    """Status, headers and body of one HTTP exchange."""

    status: int
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


@dataclass
class Server:
    """A running scoring server."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    admin_socket: Path | None = None

    def admin(self, op: str, **fields: Any) -> dict[str, Any]:
        """One request over the server's admin channel (raises ServingError on a refusal)."""
        from vintage.serving.admin import request

        assert self.admin_socket is not None, "start the server with model_store= for an admin channel"
        return request(self.admin_socket, op, timeout=120, **fields)

    def swap(self, model_dir: Path) -> dict[str, Any]:
        """Swap to a materialised model directory (its recorded digest) over the admin channel."""
        from vintage.model.digest import recorded

        return self.admin("swap", path=str(model_dir), digest=recorded(model_dir))

    def request(
        self,
        method: str,
        path: str,
        body: bytes | str | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 30.0,
    ) -> Response:
        """One request on a fresh connection."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            data = body.encode() if isinstance(body, str) else body
            conn.request(method, path, body=data, headers=headers or {})
            resp = conn.getresponse()
            return Response(resp.status, resp.read(), {k.lower(): v for k, v in resp.getheaders()})
        finally:
            conn.close()

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
    if admin_socket is not None:
        extra = (
            *extra,
            "--admin-socket",
            str(admin_socket),
            "--model-store",
            str(model_store),
            "--state-dir",
            str(log_dir),
        )
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vintage.serving",
                "--model-dir",
                str(model_dir),
                "--port",
                str(port),
                *extra,
            ],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
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


def wait_ready(server: Server, timeout: float = 60.0) -> float:
    """Poll /ready until 200; returns the seconds waited. Fails fast if the process died."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if server.proc.poll() is not None:
            raise RuntimeError(
                f"server exited with {server.proc.returncode}: {server.log.read_text()[-2000:]}"
            )
        try:
            if server.request("GET", "/ready", timeout=2).status == 200:
                return time.perf_counter() - started
        except OSError:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"server not ready after {timeout} s: {server.log.read_text()[-2000:]}")


def invoke(url: str, payload: Any, key: str | None = None, timeout: float = 10.0) -> tuple[int, Any]:
    """POST ``payload`` as JSON to ``url``/invocations (Bearer ``key`` if given): (status, JSON body or None).

    Status 0 when nothing answers (connection refused, reset).
    """
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url + "/invocations", data=json.dumps(payload).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except OSError:
        return 0, None
