"""A fake Databricks workspace for the Secrets API 2.0, served over real HTTP on 127.0.0.1.

It answers the seven Secrets endpoints the way a workspace does (shapes taken from the REST reference and
recorded responses): state-ful scopes and secrets, base64 values on ``secrets/get``, empty objects ``{}``
for empty lists and successful writes, and ``{"error_code": ..., "message": ...}`` errors:

- a missing scope or key: 404 ``RESOURCE_DOES_NOT_EXIST``;
- an existing scope on create: 400 ``RESOURCE_ALREADY_EXISTS``;
- a malformed scope name: 400 ``INVALID_PARAMETER_VALUE``;
- a scope listed in ``denied``: 403 ``PERMISSION_DENIED``;
- no ``Authorization: Bearer <token>`` header: 401; a wrong token: ``invalid_token_status`` (401 by
  default; real workspaces answer 403 ``{"error_code": 403, "message": "Invalid access token."}``).

It also serves ``/.well-known/databricks-config``, which the SDK probes when it builds its configuration.
Every request is recorded (method, path, query, JSON body, Authorization header) in ``requests``.

    with fake_databricks() as ws:
        client = WorkspaceClient(host=ws.url, token=ws.token)
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

LOOPBACK = "127.0.0.1"
DEFAULT_TOKEN = "dapi0123456789abcdef0123456789abcdef"
WORKSPACE_ID = "1234567890123456"
_SCOPE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_KEY_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


@dataclass(frozen=True)
class Recorded:
    """One request as the server saw it."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    authorization: str | None
    headers: dict[str, str]


@dataclass
class Secret:
    """A stored secret: its raw bytes and the last update time (ms since the epoch)."""

    value: bytes
    last_updated_timestamp: int


@dataclass
class FakeScope:
    """A stored scope."""

    backend_type: str
    initial_manage_principal: str | None = None
    secrets: dict[str, Secret] = field(default_factory=dict)


