"""The container deploy target with the real builder (buildah), the real runtime (podman) and real HTTP:
`vintage run` deploys staging as a container, the original pipeline's 10-row split-JSON request is
answered with and without the key, the key is nowhere in the container's configuration, a new key is
taken by the next deploy, an update switches containers, a model that cannot start never replaces the
serving one, a failed smoke test's rollback (the gate's `restore(previous)`) brings the previous container
back, then `status`, `rollback` and `stop`. Every container a test starts is removed at teardown, by its
project label, even on failure."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.scoring import free_port

REPO = Path(__file__).resolve().parents[2]
VINTAGE = str(Path(sys.executable).with_name("vintage"))
PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs", "--events-backend", "file"]
GOOD = {
    "class": "sklearn.linear_model.ElasticNet",
    "params": {"random_state": 42},
    "grid": [{"alpha": 0.1, "l1_ratio": 0.1}],
}
BETTER = {**GOOD, "grid": [{"alpha": 0.01, "l1_ratio": 0.5}]}
# Its code ships with the model, but it needs pandas, which the image does not hold: it cannot load there.
BROKEN = {**GOOD, "class": "support.pandas_estimator.PandasElasticNet"}

# Needs podman, buildah, runc: `make test` installs them (scripts/install-container-deps.sh); never skipped.
pytestmark = [pytest.mark.slow]


class Project:
    """A throwaway project: staging as a container with API keys, production local."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.spec = yaml.safe_load((REPO / "vintage.yaml").read_text())
        self.spec["estimator"] = GOOD
        self.spec["environments"] = {
            "staging": {
                "target": "container",
                "port": free_port(),
                "api_keys": True,
                # a file per 20 rows (the smoke test's 10, then a 10-row request), none by age: rows
                # beyond stay in the server's memory until it stops
                "inference_log": {"sample": 1.0, "rotate_rows": 20, "rotate_seconds": 3600},
            },
            "production": {"port": free_port()},
        }
        self.write()
        state = (root / ".vintage").resolve()
        self.label = f"vintage.project={hashlib.sha256(str(state).encode()).hexdigest()[:8]}"

    def write(self, **changes: Any) -> None:
        self.spec.update(changes)
        (self.root / "vintage.yaml").write_text(yaml.safe_dump(self.spec, sort_keys=False))

    def vintage(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [VINTAGE, *args],
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "PYTHONPATH": str(REPO / "tests"), "COLUMNS": "250"},
        )

    def key(self, env: str) -> str:
        res = self.vintage("secrets", "get", "-s", f"{env}/serving", "-k", "primary")
        assert res.returncode == 0, res.stderr
        return res.stdout.strip()

    @property
    def port(self) -> int:
        return int(self.spec["environments"]["staging"]["port"])

    def status(self) -> dict[str, Any]:
        res = self.vintage("status", "--json")
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)

    def containers(self) -> dict[str, str]:
        """This project's containers, name -> state."""
        out = subprocess.run(
            [*PODMAN, "ps", "-a", "--filter", f"label={self.label}", "--format", "json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return {c["Names"][0]: c["State"] for c in json.loads(out or "[]")}

    def inspect(self, name: str) -> dict[str, Any]:
        out = subprocess.run(
            [*PODMAN, "container", "inspect", name], capture_output=True, text=True, check=True
        )
        return json.loads(out.stdout)[0]


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    proj = Project(tmp_path)
    for env in ("staging", "production"):
        assert proj.vintage("secrets", "create-scope", f"{env}/serving").returncode == 0
        res = proj.vintage("secrets", "put", "-s", f"{env}/serving", "-k", "primary", "--generate")
        assert res.returncode == 0, res.stderr
    try:
        yield proj
    finally:
        for env in ("staging", "production"):
            proj.vintage("stop", env, timeout=120)
        left = subprocess.run(
            [*PODMAN, "ps", "-a", "-q", "--filter", f"label={proj.label}"], capture_output=True, text=True
        ).stdout.split()
        if left:
            subprocess.run([*PODMAN, "rm", "--force", *left], capture_output=True)


def ten_rows() -> bytes:
    """The original pipeline's request: the first 10 rows of the red wines as split JSON."""
    path = REPO / "src" / "vintage" / "data" / "wine_quality" / "winequality-red.csv"
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh, delimiter=";"))
    columns = rows[0][:-1]  # without the target, quality
    data = [[float(v) for v in row[:-1]] for row in rows[1:11]]
    return json.dumps({"dataframe_split": {"columns": columns, "data": data}}).encode()


def http(
    port: int, method: str, path: str, body: bytes | None = None, key: str | None = None
) -> tuple[int, Any]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    try:
        return resp.status, json.loads(raw)
    except ValueError:
        return resp.status, raw


