"""Production on a real single-node Kubernetes cluster (etcd, kube-apiserver, controller-manager, scheduler,
kubelet on a private dockerd, kube-proxy; all on 127.0.0.1), images from a registry on 127.0.0.1.

One scenario, in order (module-scoped project):
1. `vintage run --auto-approve`: staging as a container, production on Kubernetes; the original pipeline's
   10-row split-JSON request with the key is answered through the Service (kube-proxy NodePort on loopback);
   no key is 401; status shows ready/desired replicas and the image digest.
2. A better model (v2) is released by `vintage run` under constant load through the Service: 0 failed
   requests, and the load saw both models' predictions (the update happened under it).
3. A broken v3 (its pods cannot become ready) is rolled back automatically: the deploy fails naming the
   rollback, v2 serves all along, the audit trail says so.
4. Key rotation: the scope's new key works, the old one is refused once `vintage deploy keys` returns.
5. `vintage deploy render --check`: manifests without key values pass a server-side dry run.
6. `vintage rollback production` serves v1 again; `vintage stop production` scales to zero.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.scoring import free_port

REPO = Path(__file__).resolve().parents[2]
VINTAGE = str(Path(sys.executable).with_name("vintage"))
GOOD = {
    "class": "sklearn.linear_model.ElasticNet",
    "params": {"random_state": 42},
    "grid": [{"alpha": 0.1, "l1_ratio": 0.1}],
}
BETTER = {**GOOD, "grid": [{"alpha": 0.01, "l1_ratio": 0.5}]}
FEATURES = yaml.safe_load((REPO / "vintage.yaml").read_text())["data"]["features"]
# The first red wine, as the original pipeline's smoke request sends it (split orientation).
ROW = {
    "dataframe_split": {
        "columns": FEATURES,
        "data": [[7.4, 0.7, 0.0, 1.9, 0.076, 11.0, 34.0, 0.9978, 3.51, 0.56, 9.4]],
    }
}

pytestmark = [pytest.mark.slow, pytest.mark.kubernetes]


class Project:
    """A throwaway project: staging as a container, production on the test cluster."""

    def __init__(self, root: Path, kubeconfig: Path, registry: str) -> None:
        self.root = root
        self.node_port = random.randint(30100, 32700)
        self.spec = yaml.safe_load((REPO / "vintage.yaml").read_text())
        self.spec["estimator"] = GOOD
        self.spec["environments"] = {
            "staging": {"target": "container", "port": free_port()},
            "production": {
                "target": "kubernetes",
                "port": 8082,
                "kubeconfig": str(kubeconfig),
                "registry": registry,
                "replicas": 2,
                "service_type": "NodePort",
                "node_port": self.node_port,
                "rollout_timeout_s": 60,
                "prestop_s": 3,
                "drain_s": 10,
                "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}},
            },
        }
        self.write()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.node_port}"

    def write(self) -> None:
        (self.root / "vintage.yaml").write_text(yaml.safe_dump(self.spec, sort_keys=False))

    def vintage(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [VINTAGE, *args],
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "COLUMNS": "250"},
        )

    def key(self) -> str:
        res = self.vintage("secrets", "get", "-s", "production/serving", "-k", "primary")
        assert res.returncode == 0, res.stderr
        return res.stdout.strip()

    def status(self) -> dict[str, Any]:
        res = self.vintage("status", "--json")
        assert res.returncode == 0, res.stdout + res.stderr
        return json.loads(res.stdout)


def request(url: str, path: str, key: str | None, body: Any = None, timeout: float = 10) -> tuple[int, bytes]:
    """One request on a fresh connection (kube-proxy picks a pod per connection)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        conn.request("POST" if body is not None else "GET", path, json.dumps(body) if body else None, headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def served_version(project: Project, key: str) -> int:
    status, body = request(project.url, "/version", key)
    assert status == 200, body
    return int(json.loads(body)["version"])


class Load:
    """Constant load through the Service: ``threads`` clients, one request per fresh connection."""

    def __init__(self, url: str, key: str, threads: int = 3) -> None:
        self.url, self.key = url, key
        self.stop = threading.Event()
        self.ok = 0
        self.failures: list[str] = []
        self.predictions: Counter[float] = Counter()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                status, body = request(self.url, "/invocations", self.key, ROW)
                ok = status == 200
                why = f"{status}: {body[:120]!r}"
            except (OSError, http.client.HTTPException) as exc:
                ok, why = False, f"{exc.__class__.__name__}: {exc}"
            with self.lock:
                if ok:
                    self.ok += 1
                    self.predictions[round(json.loads(body)["predictions"][0], 9)] += 1
                else:
                    self.failures.append(why)
            time.sleep(0.01)

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)


