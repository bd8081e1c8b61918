"""Session-wide components for the end-to-end tests: a registry on 127.0.0.1 and the Kubernetes test cluster.

Both start on first use only and stop when the session ends. Neither skips: a missing binary fails the test
that asked for it, with the command that installs it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.containers import ComponentError, docker_registry
from support.kube_cluster import KubeCluster, KubeClusterError


@pytest.fixture(scope="session")
def local_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """docker-registry on 127.0.0.1:<free port> for the session; yields ``127.0.0.1:PORT``."""
    try:
        with docker_registry(tmp_path_factory.mktemp("registry")) as address:
            yield address
    except ComponentError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def kube_cluster() -> Iterator[KubeCluster]:
    """The single-node Kubernetes test cluster (support.kube_cluster), started once per session (~20 s).

    Its dockerd pulls from ``local_registry`` (127.0.0.0/8 registries need no TLS). Fails, never skips, when
    the Kubernetes binaries are not built (``make system-deps`` builds them once per machine).
    """
    cluster = KubeCluster()
    try:
        cluster.start()
    except KubeClusterError as exc:
        cluster.stop()
        pytest.fail(f"the Kubernetes test cluster did not start: {exc}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()
