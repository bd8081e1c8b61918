"""Hostile traffic against a real scoring server: endless headers, slow sockets, slow bodies, and a stop
under keep-alive load. All traffic goes to 127.0.0.1, bounded in count and time."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from support.scoring import scoring_server

REPO = Path(__file__).resolve().parents[2]
ROW = json.dumps({"inputs": [[7.4, 0.7, 0.0, 1.9, 0.076, 11.0, 34.0, 0.9978, 3.51, 0.56, 9.4]]})
JSON = {"Content-Type": "application/json"}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import shutil
    import subprocess
    import sys

    proj = tmp_path_factory.mktemp("traffic")
    shutil.copy(REPO / "vintage.yaml", proj / "vintage.yaml")
    vintage = str(Path(sys.executable).with_name("vintage"))
    res = subprocess.run([vintage, "train"], cwd=proj, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    from vintage.model.materialize import materialize

    uri = f"sqlite:///{proj / '.vintage' / 'mlflow.db'}"
    return materialize("models:/winequality/1", proj / ".vintage" / "models", tracking_uri=uri)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _endless_header(port: int, budget: int, out: list[bytes]) -> None:
    """Send one header line without end until the server answers or ``budget`` bytes went out."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nX-Junk: ")
        sent, chunk = 0, b"a" * 16384
        try:
            while sent < budget:
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass  # the server closed the connection on us: what we want
        try:
            out.append(sock.recv(4096))
        except OSError:
            out.append(b"")


def test_endless_headers_get_431_and_bounded_memory(model_dir, tmp_path):
    """Reproduced: 10 connections sending an endless 50 MB header took the server from 77 MB to 571 MB."""
    with scoring_server(model_dir, tmp_path) as srv:
        before = _rss_mb(srv.proc.pid)
        answers: list[bytes] = []
        threads = [
            threading.Thread(target=_endless_header, args=(srv.port, 8 * 1024 * 1024, answers))
            for _ in range(10)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert len(answers) == 10
        assert all(a.startswith(b"HTTP/1.1 431") for a in answers), [a[:40] for a in answers]
        assert srv.request("GET", "/health").status == 200
        grown = _rss_mb(srv.proc.pid) - before
        assert grown < 40, f"the server grew by {grown:.0f} MB"  # 10 x 8 MB would be 80 MB unbounded


def test_slow_and_silent_sockets_are_closed_and_health_keeps_answering(model_dir, tmp_path):
    """Reproduced: 50 slow sockets were never closed."""
    limits = ("--header-timeout", "1", "--body-timeout", "1")
    with scoring_server(model_dir, tmp_path, *limits) as srv:
        socks = []
        for i in range(50):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
            if i % 3 == 1:
                s.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\n")  # headers never finished
            elif i % 3 == 2:  # headers done, body never finished
                s.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
                s.sendall(b'Content-Length: 1000\r\n\r\n{"inputs": ')
            socks.append(s)  # i % 3 == 0: never sends a byte
        assert srv.request("GET", "/health").status == 200
        assert srv.post_json(json.loads(ROW)).status == 200
        answers = []
        for s in socks:  # each one is closed by the server (recv returns at EOF); bounded by the timeout
            data = b""
            while chunk := s.recv(4096):
                data += chunk
            answers.append(data)
            s.close()
        assert all(a == b"" or a.startswith(b"HTTP/1.1 408") for a in answers)
        assert sum(a.startswith(b"HTTP/1.1 408") for a in answers) == 50
        assert srv.request("GET", "/health").status == 200


def test_sigterm_under_keep_alive_load_resets_no_request(model_dir, tmp_path):
    """Reproduced: SIGTERM with 8 keep-alive clients reset 7-8 requests."""
    with scoring_server(model_dir, tmp_path) as srv:
        lost: list[str] = []
        answered = {"n": 0}
        lock = threading.Lock()

        def client() -> None:
            deadline = time.monotonic() + 60
            conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
            try:
                conn.connect()
            except OSError:
                return
            while time.monotonic() < deadline:
                try:
                    conn.request("POST", "/invocations", ROW, JSON)
                except OSError as exc:  # the request could not even be written
                    lost.append(f"send: {exc!r}")
                    return
                try:
                    resp = conn.getresponse()
                    resp.read()
                except (OSError, http.client.HTTPException) as exc:  # sent, never answered
                    lost.append(f"answer: {exc!r}")
                    return
                with lock:
                    answered["n"] += 1
                if resp.status != 200:
                    lost.append(f"status {resp.status}")
                    return
                if resp.getheader("connection", "").lower() == "close":  # the server is draining
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
                    try:
                        conn.connect()
                    except OSError:  # refused: the server stopped listening; nothing was sent
                        return
            conn.close()

        threads = [threading.Thread(target=client) for _ in range(8)]
        for t in threads:
            t.start()
        while answered["n"] < 400:
            time.sleep(0.01)
        srv.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(timeout=90)
        assert srv.proc.wait(timeout=60) == 0
        assert lost == []
        assert answered["n"] >= 400