@pytest.fixture(scope="module")
def project(
    tmp_path_factory: pytest.TempPathFactory, kube_cluster: Any, local_registry: str
) -> Iterator[Project]:
    proj = Project(tmp_path_factory.mktemp("k8s-project"), Path(kube_cluster.kubeconfig), local_registry)
    assert proj.vintage("secrets", "create-scope", "production/serving").returncode == 0
    res = proj.vintage("secrets", "put", "-s", "production/serving", "-k", "primary", "--generate")
    assert res.returncode == 0, res.stderr
    try:
        yield proj
    finally:
        proj.spec["environments"]["production"]["stop"] = "delete"
        proj.write()
        proj.vintage("stop", "production", timeout=120)
        proj.vintage("stop", "staging", timeout=120)


def test_run_releases_production_on_kubernetes_and_answers_through_the_service(project: Project) -> None:
    res = project.vintage("run", "--auto-approve")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    key = project.key()
    rows = yaml.safe_load((REPO / "vintage.yaml").read_text())["data"]["features"]
    wine = (REPO / "src/vintage/data/wine_quality/winequality-red.csv").read_text().splitlines()
    header = [h.strip('"') for h in wine[0].split(";")]
    data = [[float(v) for v in line.split(";")] for line in wine[1:11]]
    idx = [header.index(c) for c in rows]
    body = {"dataframe_split": {"columns": rows, "data": [[r[i] for i in idx] for r in data]}}
    status, answer = request(project.url, "/invocations", key, body)
    assert status == 200, answer
    assert len(json.loads(answer)["predictions"]) == 10
    assert request(project.url, "/invocations", None, body)[0] == 401
    assert request(project.url, "/invocations", "x" * 40, body)[0] == 401
    prod = project.status()["production"]
    assert prod["target"] == "kubernetes" and prod["version"] == 1
    assert prod["replicas"] == 2 and prod["ready_replicas"] == 2 and prod["healthy"]
    assert prod["image"].endswith(prod["image_digest"]) and "@sha256:" in prod["image"]
    assert prod["url"] == project.url
    table = project.vintage("status")
    assert "2/2 pods ready" in table.stdout, table.stdout
    assert project.status()["staging"]["target"] == "container"


def test_a_new_version_rolls_out_under_load_with_no_failed_request(project: Project) -> None:
    key = project.key()
    project.spec["estimator"] = BETTER
    project.write()
    with Load(project.url, key) as load:
        time.sleep(3)
        res = project.vintage("run", "--auto-approve")
        time.sleep(3)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert load.failures == [], load.failures[:10]
    assert load.ok > 100
    assert len(load.predictions) == 2, load.predictions  # v1's answers, then v2's: the update ran under load
    assert served_version(project, key) == 2
    assert project.status()["production"]["revision"] == 2


