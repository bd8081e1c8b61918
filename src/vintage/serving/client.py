"""A client of one scoring server: its HTTP API (probes, ``/version``, ``/invocations``) and admin channel.

The deploy targets, the pipeline's smoke test and the tests all talk to a server through this. HTTP goes over
``http.client`` on a fresh connection per request (no proxy is ever consulted: the servers vintage runs listen
on this machine); the admin channel is :func:`vintage.serving.admin.request`. Errors are
:class:`~vintage.errors.ServingError` subclasses with a one-line headline; the API key is sent as a bearer
header and never appears in a message.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from vintage.errors import ServingError
from vintage.serving.admin import CLIENT_TIMEOUT_S as ADMIN_TIMEOUT_S
from vintage.serving.admin import AdminUnavailableError
from vintage.serving.admin import request as admin_request

PROBE_TIMEOUT_S: Final = 2.0
REQUEST_TIMEOUT_S: Final = 30.0
POLL_S: Final = 0.02


class ServerUnavailableError(ServingError):
    """Nothing answered over HTTP (connection refused, reset, timed out)."""

    def __init__(self, url: str, cause: BaseException) -> None:
        self.cause = cause.__class__.__name__
        super().__init__(f"no scoring server answers at {url} ({self.cause})")


class NotReadyError(ServingError):
    """The server did not become ready; :attr:`reason` says why (it exited, or the time ran out)."""

    def __init__(self, url: str, reason: str) -> None:
        self.reason = reason
        super().__init__(f"the scoring server at {url} is not ready: {reason}")


@dataclass(frozen=True)
class Response:
    """Status, headers (lower-case names) and body of one HTTP exchange."""

    status: int
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


class ServerClient:
    """Talks to the scoring server at ``url`` (``http://HOST:PORT``).

    Args:
        url: The server's base URL.
        api_key: Sent as ``Authorization: Bearer ...`` on ``/invocations`` and the metadata endpoints.
        admin_socket: The server's admin socket (for :meth:`status`, :meth:`swap`, :meth:`reload_keys`).
    """

    def __init__(self, url: str, *, api_key: str | None = None, admin_socket: Path | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ServingError(f"not a scoring server URL: {url!r}", hint="give http://HOST:PORT")
        self.url = url.rstrip("/")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.admin_socket = admin_socket
        self._api_key = api_key

    def __repr__(self) -> str:  # never the key
        return f"ServerClient({self.url!r}, admin_socket={self.admin_socket!r})"

    # -- HTTP -----------------------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: bytes | str | None = None,
        headers: dict[str, str] | None = None,
        *,
        timeout: float = REQUEST_TIMEOUT_S,
        auth: bool = True,
    ) -> Response:
        """One request on a fresh connection; any status is returned (no exception for 4xx/5xx).

        Raises:
            ServerUnavailableError: nothing answered, or the connection broke off.
        """
        sent = dict(headers or {})
        if auth and self._api_key and "Authorization" not in sent:
            sent["Authorization"] = f"Bearer {self._api_key}"
        data = body.encode() if isinstance(body, str) else body
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request(method, path, body=data, headers=sent)
            resp = conn.getresponse()
            return Response(resp.status, resp.read(), {k.lower(): v for k, v in resp.getheaders()})
        except (OSError, http.client.HTTPException) as exc:
            raise ServerUnavailableError(self.url, exc) from exc
        finally:
            conn.close()

    def probe(self, path: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
        """True when ``GET path`` answers 200 (a probe needs no key); False when nothing answers."""
        try:
            return self.request("GET", path, timeout=timeout, auth=False).status == 200
        except ServerUnavailableError:
            return False

    def status_code(self, path: str, timeout: float = PROBE_TIMEOUT_S) -> int | None:
        """The status ``GET path`` answers, with the client's key (a key rotation checks that a removed
        key gets 401); ``None`` when nothing answers."""
        try:
            return self.request("GET", path, timeout=timeout).status
        except ServerUnavailableError:
            return None

    def health(self) -> bool:
        """``/health`` answers 200: the process is up."""
        return self.probe("/health")

    def ready(self) -> bool:
        """``/ready`` answers 200: a model is loaded and warm."""
        return self.probe("/ready")

    def wait_ready(self, timeout: float, exited: Callable[[], int | None] | None = None) -> None:
        """Poll ``/ready`` until it answers 200.

        Args:
            timeout: Seconds to wait at most.
            exited: Returns the server process's exit code once it has exited (``Popen.poll``): stop early.

        Raises:
            NotReadyError: the process exited, or it was not ready in time.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = exited() if exited is not None else None
            if code is not None:
                raise NotReadyError(self.url, f"it exited with code {code}")
            if self.ready():
                return
            time.sleep(POLL_S)
        raise NotReadyError(self.url, f"it was not ready after {timeout:.0f} s")

    def version(self, timeout: float = PROBE_TIMEOUT_S) -> dict[str, Any]:
        """What ``/version`` says is served (name, version, run id, digest, ...).

        Raises:
            ServerUnavailableError: nothing answered.
            ServingError: another status than 200, or not a JSON object.
        """
        resp = self.request("GET", "/version", timeout=timeout)
        if resp.status != 200:
            hint = "give the server's API key" if resp.status == 401 else None
            raise ServingError(f"{self.url}/version answered {resp.status}", hint=hint)
        try:
            info = resp.json()
        except ValueError:
            info = None
        if not isinstance(info, dict):
            raise ServingError(f"{self.url}/version answered something that is not a JSON object")
        return info

    def predict(
        self,
        payload: Any,
        *,
        content_type: str = "application/json",
        timeout: float = REQUEST_TIMEOUT_S,
    ) -> Response:
        """POST ``payload`` to ``/invocations``: bytes or str as they are, anything else as JSON.

        Returns the response whatever its status (the caller decides what a 4xx means to it).

        Raises:
            ServerUnavailableError: nothing answered.
        """
        body = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
        return self.request("POST", "/invocations", body, {"Content-Type": content_type}, timeout=timeout)

    # -- the admin channel ---------------------------------------------------------------------------------

    def admin(self, op: str, timeout: float = ADMIN_TIMEOUT_S, **fields: Any) -> dict[str, Any]:
        """One admin request (``status``, ``swap``, ``reload-keys``).

        Raises:
            AdminUnavailableError: nothing answers on the admin socket (or the client has none).
            ServingError: the server refused (its reason is the headline).
        """
        if self.admin_socket is None:
            raise AdminUnavailableError(f"no admin socket is known for the scoring server at {self.url}")
        return admin_request(self.admin_socket, op, timeout=timeout, **fields)

    def status(self, timeout: float = PROBE_TIMEOUT_S) -> dict[str, Any]:
        """What the server serves (name, version, digest, pid, workers), over the admin channel."""
        return self.admin("status", timeout=timeout)

    def served(self, timeout: float = PROBE_TIMEOUT_S) -> dict[str, Any] | None:
        """:meth:`status`, or ``None`` when the admin channel does not answer or refuses."""
        try:
            return self.status(timeout=timeout)
        except ServingError:
            return None

    def swap(self, model_dir: Path, digest: str, timeout: float = ADMIN_TIMEOUT_S) -> dict[str, Any]:
        """Serve ``model_dir`` (inside the server's model store, holding ``digest``) from now on."""
        return self.admin("swap", timeout=timeout, path=str(model_dir), digest=digest)

    def reload_keys(self, timeout: float = ADMIN_TIMEOUT_S) -> dict[str, Any]:
        """Re-read the API keys (rotation)."""
        return self.admin("reload-keys", timeout=timeout)