class ApiError(Exception):
    """An error answer: HTTP status and the JSON body."""

    def __init__(self, status: int, error_code: str | int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error_code": error_code, "message": message}


class FakeWorkspace:
    """The state of the fake workspace and the requests it received."""

    def __init__(self, token: str = DEFAULT_TOKEN, invalid_token_status: int = 401) -> None:
        self.token = token
        self.invalid_token_status = invalid_token_status
        self.scopes: dict[str, FakeScope] = {}
        self.denied: set[str] = set()
        self.requests: list[Recorded] = []
        self.url = ""
        self._lock = threading.Lock()

    def api_requests(self) -> list[Recorded]:
        """The recorded requests to ``/api/`` (without the SDK's host-metadata probe)."""
        return [r for r in self.requests if r.path.startswith("/api/")]

    def add_secret(self, scope: str, key: str, value: str | bytes) -> None:
        """Seed a secret (creating its scope) without going through HTTP."""
        raw = value.encode() if isinstance(value, str) else value
        entry = self.scopes.setdefault(scope, FakeScope("DATABRICKS"))
        entry.secrets[key] = Secret(raw, _now_ms())

    # ------------------------------------------------------------------------------------------------
    # Request handling
    # ------------------------------------------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict[str, str], body: Any, auth: str | None) -> Any:
        """Answer one request: the JSON to send back with 200, or raise :class:`ApiError`."""
        if path == "/.well-known/databricks-config":
            return {"oidc_endpoint": f"{self.url}/oidc", "workspace_id": WORKSPACE_ID}
        if not auth or not auth.startswith("Bearer "):
            raise ApiError(401, 401, "Credential was not sent or was of an unsupported type for this API.")
        if auth != f"Bearer {self.token}":
            if self.invalid_token_status == 403:
                raise ApiError(403, 403, "Invalid access token.")
            raise ApiError(self.invalid_token_status, "UNAUTHENTICATED", "Invalid access token.")
        routes = {
            ("POST", "/api/2.0/secrets/scopes/create"): self._create_scope,
            ("GET", "/api/2.0/secrets/scopes/list"): self._list_scopes,
            ("POST", "/api/2.0/secrets/scopes/delete"): self._delete_scope,
            ("POST", "/api/2.0/secrets/put"): self._put,
            ("GET", "/api/2.0/secrets/list"): self._list,
            ("GET", "/api/2.0/secrets/get"): self._get,
            ("POST", "/api/2.0/secrets/delete"): self._delete,
        }
        route = routes.get((method, path))
        if route is None:
            raise ApiError(404, "ENDPOINT_NOT_FOUND", f"No API found for '{method} {path}'")
        args = dict(query)
        if isinstance(body, dict):
            args.update({k: v for k, v in body.items() if isinstance(v, str)})
        with self._lock:
            return route(args)

    def _scope(self, args: dict[str, str], permission: str = "READ") -> FakeScope:
        name = args.get("scope")
        if not name:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "Missing required field: scope")
        if name not in self.scopes:
            raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Scope {name} does not exist!")
        if name in self.denied:
            raise ApiError(
                403,
                "PERMISSION_DENIED",
                f"User does not have {permission} permission on scope {name} to perform this action.",
            )
        return self.scopes[name]

    def _create_scope(self, args: dict[str, str]) -> dict[str, Any]:
        name = args.get("scope", "")
        if not _SCOPE_NAME.match(name):
            raise ApiError(
                400,
                "INVALID_PARAMETER_VALUE",
                f"Scope name {name!r} is invalid: it must consist of alphanumeric characters, dashes, "
                "underscores, and periods, and may not exceed 128 characters.",
            )
        if name in self.scopes:
            raise ApiError(400, "RESOURCE_ALREADY_EXISTS", f"Scope {name} already exists!")
        backend = args.get("scope_backend_type", "DATABRICKS")
        self.scopes[name] = FakeScope(backend.upper(), args.get("initial_manage_principal"))
        return {}

    def _list_scopes(self, args: dict[str, str]) -> dict[str, Any]:
        if not self.scopes:
            return {}
        return {
            "scopes": [{"name": n, "backend_type": s.backend_type} for n, s in sorted(self.scopes.items())]
        }

    def _delete_scope(self, args: dict[str, str]) -> dict[str, Any]:
        self._scope(args, "MANAGE")
        del self.scopes[args["scope"]]
        return {}

    def _put(self, args: dict[str, str]) -> dict[str, Any]:
        scope = self._scope(args, "WRITE")
        key = args.get("key", "")
        if not _KEY_NAME.match(key):
            raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Invalid secret key name: {key!r}")
        if "string_value" in args:
            raw = args["string_value"].encode()
        elif "bytes_value" in args:
            raw = base64.b64decode(args["bytes_value"])
        else:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "Either string_value or bytes_value must be set")
        scope.secrets[key] = Secret(raw, _now_ms())
        return {}

    def _list(self, args: dict[str, str]) -> dict[str, Any]:
        scope = self._scope(args)
        if not scope.secrets:
            return {}
        return {
            "secrets": [
                {"key": k, "last_updated_timestamp": s.last_updated_timestamp}
                for k, s in sorted(scope.secrets.items())
            ]
        }

    def _get(self, args: dict[str, str]) -> dict[str, Any]:
        scope = self._scope(args)
        key = args.get("key", "")
        if key not in scope.secrets:
            raise ApiError(
                404, "RESOURCE_DOES_NOT_EXIST", f"Failed to get secret {key} for scope {args['scope']}."
            )
        return {"key": key, "value": base64.b64encode(scope.secrets[key].value).decode()}

    def _delete(self, args: dict[str, str]) -> dict[str, Any]:
        scope = self._scope(args, "WRITE")
        key = args.get("key", "")
        if key not in scope.secrets:
            raise ApiError(
                404, "RESOURCE_DOES_NOT_EXIST", f"No secret with key {key} exists in scope {args['scope']}."
            )
        del scope.secrets[key]
        return {}


def _now_ms() -> int:
    return int(time.time() * 1000)


def _handler(workspace: FakeWorkspace) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "databricks"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body: Any = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode(errors="replace")
            auth = self.headers.get("Authorization")
            workspace.requests.append(
                Recorded(self.command, parts.path, query, body, auth, {k: v for k, v in self.headers.items()})
            )
            try:
                status, answer = 200, workspace.handle(self.command, parts.path, query, body, auth)
            except ApiError as exc:
                status, answer = exc.status, exc.body
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = _serve  # noqa: N815 - http.server's naming
        do_POST = _serve  # noqa: N815

    return Handler


@contextlib.contextmanager
def fake_databricks(token: str = DEFAULT_TOKEN, invalid_token_status: int = 401) -> Iterator[FakeWorkspace]:
    """Serve a fresh fake workspace on 127.0.0.1 (a free port) for the duration of the block."""
    workspace = FakeWorkspace(token, invalid_token_status)
    server = ThreadingHTTPServer((LOOPBACK, 0), _handler(workspace))
    server.daemon_threads = True
    workspace.url = f"http://{LOOPBACK}:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="fake-databricks", daemon=True)
    thread.start()
    try:
        yield workspace
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
