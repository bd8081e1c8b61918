"""The Kubernetes test cluster itself: a Deployment from the local registry, served through kube-proxy.

A 2-replica Deployment of a tiny image built here (pushed to the registry on 127.0.0.1, pulled by the node),
a NodePort Service reached on 127.0.0.1 through kube-proxy's iptables rules, every component listening on
loopback only, and no connection to the cloud metadata address from the kubelet or kube-proxy.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from support.containers import ComponentError
from support.kube_cluster import KubeCluster, KubeClusterError
from support.kube_images import ECHO_PORT, ECHO_UID, push_echo_image

pytestmark = [pytest.mark.slow, pytest.mark.kubernetes]

NAMESPACE = "default"
REPLICAS = 2
METADATA_ADDRESS = "169.254.169.254"
READY_TIMEOUT_S = 120.0
REQUESTS = 40


@dataclass
class Echo:
    """The deployed echo app: names, the NodePort, the pods, and `ss` snapshots taken while it started."""

    name: str
    image: str
    digest: str
    node_port: int = 0
    pods: list[str] = field(default_factory=list)
    sockets: list[str] = field(default_factory=list)


def _sockets() -> str:
    """Every TCP socket on the machine with its process (`ss -tanp`)."""
    return subprocess.run(["ss", "-tanp"], capture_output=True, text=True, check=True).stdout


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return str(resp.read().decode().strip())
    except (urllib.error.URLError, OSError):
        return None


@pytest.fixture(scope="module")
def echo(
    kube_cluster: KubeCluster, local_registry: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Echo]:
    """The echo image pushed to the registry, 2 replicas of it and a NodePort Service; deleted after."""
    from kubernetes import client

    name = f"echo-{uuid.uuid4().hex[:8]}"
    image = f"{local_registry}/vintage-test/echo:{name}"
    try:
        digest = push_echo_image(tmp_path_factory.mktemp("echo"), kube_cluster.docker_host, image)
    except ComponentError as exc:
        pytest.fail(str(exc), pytrace=False)
    app = Echo(name=name, image=image, digest=digest)
    labels = {"app": name}
    container = client.V1Container(
        name="echo",
        image=image,
        image_pull_policy="IfNotPresent",
        ports=[client.V1ContainerPort(container_port=ECHO_PORT)],
        readiness_probe=client.V1Probe(
            http_get=client.V1HTTPGetAction(path="/", port=ECHO_PORT), period_seconds=1
        ),
        security_context=client.V1SecurityContext(
            run_as_non_root=True,
            run_as_user=ECHO_UID,
            read_only_root_filesystem=True,
            allow_privilege_escalation=False,
            capabilities=client.V1Capabilities(drop=["ALL"]),
        ),
    )
    deployment = client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1DeploymentSpec(
            replicas=REPLICAS,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[container], termination_grace_period_seconds=5),
            ),
        ),
    )
    service = client.V1Service(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1ServiceSpec(
            type="NodePort",
            selector=labels,
            ports=[client.V1ServicePort(port=80, target_port=ECHO_PORT)],
        ),
    )
    with kube_cluster.api_client() as api:
        apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
        apps.create_namespaced_deployment(NAMESPACE, deployment)
        created = core.create_namespaced_service(NAMESPACE, service)
        app.node_port = created.spec.ports[0].node_port
        try:
            deadline = time.monotonic() + READY_TIMEOUT_S
            while True:
                app.sockets.append(_sockets())
                pods = core.list_namespaced_pod(NAMESPACE, label_selector=f"app={name}").items
                ready = [
                    p.metadata.name
                    for p in pods
                    if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
                ]
                if len(ready) == REPLICAS:
                    app.pods = sorted(ready)
                    break
                if time.monotonic() > deadline:
                    states = [(p.metadata.name, p.status.phase, p.status.container_statuses) for p in pods]
                    pytest.fail(f"pods not Ready after {READY_TIMEOUT_S:.0f} s: {states}", pytrace=False)
                time.sleep(0.5)
            yield app
        finally:
            # _preload_content=False: a 1.20 apiserver answers a Service delete with a Status, which
            # client 37 fails to read as a V1Service (the delete itself succeeds).
            try:
                apps.delete_namespaced_deployment(name, NAMESPACE, _preload_content=False)
            finally:
                core.delete_namespaced_service(name, NAMESPACE, _preload_content=False)


def test_a_second_node_on_the_machine_is_refused_before_anything_starts(tmp_path: Path):
    # Any process called kubelet stands for another node (its iptables chains would be shared with ours).
    fake = tmp_path / "kubelet"
    shutil.copy("/bin/sleep", fake)
    other = subprocess.Popen([str(fake), "30"])
    try:
        cluster = KubeCluster(root=tmp_path / "cluster")
        with pytest.raises(
            KubeClusterError, match=r"another Kubernetes node runs on this machine: .*kubelet"
        ):
            cluster.start()
        cluster.stop()
    finally:
        other.kill()
        other.wait()
    assert not (tmp_path / "cluster").exists()


def test_node_is_ready_with_its_components_on_loopback_only(kube_cluster: KubeCluster):
    listening = subprocess.run(["ss", "-tlnpH"], capture_output=True, text=True, check=True).stdout
    for component, pid in kube_cluster.pids.items():
        addresses = [line.split()[3] for line in listening.splitlines() if f"pid={pid}," in line]
        assert all(a.startswith("127.0.0.1:") for a in addresses), (component, addresses)
    assert addresses, "kube-proxy listens (healthz, metrics) and was found in the ss listing"
    assert kube_cluster.start_seconds < 120


def test_both_pods_ready_from_the_image_pulled_from_the_local_registry(kube_cluster: KubeCluster, echo: Echo):
    from kubernetes import client

    with kube_cluster.api_client() as api:
        pods = client.CoreV1Api(api).list_namespaced_pod(NAMESPACE, label_selector=f"app={echo.name}").items
    assert sorted(p.metadata.name for p in pods) == echo.pods
    for pod in pods:
        (status,) = pod.status.container_statuses
        assert status.ready
        assert status.image_id.endswith(echo.digest)  # the very image pushed, pulled by digest-checked ref
    pulled = kube_cluster.docker("image", "inspect", "--format", "{{json .RepoDigests}}", echo.image)
    assert pulled.returncode == 0 and echo.digest in pulled.stdout


def test_node_port_on_loopback_answers_from_both_pods_through_kube_proxy(echo: Echo):
    url = f"http://127.0.0.1:{echo.node_port}/"
    # The endpoints controller and kube-proxy add the second pod a moment after the first: keep asking
    # (new connection each time, so kube-proxy picks a pod at random) until both have answered.
    answers: list[str | None] = []
    deadline = time.monotonic() + 30
    while set(answers) - {None} != set(echo.pods) and time.monotonic() < deadline:
        answers.append(_get(url))
        if answers[-1] is None:
            time.sleep(0.5)
    assert set(answers) - {None} == set(echo.pods), f"answers from {url}: {answers[-REQUESTS:]}"
    tail = [_get(url) for _ in range(REQUESTS)]  # once both are in, every request is answered by one
    assert set(tail) <= set(echo.pods), tail


def test_kubelet_and_kube_proxy_never_contact_the_metadata_address(kube_cluster: KubeCluster, echo: Echo):
    for component in ("kubelet", "kube-proxy"):
        environ = Path(f"/proc/{kube_cluster.pids[component]}/environ").read_bytes().split(b"\0")
        assert b"AWS_EC2_METADATA_DISABLED=true" in environ
        assert not [v for v in environ if v.startswith(b"AWS_") and not v.startswith(b"AWS_EC2_METADATA_")]
    snapshots = [*echo.sockets, _sockets()]
    assert len(snapshots) > 1
    assert not [s for s in snapshots if METADATA_ADDRESS in s]
    log = kube_cluster.log_path("kubelet").read_text(errors="replace")
    assert METADATA_ADDRESS not in log
