"""ServerClient: HTTP against a stand-in HTTP server on 127.0.0.1, the admin channel against the real
AdminServer (the real scoring server is driven through the same client in tests/e2e)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from vintage.errors import ServingError
from vintage.serving.admin import AdminServer, AdminUnavailableError
from vintage.serving.client import NotReadyError, ServerClient, ServerUnavailableError

KEY = "k1-" + "s" * 30


class _Handler(BaseHTTPRequestHandler):
    seen: list[dict[str, Any]]
    ready: bool

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, status: int, doc: Any) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.server.seen.append({"path": self.path, "auth": self.headers.get("Authorization")})  # type: ignore[attr-defined]
        if self.path == "/ready":
            self._answer(200 if self.server.ready else 503, {})  # type: ignore[attr-defined]
        elif self.path == "/version":
            authorised = self.headers.get("Authorization") == f"Bearer {KEY}"
            self._answer(200 if authorised else 401, {"name": "wine", "version": "3"} if authorised else {})
        else:
            self._answer(404, {})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.seen.append(  # type: ignore[attr-defined]
            {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
        )
        self._answer(200, {"predictions": [1.5]})


@pytest.fixture
def http_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.seen = []  # type: ignore[attr-defined]
    server.ready = True  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _url(server: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def test_predict_sends_json_with_the_key_and_probes_send_none(http_server: ThreadingHTTPServer) -> None:
    client = ServerClient(_url(http_server), api_key=KEY)
    resp = client.predict({"inputs": [[1.0]]})
    assert resp.status == 200 and resp.json() == {"predictions": [1.5]}
    assert client.ready()
    seen = http_server.seen  # type: ignore[attr-defined]
    assert seen[0] == {"path": "/invocations", "auth": f"Bearer {KEY}", "body": b'{"inputs": [[1.0]]}'}
    assert seen[1] == {"path": "/ready", "auth": None}  # probes never carry the key


def test_version_needs_the_key_and_says_so_without_it(http_server: ThreadingHTTPServer) -> None:
    assert ServerClient(_url(http_server), api_key=KEY).version() == {"name": "wine", "version": "3"}
    with pytest.raises(ServingError) as err:
        ServerClient(_url(http_server), api_key="wrong-" + "x" * 30).version()
    assert err.value.headline.endswith("/version answered 401")
    assert "wrong-" not in err.value.headline and err.value.hint == "give the server's API key"


def test_status_code_is_what_a_given_key_gets_and_none_when_nothing_answers(
    http_server: ThreadingHTTPServer,
) -> None:
    url = _url(http_server)
    assert ServerClient(url, api_key=KEY).status_code("/version") == 200
    assert ServerClient(url, api_key="old-" + "x" * 30).status_code("/version") == 401  # a removed key
    assert ServerClient(url).status_code("/nowhere") == 404
    assert http_server.seen[0]["auth"] == f"Bearer {KEY}"  # type: ignore[attr-defined]
    http_server.shutdown()
    http_server.server_close()
    assert ServerClient(url, api_key=KEY).status_code("/version") is None


def test_nothing_listening_is_one_error_without_the_key(http_server: ThreadingHTTPServer) -> None:
    url = _url(http_server)
    http_server.shutdown()
    http_server.server_close()
    client = ServerClient(url, api_key=KEY)
    assert not client.ready() and not client.health()
    with pytest.raises(ServerUnavailableError) as err:
        client.predict(b"{}")
    assert err.value.headline == f"no scoring server answers at {url} (ConnectionRefusedError)"
    assert KEY not in repr(client) and "\n" not in err.value.headline


def test_wait_ready_stops_when_the_process_exited(http_server: ThreadingHTTPServer) -> None:
    http_server.ready = False  # type: ignore[attr-defined]
    client = ServerClient(_url(http_server))
    with pytest.raises(NotReadyError) as err:
        client.wait_ready(60, exited=lambda: 3)
    assert err.value.reason == "it exited with code 3"
    with pytest.raises(NotReadyError, match="not ready after 0 s"):
        client.wait_ready(0.1)
    http_server.ready = True  # type: ignore[attr-defined]
    client.wait_ready(5, exited=lambda: None)


def test_a_url_that_is_not_http_is_refused() -> None:
    with pytest.raises(ServingError, match="not a scoring server URL"):
        ServerClient("127.0.0.1:8080")


class _Controller:
    def __init__(self) -> None:
        self.served = {"name": "wine", "version": "1", "digest": "sha256:" + "a" * 64}

    def status(self) -> dict[str, Any]:
        return dict(self.served)

    def swap(self, path: Path, digest: str) -> dict[str, Any]:
        self.served = {"name": "wine", "version": path.name, "digest": digest}
        return dict(self.served)

    def reload_keys(self) -> int:
        return 2


def test_admin_status_swap_and_reload_over_the_real_admin_channel(tmp_path: Path) -> None:
    store = tmp_path / "models"
    (store / "2").mkdir(parents=True)
    sock = tmp_path / "run" / "admin.sock"
    server = AdminServer(sock, _Controller(), store, lambda *args: None)
    server.start()
    try:
        client = ServerClient("http://127.0.0.1:9", admin_socket=sock)
        assert client.status()["version"] == "1"
        digest = "sha256:" + "b" * 64
        assert client.swap(store / "2", digest)["digest"] == digest
        assert client.served() == {"ok": True, "name": "wine", "version": "2", "digest": digest}
        assert client.reload_keys()["keys"] == 2
        with pytest.raises(ServingError, match="not in this server's model store"):
            client.swap(tmp_path, digest)
    finally:
        server.close()
    assert client.served() is None  # nothing answers any more
    with pytest.raises(AdminUnavailableError):
        ServerClient("http://127.0.0.1:9").status()
