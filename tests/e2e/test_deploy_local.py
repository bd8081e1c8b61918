"""The local deploy target with real server processes and real HTTP: start, hot swap under load, rollback,
status, stop, stale pid files, failed starts, a taken port, API keys, and a server outliving its deployer."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.scoring import free_port
from vintage import audit
from vintage.deploy.local import LocalTarget
from vintage.errors import DeployError
from vintage.model.digest import recorded, short

REPO = Path(__file__).resolve().parents[2]
VINTAGE = str(Path(sys.executable).with_name("vintage"))
ROW = {"inputs": [[7.4, 0.7, 0.0, 1.9, 0.076, 11.0, 34.0, 0.9978, 3.51, 0.56, 9.4]]}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two materialised versions of winequality (default grid -> v1, alpha 0.05 -> v2), and a broken one."""
    proj = tmp_path_factory.mktemp("deploy-project")
    shutil.copy(REPO / "vintage.yaml", proj / "vintage.yaml")
    run = {"cwd": proj, "capture_output": True, "text": True, "timeout": 300}
    res = subprocess.run([VINTAGE, "train"], **run)  # type: ignore[call-overload]
    assert res.returncode == 0, res.stderr
    spec = yaml.safe_load((proj / "vintage.yaml").read_text())
    spec["estimator"]["grid"] = [{"alpha": 0.05, "l1_ratio": 0.5}]
    (proj / "vintage.yaml").write_text(yaml.safe_dump(spec))
    res = subprocess.run([VINTAGE, "train"], **run)  # type: ignore[call-overload]
    assert res.returncode == 0, res.stderr
    from vintage.model.materialize import materialize

    uri = f"sqlite:///{proj / '.vintage' / 'mlflow.db'}"
    from vintage.model.digest import write_manifest

    broken = proj / "models" / "broken"
    broken.mkdir(parents=True)
    (broken / "MLmodel").write_text("flavors: [not, a, mapping]\n")
    write_manifest(broken)  # materialised as vintage would, so the server gets to load (and refuse) it
    return {
        "v1": materialize("models:/winequality/1", proj / "models", tracking_uri=uri),
        "v2": materialize("models:/winequality/2", proj / "models", tracking_uri=uri),
        "broken": broken,
    }


@pytest.fixture
def make_target(tmp_path: Path, models: dict[str, Path]) -> Iterator[Callable[..., LocalTarget]]:
    """LocalTarget factory (state in tmp_path, a free port, the module's model store); every server is
    stopped at teardown."""
    made: list[LocalTarget] = []

    def make(environment: str = "staging", **kwargs: Any) -> LocalTarget:
        kwargs.setdefault("port", free_port())
        kwargs.setdefault("model_store", models["v1"].parent)
        target = LocalTarget(environment, tmp_path / "state", **kwargs)
        made.append(target)
        return target

    yield make
    for target in made:
        target.stop()
        assert target.status() is None


def get(target: LocalTarget, path: str, key: str | None = None) -> tuple[int, bytes]:
    return request(target, "GET", path, key=key)


def request(
    target: LocalTarget, method: str, path: str, body: Any = None, key: str | None = None
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=30)
    try:
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def served_version(target: LocalTarget) -> str:
    status, body = get(target, "/version")
    assert status == 200, body
    return str(json.loads(body)["version"])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z":
            return False
    return True