def smoke_rows() -> int:
    from vintage.config.models import PipelineSpec

    return PipelineSpec().smoke_rows


def logged_rows(directory: Path) -> int:
    import numpy as np

    total = 0
    for path in directory.glob("*.npz"):
        with np.load(path, allow_pickle=False) as z:
            total += len(z["prediction"])
    return total


def served_version(project: Project) -> int:
    status, body = http(project.port, "GET", "/version", key=project.key("staging"))
    assert status == 200, body
    return int(body["version"])


def test_staging_as_a_container_keys_update_failed_start_smoke_rollback_status_stop(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vintage.config import load_spec
    from vintage.deploy.base import Deployment
    from vintage.pipeline import ops

    # -- first release: staging runs v1 in a container ------------------------------------------------
    res = project.vintage("run", "--auto-approve")
    assert res.returncode == 0, res.stderr
    staging = project.status()["staging"]
    first = staging["container"]
    assert first.startswith("vintage-staging-") and staging["version"] == 1 and staging["healthy"]
    assert staging["image"].startswith("localhost/vintage-winequality:v1-")
    assert staging["image_digest"].startswith("sha256:")
    assert project.containers() == {first: "running"}
    # the release record names the image staging runs (the original pipeline's image.json)
    record = json.loads(project.vintage("release", "show", "--json").stdout)
    assert record["deployments"]["staging"]["image"] == {
        "reference": staging["image"],
        "digest": staging["image_digest"],
    }
    assert "image" not in record["deployments"]["production"]  # production runs as a local process

    # the 10-row split-JSON request, with the key and without
    key = project.key("staging")
    status, body = http(project.port, "POST", "/invocations", ten_rows(), key=key)
    assert status == 200, body
    assert len(body["predictions"]) == 10 and all(isinstance(p, float) for p in body["predictions"])
    assert http(project.port, "POST", "/invocations", ten_rows())[0] == 401
    assert http(project.port, "POST", "/invocations", ten_rows(), key="x" * 32)[0] == 401

    # the key reaches the container as a read-only mounted file of its user, and nowhere else
    info = project.inspect(first)
    config = json.dumps(
        [
            info["Config"].get("Env"),
            info.get("Args"),
            info["Config"].get("Cmd"),
            info["Config"].get("Entrypoint"),
            info["Config"].get("Labels"),
        ]
    )
    assert key not in config and key not in json.dumps(info)
    assert info["HostConfig"]["ReadonlyRootfs"] is True
    bindings = [b for v in info["HostConfig"]["PortBindings"].values() for b in v]
    assert [(b["HostIp"], b["HostPort"]) for b in bindings] == [("127.0.0.1", str(project.port))]
    mounts = [m for m in info["Mounts"] if m["Destination"] == "/run/secrets/vintage"]
    assert len(mounts) == 1 and mounts[0]["RW"] is False
    key_file = Path(mounts[0]["Source"]) / "keys"
    assert key_file.read_text().split()[0] == key
    for path, mode in ((key_file, 0o400), (key_file.parent, 0o500)):
        st = path.stat()
        assert (stat.S_IMODE(st.st_mode), st.st_uid) == (mode, 10001)
    assert stat.S_IMODE((project.root / ".vintage" / "envs" / "staging").stat().st_mode) == 0o700

    # the inference log leaves the container through a read-write mount of a directory of its user;
    # `vintage monitor` reads it (.npz: the image has no pyarrow) against the model materialised here
    [log_mount] = [m for m in info["Mounts"] if m["Destination"] == "/var/lib/vintage/inference"]
    log_dir = project.root / ".vintage" / "envs" / "staging" / "inference"
    assert log_mount["RW"] is True and Path(log_mount["Source"]) == log_dir.resolve()
    st = log_dir.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o700, 10001)
    logged = smoke_rows() + 10  # the staging smoke test's rows, then the 10-row request: one file
    assert logged == 20
    deadline = time.monotonic() + 30
    while logged_rows(log_dir) < logged and time.monotonic() < deadline:
        time.sleep(0.5)
    files = sorted(log_dir.iterdir())
    assert files and all(f.name.endswith(".npz") for f in files)
    assert {stat.S_IMODE(f.stat().st_mode) for f in files} == {0o600}
    res = project.vintage("monitor", "staging", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.loads(res.stdout)
    assert report["sampled_rows"] == logged and report["model_versions"] == [1]
    assert report["prediction"]["flagged"] is False

    # -- update to v2: a new container serves, the old one is kept stopped --------------------------------
    assert http(project.port, "POST", "/invocations", ten_rows(), key=key)[0] == 200  # then v1 stops at once
    project.write(estimator=BETTER)
    res = project.vintage("run", "--auto-approve")
    assert res.returncode == 0, res.stderr
    # the 10 rows v1 still held in memory went to disk when it stopped (v2's smoke rows wait in v2's memory)
    assert logged_rows(log_dir) == logged + 10
    assert len(list(log_dir.glob("*.npz"))) == 2
    staging = project.status()["staging"]
    second = staging["container"]
    assert staging["version"] == 2 and second != first and served_version(project) == 2
    assert project.containers() == {first: "exited", second: "running"}
    assert not (key_file.parent).exists()  # the stopped container's key file is gone

    # -- deploying what serves: unchanged ------------------------------------------------------------
    monkeypatch.chdir(project.root)  # state_dir is relative to the working directory
    target = ops.target(load_spec(), "staging")
    current = target.status()
    assert current is not None and current.container == second
    again = target.deploy(Path(current.model_dir), current.model_name, current.version)
    assert again.action == "unchanged" and again.current.container == second

    # -- a new key in the scope: the next deploy rewrites the file and the server takes it (SIGHUP) ---------
    res = project.vintage("secrets", "put", "-s", "staging/serving", "-k", "primary", "--generate")
    assert res.returncode == 0, res.stderr
    old, key = key, project.key("staging")
    again = target.deploy(Path(current.model_dir), current.model_name, current.version)
    assert again.action == "unchanged" and again.current.container == second
    assert http(project.port, "POST", "/invocations", ten_rows(), key=key)[0] == 200
    assert http(project.port, "POST", "/invocations", ten_rows(), key=old)[0] == 401

    # -- a model that cannot start in the image never replaces the serving container --------------------
    project.write(estimator=BROKEN)
    res = project.vintage("run", "--auto-approve")
    assert res.returncode == 1
    assert "did not start" in res.stderr
    assert served_version(project) == 2 and project.status()["staging"]["container"] == second
    assert set(project.containers()) == {first, second}  # the pre-check container is gone

    # -- a failed smoke test rolls back: the gate calls restore(previous) with the deploy step's record -----
    runs = json.loads(project.vintage("runs", "list", "--json", "-n", "10").stdout)
    v2_run = next(r for r in runs if r["status"] == "succeeded")  # newest first: the v2 release
    deploy = next(
        step
        for stage in v2_run["stages"]
        if stage["name"] == "staging"
        for step in stage["steps"]
        if step["name"] == "deploy"
    )
    previous = Deployment(**deploy["output"]["previous"])  # as pipeline/gates.py reads it
    assert previous.container == first
    restored = target.restore(previous)
    assert restored is not None and restored.container == first and restored.version == 1
    assert served_version(project) == 1
    assert project.containers() == {first: "running", second: "exited"}
    status, body = http(project.port, "POST", "/invocations", ten_rows(), key=key)
    assert status == 200 and len(body["predictions"]) == 10

    # -- v2 again (its kept container, same image: no pre-check), then `vintage rollback` -------------------
    swapped = target.deploy(Path(current.model_dir), current.model_name, current.version)
    assert swapped.action == "swapped" and swapped.current.container == second
    assert served_version(project) == 2 and project.containers() == {first: "exited", second: "running"}
    res = project.vintage("rollback", "staging")
    assert res.returncode == 0, res.stderr
    assert served_version(project) == 1 and project.status()["staging"]["container"] == first

    # -- the container dies: `vintage status` says crashed, `vintage start` serves v1 again ----------------
    subprocess.run([*PODMAN, "kill", first], capture_output=True, check=True)
    shown = project.vintage("status", "--json")
    assert shown.returncode == 1, shown.stderr
    crashed = json.loads(shown.stdout)["staging"]["crashed"]
    assert crashed.startswith(f"its container {first} exited with code 137"), crashed
    res = project.vintage("start", "staging")
    assert res.returncode == 0 and res.stderr.rstrip().endswith(" started"), res.stderr
    assert served_version(project) == 1 and project.status()["staging"]["container"] == first

    # -- status, the audit trail, stop -----------------------------------------------------------------
    table = project.vintage("status")
    assert table.returncode == 0 and "vintage-staging-" in table.stdout
    events = json.loads(project.vintage("audit", "--json", "--limit", "1000").stdout)
    staging = [(e["action"], e["outcome"]) for e in events if e["target"] == "staging"]
    assert ("deploy", "failed") in staging and ("rollback", "ok") in staging
    res = project.vintage("stop", "staging")
    assert res.returncode == 0 and "stopped" in res.stderr
    assert project.status()["staging"] is None
    assert ("stop", "ok") in [
        (e["action"], e["outcome"])
        for e in json.loads(project.vintage("audit", "--json", "--limit", "1000").stdout)
    ]
    assert project.containers() == {}
    assert list((project.root / ".vintage" / "envs" / "staging" / "keys").iterdir()) == []
