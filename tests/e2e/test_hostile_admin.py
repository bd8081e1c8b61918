"""Hostile cases against the admin plane of real scoring servers.

Each test names the attack it stops. The "evil" model directory holds a pickle that writes a marker file
when it is unpickled; every test asserts that the marker never appears, whatever was refused or answered.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from support.scoring import free_port, scoring_server
from vintage import audit
from vintage.errors import ServingError
from vintage.model.digest import recorded, short, write_manifest
from vintage.serving.admin import request as admin_request

REPO = Path(__file__).resolve().parents[2]
VINTAGE = str(Path(sys.executable).with_name("vintage"))
KEY = "client-key-" + "q" * 30
ROW = {"inputs": [[7.4, 0.7, 0.0, 1.9, 0.076, 11.0, 34.0, 0.9978, 3.51, 0.56, 9.4]]}

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]

pytestmark = pytest.mark.slow


class _Boom:
    """Unpickling this runs ``open(marker, "w")``: proof that a server loaded the file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.marker, "w"))


def _evil_model(where: Path, like: Path, marker: Path) -> Path:
    """A copy of a real model directory whose model file is the pickle above."""
    shutil.copytree(like, where)
    (where / "vintage-model.json").unlink()  # no stored coefficients: the server would unpickle
    model_file = next(p for p in where.iterdir() if p.suffix in (".pkl", ".skops"))
    model_file.write_bytes(pickle.dumps(_Boom(str(marker))))
    return where


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A trained project with two registered versions materialised in its model store."""
    proj = tmp_path_factory.mktemp("hostile")
    shutil.copy(REPO / "vintage.yaml", proj / "vintage.yaml")
    run = {"cwd": proj, "capture_output": True, "text": True, "timeout": 300}
    assert subprocess.run([VINTAGE, "train"], **run).returncode == 0  # type: ignore[call-overload]
    spec = yaml.safe_load((proj / "vintage.yaml").read_text())
    spec["estimator"]["grid"] = [{"alpha": 0.05, "l1_ratio": 0.5}]
    (proj / "vintage.yaml").write_text(yaml.safe_dump(spec))
    assert subprocess.run([VINTAGE, "train"], **run).returncode == 0  # type: ignore[call-overload]
    from vintage.model.materialize import materialize

    uri = f"sqlite:///{proj / '.vintage' / 'mlflow.db'}"
    store = proj / ".vintage" / "models"
    return {
        "root": proj,
        "store": store,
        "v1": materialize("models:/winequality/1", store, tracking_uri=uri),
        "v2": materialize("models:/winequality/2", store, tracking_uri=uri),
    }


@pytest.fixture
def marker(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "PWNED"
    yield path
    assert not path.exists(), "a model directory was unpickled"


def _raw(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks):
                break
        return b"".join(chunks)


# --- 1. no admin surface on the scoring port -----------------------------------------------------------


def test_scoring_port_has_no_admin_surface_without_keys(project, tmp_path, marker):
    """Reproduced hole: POST /admin/model {"path": ...} with no credentials unpickled any directory."""
    evil = _evil_model(tmp_path / "evil", project["v1"], marker)
    with scoring_server(project["v1"], tmp_path, model_store=project["store"]) as srv:
        for ctype in ("application/json", "text/plain", None):
            for host in ("127.0.0.1", "evil.example"):
                body = json.dumps({"path": str(evil)}).encode()
                head = f"POST /admin/model HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n"
                head += f"Content-Type: {ctype}\r\n" if ctype else ""
                answer = _raw(srv.port, head.encode() + b"Connection: close\r\n\r\n" + body)
                assert answer.startswith(b"HTTP/1.1 404"), answer[:100]
        for path in ("/admin/reload-keys", "/admin/model/", "/admin", "/%61dmin/model"):
            assert srv.post_json({"path": str(evil)}, path=path).status == 404
        assert srv.request("GET", "/version").json()["version"] == "1"


def test_a_client_key_is_no_admin_credential(project, tmp_path, marker):
    """Reproduced hole: on production the API key handed to clients was also the admin key."""
    keyfile = tmp_path / "keys"
    keyfile.write_text(KEY + "\n")
    keyfile.chmod(0o600)
    evil = _evil_model(tmp_path / "evil", project["v1"], marker)
    with scoring_server(project["v1"], tmp_path, "--api-key-file", str(keyfile)) as srv:
        assert srv.post_json({"path": str(evil)}, key=KEY, path="/admin/model").status == 404
        assert srv.post_json({}, key=KEY, path="/admin/reload-keys").status == 404
        assert srv.post_json(ROW, key=KEY).status == 200


def test_admin_socket_is_private_to_the_servers_user(project, tmp_path, marker):
    with scoring_server(project["v1"], tmp_path, model_store=project["store"]) as srv:
        assert srv.admin_socket is not None
        mode = srv.admin_socket.stat().st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
        # another OS user: even with the file opened up, the server checks the peer's uid (SO_PEERCRED)
        shared = Path(tempfile.mkdtemp(prefix="vintage-admin-"))
        try:
            shared.chmod(0o755)
            link = shared / "admin.sock"
            os.link(srv.admin_socket, link)  # a second name, in a directory others can traverse
            link.chmod(0o666)
            script = (  # the server answers a foreign peer at once, before reading anything
                "import socket, sys\n"
                "s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])\n"
                "print(s.recv(4096).decode())\n"
            )
            res = subprocess.run(
                [*NOBODY, "/usr/bin/python3", "-c", script, str(link)],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert res.returncode == 0, res.stderr
            assert json.loads(res.stdout) == {"ok": False, "error": "permission denied"}
        finally:
            shutil.rmtree(shared)
        assert srv.request("GET", "/version").json()["version"] == "1"
        assert "refused: not the server's user" in srv.log.read_text()


# --- 2. a swap loads only what vintage materialised -------------------------------------------------------


def test_swap_outside_the_model_store_is_refused_without_saying_if_it_exists(project, tmp_path, marker):
    evil = _evil_model(tmp_path / "evil", project["v1"], marker)
    write_manifest(evil)  # even a directory with a valid manifest: it is not in the store
    with scoring_server(project["v1"], tmp_path, model_store=project["store"]) as srv:
        messages = set()
        for path in (evil, tmp_path / "does-not-exist", Path("/etc"), project["store"] / ".." / "mlflow.db"):
            with pytest.raises(ServingError) as exc:
                srv.admin("swap", path=str(path), digest=recorded(evil))
            messages.add(exc.value.headline)
        assert messages == {"the model directory is not in this server's model store; refusing it"}
        # a symlink inside the store pointing outside is resolved first, and refused the same way
        link = project["store"] / f"link-{tmp_path.name}"
        link.symlink_to(evil)
        try:
            with pytest.raises(ServingError, match="not in this server's model store"):
                srv.admin("swap", path=str(link), digest=recorded(evil))
        finally:
            link.unlink()
        assert srv.request("GET", "/version").json()["version"] == "1"


def test_swap_of_tampered_or_unrecorded_files_is_refused_before_unpickling(project, tmp_path, marker):
    store = project["store"]
    tampered = store / f"tampered-{tmp_path.name}"
    unrecorded = store / f"unrecorded-{tmp_path.name}"
    try:
        shutil.copytree(project["v2"], tampered)  # materialised, then its model file replaced
        model_file = next(p for p in tampered.iterdir() if p.suffix in (".pkl", ".skops"))
        model_file.write_bytes(pickle.dumps(_Boom(str(marker))))
        _evil_model(unrecorded, project["v1"], marker)
        (unrecorded / "vintage-manifest.json").unlink()
        with scoring_server(project["v1"], tmp_path, model_store=store) as srv:
            with pytest.raises(ServingError, match="differ from the digest recorded"):
                srv.admin("swap", path=str(tampered), digest=recorded(project["v2"]))
            with pytest.raises(ServingError, match="no content manifest"):
                srv.admin("swap", path=str(unrecorded), digest=recorded(project["v2"]))
            with pytest.raises(ServingError, match="not the requested"):  # v2's files, v1's digest
                srv.admin("swap", path=str(project["v2"]), digest=recorded(project["v1"]))
            assert srv.request("GET", "/version").json()["version"] == "1"
            assert srv.swap(project["v2"])["version"] == "2"  # the genuine one is swapped in
    finally:
        shutil.rmtree(tampered, ignore_errors=True)
        shutil.rmtree(unrecorded, ignore_errors=True)


def test_every_swap_and_reload_is_logged_and_audited(project, tmp_path, marker):
    keyfile = tmp_path / "keys"
    keyfile.write_text(KEY + "\n")
    keyfile.chmod(0o600)
    extra = ("--api-key-file", str(keyfile), "--environment", "staging")
    with scoring_server(project["v1"], tmp_path, *extra, model_store=project["store"]) as srv:
        srv.swap(project["v2"])
        with pytest.raises(ServingError):
            srv.admin("swap", path=str(tmp_path / "nowhere"), digest=recorded(project["v1"]))
        srv.admin("reload-keys")
        keyfile.write_text("short\n")
        with pytest.raises(ServingError, match="at least 16"):
            srv.admin("reload-keys")
        log = srv.log.read_text()
    d1, d2 = short(recorded(project["v1"])), short(recorded(project["v2"]))
    assert f"INFO vintage.serving.admin: model swapped winequality v1 ({d1}) -> winequality v2 ({d2})" in log
    assert "model swap refused" in log and "API keys reloaded (1)" in log and "API keys not reloaded" in log
    events = [e for e in audit.events(tmp_path) if e.action.startswith("serve.")]
    assert [(e.action, e.outcome, e.environment) for e in events] == [
        ("serve.swap", "ok", "staging"),
        ("serve.swap", "refused", "staging"),
        ("serve.reload_keys", "ok", "staging"),
        ("serve.reload_keys", "failed", "staging"),
    ]
    assert f"winequality v1 ({d1}) -> winequality v2 ({d2})" in events[0].detail
    assert all("over the admin socket" in e.detail and "uid" in e.detail for e in events)
    assert KEY not in json.dumps([e.detail for e in events])


# --- 3. the deploy compares digests, status says so ------------------------------------------------------


def test_a_tampered_server_is_redeployed_and_status_says_so_loudly(project, tmp_path, marker):
    """Reproduced: after an out-of-band swap the next run said `unchanged` and status showed v1."""
    from support.servers import free_port as port_for

    root = tmp_path / "proj"
    root.mkdir()
    spec = yaml.safe_load((REPO / "vintage.yaml").read_text())
    spec["environments"] = {
        "staging": {"port": port_for()},
        "production": {"port": port_for(), "api_keys": True},
    }
    (root / "vintage.yaml").write_text(yaml.safe_dump(spec))
    shutil.copytree(project["root"] / ".vintage", root / ".vintage")

    def vintage(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([VINTAGE, *args], cwd=root, capture_output=True, text=True, timeout=300)

    from vintage.deploy.local import LocalTarget

    staging = LocalTarget("staging", root / ".vintage", port=spec["environments"]["staging"]["port"])
    v1 = root / ".vintage" / "models" / project["v1"].name
    v2 = root / ".vintage" / "models" / project["v2"].name
    try:
        assert staging.deploy(v1, "winequality", 1).action == "started"
        # someone with the deploying user's rights swaps v2 in behind vintage's back
        admin_request(staging.admin_socket, "swap", path=str(v2), digest=recorded(v2))
        res = vintage("status")
        assert res.returncode == 1
        assert "SERVES ANOTHER MODEL" in res.stdout and f"staging serves {short(recorded(v2))}" in res.stderr
        as_json = json.loads(vintage("status", "--json").stdout)
        assert as_json["staging"]["tampered"] is True
        assert as_json["staging"]["served_digest"] == recorded(v2)
        again = staging.deploy(v1, "winequality", 1)
        assert again.action == "swapped"  # not "unchanged": the digest decides, not the version label
        assert vintage("status").returncode == 0
    finally:
        staging.stop()


# --- 4. exposure and metadata -----------------------------------------------------------------------------


def test_no_keys_means_loopback_only(project, tmp_path):
    for argv in (
        [sys.executable, "-m", "vintage.serving", "--model-dir", str(project["v1"]), "--host", "0.0.0.0"],
        [VINTAGE, "serve", "--model", str(project["v1"]), "--host", "0.0.0.0", "--port", str(free_port())],
    ):
        res = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=project["root"])
        assert res.returncode == 2, res.stderr
        assert "refusing to serve on 0.0.0.0 without API keys" in res.stderr
        assert "--allow-unauthenticated-network-access" in res.stderr


def test_metadata_needs_the_key_when_the_server_has_keys(project, tmp_path):
    keyfile = tmp_path / "keys"
    keyfile.write_text(KEY + "\n")
    keyfile.chmod(0o600)
    auth = {"Authorization": f"Bearer {KEY}"}
    with scoring_server(project["v1"], tmp_path, "--api-key-file", str(keyfile)) as srv:
        for path in ("/version", "/metrics", "/openapi.json"):
            assert srv.request("GET", path).status == 401, path
            assert srv.request("GET", path, headers={"Authorization": "Bearer wrong"}).status == 401
            assert srv.request("GET", path, headers=auth).status == 200, path
        for path in ("/health", "/ready", "/ping"):
            assert srv.request("GET", path).status == 200, path
    with scoring_server(project["v1"], tmp_path, "--api-key-file", str(keyfile), "--public-metadata") as srv:
        assert all(srv.request("GET", p).status == 200 for p in ("/version", "/metrics", "/openapi.json"))
        assert srv.post_json(ROW).status == 401  # scoring still needs the key