def test_start_swap_under_load_unchanged_restore_status_stop(make_target, models):
    target = make_target()
    first = target.deploy(models["v1"], "winequality", 1)
    assert first.action == "started" and first.previous is None
    assert served_version(target) == "1"
    pid = int(target.pid_file.read_text())
    assert pid == first.current.pid and alive(pid)
    assert target.log_file.exists() and "starting winequality v1" in target.log_file.read_text()
    assert first.current.url == f"http://127.0.0.1:{target.port}"

    # v2 while a client scores without a pause: no request fails, same process
    counts = {"ok": 0, "failed": 0}
    done = threading.Event()

    def hammer() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=30)
        while not done.is_set():
            try:
                conn.request("POST", "/invocations", json.dumps(ROW), {"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                counts["ok" if resp.status == 200 else "failed"] += 1
            except (OSError, http.client.HTTPException):
                counts["failed"] += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=30)
        conn.close()

    client = threading.Thread(target=hammer)
    client.start()
    try:
        while counts["ok"] < 20 and not counts["failed"]:  # the client is scoring v1
            threading.Event().wait(0.01)
        second = target.deploy(models["v2"], "winequality", 2)
        scored = counts["ok"]
        while counts["ok"] < scored + 20 and not counts["failed"]:  # ... and goes on scoring v2
            threading.Event().wait(0.01)
    finally:
        done.set()
        client.join()
    assert counts["failed"] == 0 and counts["ok"] >= 40
    assert second.action == "swapped"
    assert second.current.pid == pid and second.previous is not None
    assert (second.previous.version, second.previous.model_dir) == (1, str(models["v1"].resolve()))
    assert served_version(target) == "2"

    again = target.deploy(models["v2"], "winequality", 2)
    assert again.action == "unchanged" and again.current.version == 2
    assert [d.version for d in target.history()] == [1, 2]

    restored = target.restore(second.previous)
    assert restored is not None and restored.version == 1 and restored.pid == pid
    assert served_version(target) == "1"

    status = target.status()
    assert status is not None
    assert (status.environment, status.model_name, status.version) == ("staging", "winequality", 1)
    assert status.model_dir == str(models["v1"].resolve())
    assert status.pid == pid and status.healthy and status.url == target.url and status.since
    assert [d.version for d in target.history()] == [1, 2, 1]
    saved = json.loads(target.history_file.read_text())
    assert [d["version"] for d in saved] == [1, 2, 1]

    assert target.stop() is True
    assert not alive(pid) and not target.pid_file.exists()
    assert target.status() is None
    assert target.stop() is False
    with pytest.raises(OSError):
        get(target, "/health")

    events = audit.events(target.state_dir)
    d1, d2 = (short(recorded(models[v])) for v in ("v1", "v2"))
    trail = [(e.action, e.target, e.outcome, e.detail) for e in events if e.action != "secret.read"]
    assert [t for t in trail if t[0] != "serve.swap"] == [
        ("deploy", "staging", "ok", f"winequality v1 ({d1}) started"),
        ("deploy", "staging", "ok", f"winequality v2 ({d2}) swapped"),
        ("deploy", "staging", "ok", f"winequality v2 ({d2}) unchanged"),
        ("rollback", "staging", "ok", "winequality v1 swapped"),
        ("stop", "staging", "ok", f"port {target.port}"),
    ]
    swaps = [t for t in trail if t[0] == "serve.swap"]  # recorded by the server itself
    assert [(t[2], t[3].split(": ", 1)[1]) for t in swaps] == [
        ("ok", f"winequality v1 ({d1}) -> winequality v2 ({d2})"),
        ("ok", f"winequality v2 ({d2}) -> winequality v1 ({d1})"),
    ]
    assert all("over the admin socket" in t[3] for t in swaps)


def test_restore_starts_a_gone_server_and_none_stops(make_target, models):
    target = make_target()
    first = target.deploy(models["v1"], "winequality", 1)
    target.stop()
    restored = target.restore(first.current)
    assert restored is not None and restored.version == 1 and restored.pid != first.current.pid
    assert served_version(target) == "1"
    assert target.restore(None) is None
    assert target.status() is None


def test_stale_pid_file_starts_fresh(make_target, models):
    target = make_target()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    target.dir.mkdir(parents=True)
    target.pid_file.write_text(f"{dead.pid}\n")
    assert target.status() is None and target.pid_file.exists()  # status only reads
    assert target.crashed() == (
        f"its server (pid {dead.pid}) is gone but was never stopped; its log: {target.log_file}"
    )

    outcome = target.deploy(models["v1"], "winequality", 1)
    assert outcome.action == "started" and outcome.current.pid != dead.pid
    assert int(target.pid_file.read_text()) == outcome.current.pid
    assert served_version(target) == "1"


def test_a_server_that_does_not_answer_is_replaced_and_a_foreign_pid_is_left_alone(make_target, models):
    target = make_target()
    target.dir.mkdir(parents=True)
    hung = subprocess.Popen(  # looks like a scoring server (its command line), never answers
        [sys.executable, "-c", "import time; time.sleep(120)", "vintage.serving"], start_new_session=True
    )
    foreign = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        target.pid_file.write_text(f"{hung.pid}\n")
        outcome = target.deploy(models["v1"], "winequality", 1)
        assert outcome.action == "started" and outcome.current.pid != hung.pid
        assert hung.wait(timeout=30) != 0  # killed
        target.stop()

        target.pid_file.write_text(f"{foreign.pid}\n")  # a recycled pid: some other program
        assert target.status() is None
        target.pid_file.write_text(f"{foreign.pid}\n")
        assert target.deploy(models["v1"], "winequality", 1).action == "started"
        assert foreign.poll() is None  # never signalled
    finally:
        for proc in (hung, foreign):
            proc.kill()
            proc.wait()


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="lists the workers through /proc")
def test_several_workers_follow_the_swap(make_target, models):
    target = make_target(workers=2)
    first = target.deploy(models["v1"], "winequality", 1)
    assert first.action == "started"
    pid = first.current.pid
    assert pid is not None
    workers = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    assert len(workers) >= 2
    assert target.deploy(models["v2"], "winequality", 2).action == "swapped"
    assert {served_version(target) for _ in range(20)} == {"2"}
    assert target.stop() is True
    assert not alive(pid) and not any(alive(w) for w in workers)


