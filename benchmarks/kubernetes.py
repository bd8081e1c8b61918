"""Kubernetes target: req/s per replica through the Service, and rollout time, on the real test cluster.

Run from the repo, as root, with the container tools and the Kubernetes binaries built (`make system-deps`),
and no other test cluster running on the machine::

    .venv/bin/python benchmarks/kubernetes.py [--duration 10] [--repeat 3] [--rollouts 3] [--json]

What it does, in one run on this machine:

1. Trains the default workload twice in a temporary project (v1: the repo's vintage.yaml; v2: another
   ElasticNet point, so the two versions have different images) and materialises both, as
   ``benchmarks/serving.py`` does.
2. Starts the test cluster (``tests/support/kube_cluster.py``: etcd, kube-apiserver, controller-manager,
   scheduler, a private dockerd, kubelet, kube-proxy, all on 127.0.0.1) and a registry on 127.0.0.1.
3. Throughput, ``--repeat`` times, interleaved: ``wrk -t2 -c16`` POSTing the first row of the red wine data
   with the API key (the load generator and Lua script of ``benchmarks/serving.py``) against
   * the anchor: the same image as one container under podman, published on 127.0.0.1 (what the
     ``container`` target runs; no kube-proxy);
   * the kubernetes target with 1 replica, through the Service (a NodePort on 127.0.0.1, kube-proxy's
     iptables rules), and with 2 replicas (wrk's 16 keep-alive connections are spread over the pods by
     kube-proxy, per connection).
   ``server`` cores are the CPU of the cluster's container tree (every pod) or of the container.
4. Rollout time, ``--rollouts`` times per replica count (2 and 3): ``KubernetesTarget.deploy`` of the
   other version (v1 <-> v2, images already pushed), wall clock from the call to its return: the apply,
   every new pod ready for ``min_ready_s`` (2 s), and every old pod gone (``prestop_s`` 5 s + drain). Also
   the time from the call until the Service answers with the new model, polled every 50 ms.

Every figure is a median. The machine has 2 cores shared by the cluster's own processes, the pods and wrk:
replicas beyond one add no CPU here, so the 2-replica row measures the cost of spreading, not a speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import serving
from image import UID, container
from serving import (
    MATERIALIZE_SCRIPT,
    TRAIN_TIMEOUT_S,
    bodies,
    child_env,
    ensure_wrk,
    run_checked,
    run_wrk,
    venv_tool,
    write_lua,
)

REPO = Path(__file__).resolve().parents[1]
# This file is named like the kubernetes client package: once the sibling benchmark modules are imported,
# its directory leaves the path, so `import kubernetes` finds the client.
HERE = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if str(Path(p or ".").resolve()) != HERE]
sys.modules.pop("kubernetes", None)
sys.path.insert(0, str(REPO / "tests"))

from support.containers import docker_registry  # noqa: E402
from support.kube_cluster import KubeCluster  # noqa: E402

CONNECTIONS = 16
PODS = -1
"""``server`` for run_wrk: the CPU of every pod (the containerd shims' process trees), not one process."""


def _pods_cpu_s(pid: int, _own: Any = serving.tree_cpu_s) -> float:
    if pid != PODS:
        return float(_own(pid))
    shims = [
        int(d.name)
        for d in Path("/proc").iterdir()
        if d.name.isdigit() and (d / "comm").exists() and _comm(d).startswith("containerd-shim")
    ]
    return sum(float(_own(p)) for p in shims)


def _comm(d: Path) -> str:
    try:
        return (d / "comm").read_text().strip()
    except OSError:
        return ""


serving.tree_cpu_s = _pods_cpu_s
V2_GRID = [{"alpha": 0.01, "l1_ratio": 0.5}]


def train_two(root: Path) -> tuple[Path, Path, Path]:
    """Train v1 (the repo's config) and v2 (another grid point); (project dir, v1 dir, v2 dir)."""
    import yaml

    project = root / "project"
    project.mkdir()
    spec = yaml.safe_load((REPO / "vintage.yaml").read_text())
    env = child_env()
    dirs = []
    for version, grid in ((1, None), (2, V2_GRID)):
        if grid is not None:
            spec["estimator"]["grid"] = grid
        (project / "vintage.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
        run_checked([venv_tool("vintage"), "train"], project, env, TRAIN_TIMEOUT_S)
        uri = f"sqlite:///{project / '.vintage' / 'mlflow.db'}"
        out = run_checked(
            [
                sys.executable,
                "-c",
                MATERIALIZE_SCRIPT,
                f"models:/winequality/{version}",
                str(root / "models"),
                uri,
            ],
            project,
            env,
            TRAIN_TIMEOUT_S,
        )
        dirs.append(Path(out.strip().splitlines()[-1]))
    return project, dirs[0], dirs[1]


def served_prediction(url: str, key: str, body: bytes) -> float | None:
    request = urllib.request.Request(
        url + "/invocations",
        data=body,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=2) as resp:
            return float(json.loads(resp.read())["predictions"][0])
    except OSError:
        return None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--duration", type=float, default=10.0, help="seconds per wrk load")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of discarded load first")
    p.add_argument("--repeat", type=int, default=3, help="loads per server (median)")
    p.add_argument("--rollouts", type=int, default=3, help="rollouts per replica count (median)")
    p.add_argument("--json", action="store_true", help="print every sample as JSON too")
    args = p.parse_args()
    wrk = ensure_wrk()
    from vintage.deploy.k8s.settings import KubernetesSettings
    from vintage.deploy.k8s.target import KubernetesTarget
    from vintage.image.build import build_image

    samples: list[dict[str, Any]] = []
    rps: dict[str, list[float]] = {}
    lat: dict[str, list[tuple[float, float]]] = {}
    rollouts: dict[int, list[float]] = {}
    switch: dict[int, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="vintage-k8s-bench-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)
        print("training v1 and v2...", file=sys.stderr, flush=True)
        project, v1, v2 = train_two(root)
        state = project / ".vintage"
        cli = venv_tool("vintage")
        run_checked([cli, "secrets", "create-scope", "production/serving"], project, child_env(), 60)
        run_checked(
            [cli, "secrets", "put", "-s", "production/serving", "-k", "primary", "--generate"],
            project,
            child_env(),
            60,
        )
        key = run_checked(
            [cli, "secrets", "get", "-s", "production/serving", "-k", "primary"], project, child_env(), 60
        ).strip()
        keys = root / "keys"
        keys.write_text(key + "\n")
        os.chown(keys, UID, UID)
        keys.chmod(0o400)
        body = bodies((1,))[1]
        lua = write_lua(root / "body1.lua", body, key)
        image = build_image(v1)
        (root / "registry").mkdir()
        with KubeCluster() as cluster, docker_registry(root / "registry") as registry:
            print(f"cluster up in {cluster.start_seconds:.1f} s", file=sys.stderr, flush=True)
            node_port = 30000 + secrets.randbelow(2700)

            def target(replicas: int) -> KubernetesTarget:
                settings = KubernetesSettings.model_validate(
                    {
                        "kubeconfig": str(cluster.kubeconfig),
                        "registry": registry,
                        "replicas": replicas,
                        "service_type": "NodePort",
                        "node_port": node_port,
                        "autoscaling": {"enabled": False},
                        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {}},
                    }
                )
                return KubernetesTarget(
                    "production", state, settings=settings, port=8082, key_scope="production/serving"
                )

            versions = [(v1, 1), (v2, 2)]
            target(1).deploy(v2, "winequality", 2)
            target(1).deploy(v1, "winequality", 1)  # both images pushed; v1 serves
            for i in range(args.repeat):
                for kind in ("container", "kubernetes, 1 replica", "kubernetes, 2 replicas"):
                    if kind == "container":
                        with container(image.reference, keys) as (port, _, pid):
                            run_wrk(wrk, lua, port, CONNECTIONS, args.warmup, pid)
                            s = run_wrk(wrk, lua, port, CONNECTIONS, args.duration, pid)
                    else:
                        target(1 if "1 replica" in kind else 2).deploy(v1, "winequality", 1)
                        run_wrk(wrk, lua, node_port, CONNECTIONS, args.warmup, PODS)
                        s = run_wrk(wrk, lua, node_port, CONNECTIONS, args.duration, PODS)
                    if s.errors:
                        raise SystemExit(f"{kind}: {s.errors} errors under load")
                    rps.setdefault(kind, []).append(s.rps)
                    lat.setdefault(kind, []).append((s.p50_ms, s.p99_ms))
                    samples.append({"repeat": i, "server": kind, "rps": s.rps, **s.__dict__})
                    print(
                        f"  {kind:24} {s.rps:8.0f} req/s (server {s.server_cores:.2f} cores, "
                        f"wrk {s.wrk_cores:.2f}, other {s.other_cores:.2f})",
                        file=sys.stderr,
                        flush=True,
                    )
            url = f"http://127.0.0.1:{node_port}"
            current = 0
            for replicas in (2, 3):
                t = target(replicas)
                t.deploy(versions[current][0], "winequality", versions[current][1])
                for _ in range(args.rollouts):
                    current = 1 - current
                    model_dir, version = versions[current]
                    before = served_prediction(url, key, body)
                    switched: list[float] = []
                    started = time.perf_counter()
                    done = threading.Event()

                    def watch(
                        before: float | None = before,
                        started: float = started,
                        switched: list[float] = switched,
                        done: threading.Event = done,
                    ) -> None:
                        while not done.is_set():
                            now = served_prediction(url, key, body)
                            if now is not None and now != before:
                                switched.append(time.perf_counter() - started)
                                return
                            time.sleep(0.05)

                    watcher = threading.Thread(target=watch, daemon=True)
                    watcher.start()
                    t.deploy(model_dir, "winequality", version)
                    took = time.perf_counter() - started
                    done.set()
                    watcher.join(timeout=5)
                    rollouts.setdefault(replicas, []).append(took)
                    if switched:
                        switch.setdefault(replicas, []).append(switched[0])
                    print(
                        f"  rollout to v{version}, {replicas} replicas: {took:.1f} s "
                        f"(new model answered after {switched[0] if switched else float('nan'):.1f} s)",
                        file=sys.stderr,
                        flush=True,
                    )
            target(3).stop()
    subprocess.run(["podman", "rmi", image.reference], capture_output=True, check=False)

    anchor = statistics.median(rps["container"])
    print(f"image {image.reference}, {CONNECTIONS} connections, 1 row, API key; medians of {args.repeat}")
    print()
    print("| server | req/s | per replica | vs container | p50 ms | p99 ms |")
    print("| --- | --- | --- | --- | --- | --- |")
    for kind, reps in (("container", 1), ("kubernetes, 1 replica", 1), ("kubernetes, 2 replicas", 2)):
        r = statistics.median(rps[kind])
        p50 = statistics.median(x[0] for x in lat[kind])
        p99 = statistics.median(x[1] for x in lat[kind])
        print(f"| {kind} | {r:.0f} | {r / reps:.0f} | {r / anchor:.0%} | {p50:.2f} | {p99:.2f} |")
    print()
    print("| rollout (v1 <-> v2) | complete (old pods gone) | new model first answers |")
    print("| --- | --- | --- |")
    for replicas in (2, 3):
        done_s = statistics.median(rollouts[replicas])
        first = f"{statistics.median(switch[replicas]):.1f} s" if switch.get(replicas) else "-"
        print(f"| {replicas} replicas (median of {args.rollouts}) | {done_s:.1f} s | {first} |")
    if args.json:
        print(json.dumps({"samples": samples, "rollouts": rollouts, "switch": switch}, indent=2))
    return 0


if __name__ == "__main__":
    if shutil.which("podman") is None:
        raise SystemExit("podman is not installed: run scripts/install-container-deps.sh as root")
    sys.exit(main())