def test_a_release_whose_pods_never_become_ready_is_rolled_back_while_the_old_pods_serve(
    project: Project,
) -> None:
    from vintage.config import load_spec
    from vintage.deploy.k8s.target import KubernetesTarget
    from vintage.errors import DeployError

    key = project.key()
    # v3: the same model directory with a copy re-labelled version 3, and pods far too small to start the
    # server (killed for memory before /ready ever answers).
    settings = project.spec["environments"]["production"]
    settings["resources"] = {"requests": {"cpu": "50m", "memory": "16Mi"}, "limits": {"memory": "16Mi"}}
    settings["rollout_timeout_s"] = 40
    project.write()
    spec = load_spec(project.root / "vintage.yaml")
    spec = spec.model_copy(update={"state_dir": (project.root / ".vintage").resolve()})
    target = KubernetesTarget.from_spec(spec, "production")
    last = target.history()[-1]
    with Load(project.url, key, threads=2) as load:
        started = time.monotonic()
        with pytest.raises(DeployError) as info:
            target.deploy(Path(last.model_dir), last.model_name, 3)
        took = time.monotonic() - started
    assert "the rollout of winequality v3 to production failed" in info.value.headline
    assert "rolled back to revision" in info.value.headline and "v2 serves" in info.value.headline
    assert took < 120
    assert load.failures == [], load.failures[:10]
    assert served_version(project, key) == 2
    audit = project.vintage("audit", "--json")
    events = [
        (e["action"], e["outcome"]) for e in json.loads(audit.stdout) if e["environment"] == "production"
    ]
    assert events[-2:] == [("rollback", "ok"), ("deploy", "failed")], events
    settings["resources"] = {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}}
    settings["rollout_timeout_s"] = 60
    project.write()


def test_key_rotation_restarts_the_pods_and_refuses_the_old_key(project: Project) -> None:
    old = project.key()
    res = project.vintage("secrets", "put", "-s", "production/serving", "-k", "primary", "--generate")
    assert res.returncode == 0, res.stderr
    new = project.key()
    assert new != old
    res = project.vintage("deploy", "keys", "production")
    assert res.returncode == 0, res.stdout + res.stderr
    assert new not in res.stdout + res.stderr and old not in res.stdout + res.stderr
    for _ in range(20):  # every pod, on fresh connections spread over them
        assert request(project.url, "/version", old)[0] == 401
        assert request(project.url, "/version", new)[0] == 200


def test_render_writes_manifests_without_keys_that_pass_a_server_side_dry_run(
    project: Project, tmp_path: Path
) -> None:
    out = tmp_path / "manifests"
    res = project.vintage("deploy", "render", "production", "--output", str(out), "--check")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "server-side dry run" in res.stderr
    kinds = sorted(yaml.safe_load(p.read_text())["kind"] for p in out.iterdir())
    assert kinds == ["Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Secret", "Service"]
    key = project.key()
    for path in out.iterdir():
        assert key not in path.read_text(), path.name
    secret = yaml.safe_load((out / "secret-vintage-production-keys.yaml").read_text())
    assert "data" not in secret and "stringData" not in secret
    stream = project.vintage("deploy", "render", "production")
    assert stream.returncode == 0 and len(list(yaml.safe_load_all(stream.stdout))) == 5


def test_rollback_serves_the_previous_version_and_stop_scales_to_zero(project: Project) -> None:
    key = project.key()
    res = project.vintage("rollback", "production")
    assert res.returncode == 0, res.stdout + res.stderr
    assert served_version(project, key) == 1
    res = project.vintage("stop", "production")
    assert res.returncode == 0 and "stopped" in res.stderr, res.stderr
    assert project.status()["production"] is None
    apps, core = cluster_apis(project)
    assert apps.read_namespaced_deployment("vintage-production", "default").spec.replicas == 0
    assert core.read_namespaced_service("vintage-production", "default").spec.type == "NodePort"
    # stop: delete removes every object vintage made for the environment
    project.spec["environments"]["production"]["stop"] = "delete"
    project.write()
    res = project.vintage("stop", "production")
    assert res.returncode == 0, res.stderr
    assert not [
        d for d in apps.list_namespaced_deployment("default").items if d.metadata.name.startswith("vintage")
    ]
    assert [s.metadata.name for s in core.list_namespaced_service("default").items] == ["kubernetes"]
    assert not [
        s for s in core.list_namespaced_secret("default").items if s.metadata.name.startswith("vintage")
    ]


def cluster_apis(project: Project) -> tuple[Any, Any]:
    from kubernetes import client, config

    api = config.new_client_from_config(str(project.spec["environments"]["production"]["kubeconfig"]))
    return client.AppsV1Api(api), client.CoreV1Api(api)