def test_model_that_fails_to_load(make_target, models):
    target = make_target()
    with pytest.raises(DeployError) as exc:
        target.deploy(models["broken"], "winequality", 3)
    err = exc.value
    assert "the server for staging did not start" in err.headline
    assert any("is not a scikit-learn model" in line for line in err.details), err.details  # from its log
    assert str(target.log_file) in (err.hint or "")
    assert not target.pid_file.exists() and target.status() is None and target.history() == []

    target.deploy(models["v1"], "winequality", 1)
    with pytest.raises(DeployError) as exc:
        target.deploy(models["broken"], "winequality", 3)
    assert "rejected winequality v3" in exc.value.headline
    assert "keeps serving" in exc.value.headline
    assert served_version(target) == "1"
    status = target.status()
    assert status is not None and status.version == 1 and status.healthy
    events = audit.events(target.state_dir, action="deploy")
    outcomes = [(e.outcome, re.sub(r" \(sha256:\w+\)", "", e.detail).split(":")[0]) for e in events]
    assert outcomes == [
        ("failed", "winequality v3"),
        ("ok", "winequality v1 started"),
        ("failed", "winequality v3"),
    ]


def test_port_in_use_names_the_port(make_target, models):
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        target = make_target(port=port)
        with pytest.raises(DeployError) as exc:
            target.deploy(models["v1"], "winequality", 1)
    assert f"port {port}" in exc.value.headline and "already in use" in exc.value.headline
    assert not target.pid_file.exists()


def test_server_outlives_the_deploying_process(make_target, models, tmp_path):
    target = make_target("production")
    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from vintage.deploy.local import LocalTarget\n"
        f"t = LocalTarget('production', Path({str(tmp_path / 'state')!r}), port={target.port}, "
        f"model_store=Path({str(models['v1'].parent)!r}))\n"
        f"o = t.deploy(Path({str(models['v1'])!r}), 'winequality', 1)\n"
        "print(json.dumps({'action': o.action, 'pid': o.current.pid}))\n"
    )
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    deployed = json.loads(res.stdout)
    assert deployed["action"] == "started"
    # the deploying process has exited; its server has not
    assert alive(deployed["pid"])
    assert served_version(target) == "1"
    status = target.status()
    assert status is not None and status.pid == deployed["pid"] and status.healthy
    assert target.deploy(models["v2"], "winequality", 2).action == "swapped"  # taken over by another process
    assert target.stop() is True
    assert not alive(deployed["pid"])


def test_api_keys_from_the_environment_scope(make_target, models, tmp_path):
    from vintage.secrets.local import LocalStore, generate_value
    from vintage.secrets.names import check_scope

    store = LocalStore(tmp_path / "state")
    scope = check_scope("production/serving")
    store.create_scope(scope)
    key = generate_value()
    store.put(scope, "primary", key)

    target = make_target("production", key_scope="production/serving", secrets={"providers": ["local"]})
    assert target.deploy(models["v1"], "winequality", 1).action == "started"
    assert request(target, "POST", "/invocations", ROW)[0] == 401
    assert request(target, "POST", "/invocations", ROW, key="x" * 43)[0] == 401
    assert request(target, "POST", "/invocations", ROW, key=key)[0] == 200
    # no admin surface on the scoring port, whatever key a client holds
    assert request(target, "POST", "/admin/model", {"path": str(models["v2"])}, key=key)[0] == 404
    assert get(target, "/version")[0] == 401  # metadata needs the key too
    assert get(target, "/version", key=key)[0] == 200

    assert target.deploy(models["v2"], "winequality", 2).action == "swapped"  # over the admin channel
    status, body = get(target, "/version", key=key)
    assert status == 200 and json.loads(body)["version"] == "2"
    assert key not in target.log_file.read_text()
    reads = audit.events(target.state_dir, action="secret.read", target="production/serving/primary")
    assert {(e.reader, e.outcome) for e in reads} == {("serve:production", "ok")}  # the deployer needs no key


def test_a_killed_server_shows_crashed_until_started_again_or_stopped(tmp_path, models):
    # `vintage status` tells a server that died from one that was stopped; `vintage start` serves the same
    # model again (recorded as a deploy); `vintage stop` acknowledges the crash.
    import signal

    from vintage.config import load_spec

    proj = tmp_path / "proj"
    proj.mkdir()
    raw = yaml.safe_load((REPO / "vintage.yaml").read_text())
    raw["environments"] = {"staging": {"port": free_port()}, "production": {"port": free_port()}}
    raw["state_dir"] = str(proj / ".vintage")  # (relative, it would be relative to this process's directory)
    (proj / "vintage.yaml").write_text(yaml.safe_dump(raw))
    store = proj / ".vintage" / "models"
    store.mkdir(parents=True)
    model_dir = Path(shutil.copytree(models["v1"], store / models["v1"].name))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([VINTAGE, *args], cwd=proj, capture_output=True, text=True, timeout=120)

    never = cli("start", "staging")
    assert never.returncode == 1
    assert never.stderr.startswith("error: nothing was ever deployed to staging"), never.stderr
    target = LocalTarget.from_spec(load_spec(proj / "vintage.yaml"), "staging")
    try:
        first = target.deploy(model_dir, "winequality", 1).current
        assert first.pid is not None
        os.killpg(first.pid, signal.SIGKILL)  # the server leads its session: it and its workers
        deadline = time.monotonic() + 30
        while alive(first.pid) and time.monotonic() < deadline:
            time.sleep(0.05)

        shown = cli("status", "--json")
        assert shown.returncode == 1, shown.stderr
        crashed = json.loads(shown.stdout)["staging"]["crashed"]
        assert crashed.startswith(f"its server (pid {first.pid}) is gone but was never stopped"), crashed
        assert json.loads(shown.stdout)["production"] is None  # never deployed: not crashed
        table = cli("status")
        assert table.returncode == 1 and "crashed" in table.stdout
        assert "staging has crashed: its server" in table.stderr
        assert "hint: serve it again: vintage start staging" in table.stderr

        started = cli("start", "staging")
        assert started.returncode == 0, started.stderr
        assert (
            f"staging: winequality v1 ({short(first.digest)}) at http://127.0.0.1:{target.port} started"
            in (started.stderr)
        )
        assert served_version(target) == "1"
        now = target.status()
        assert now is not None and now.pid not in (None, first.pid) and now.digest == first.digest
        again = cli("start", "staging")
        assert again.returncode == 0 and again.stderr.rstrip().endswith("was already serving"), again.stderr
        deploys = [e for e in audit.events(proj / ".vintage", limit=50) if e.action == "deploy"]
        assert [e.outcome for e in deploys] == ["ok", "ok"]  # the first deploy and the start

        assert cli("stop", "staging").returncode == 0
        stopped = cli("status", "--json")
        assert stopped.returncode == 0, stopped.stderr
        assert json.loads(stopped.stdout)["staging"] is None
    finally:
        target.stop()
