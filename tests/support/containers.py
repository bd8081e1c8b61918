"""A docker-registry and a private dockerd for the tests, each on loopback / in its own directory.

Both are context managers that stop what they started by PID. The registry serves plain HTTP on
127.0.0.1:<free port>: docker, podman, buildah and skopeo treat 127.0.0.0/8 registries as insecure by default
(no TLS needed), and the kubelet's dockerd pulls from it the same way.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

from support.servers import free_port, log_tail, signal_pid, wait_gone

REGISTRY_START_TIMEOUT_S = 30.0
DOCKERD_START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


class ComponentError(RuntimeError):
    """A test component did not start or died; the message ends with the tail of its log."""


def registry_config(root: Path, port: int) -> Path:
    """Write a docker-registry configuration (storage under ``root/data``, 127.0.0.1:``port``)."""
    config = root / "registry.yml"
    config.write_text(
        "version: 0.1\nlog: {level: warn}\n"
        f"storage:\n  filesystem: {{rootdirectory: {root / 'data'}}}\n  delete: {{enabled: true}}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n",
        encoding="utf-8",
    )
    return config


@contextlib.contextmanager
def docker_registry(root: Path) -> Iterator[str]:
    """Run ``docker-registry`` on 127.0.0.1:<free port> with storage in ``root``; yield ``127.0.0.1:PORT``.

    Raises:
        ComponentError: docker-registry is missing, or did not answer /v2/ within 30 s.
    """
    exe = shutil.which("docker-registry")
    if exe is None:
        raise ComponentError("docker-registry is missing (hint: bash scripts/install-container-deps.sh)")
    port = free_port()
    config = registry_config(root, port)
    log_path = root / "registry.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([exe, "serve", str(config)], stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + REGISTRY_START_TIMEOUT_S
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2):
                        break
                except (urllib.error.URLError, OSError):
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise ComponentError(
                            f"docker-registry did not start; last lines of its log:\n{log_tail(log_path)}"
                        ) from None
                    time.sleep(0.1)
            yield f"127.0.0.1:{port}"
        finally:
            stop_pids([proc.pid], STOP_TIMEOUT_S)
            proc.wait()


def stop_pids(pids: Sequence[int], timeout: float) -> None:
    """SIGTERM each live pid, wait up to ``timeout``, then SIGKILL the survivors and wait for them."""
    for pid in pids:
        signal_pid(pid, signal.SIGTERM)
    if not wait_gone(pids, timeout):
        for pid in pids:
            signal_pid(pid, signal.SIGKILL)
        wait_gone(pids, 10.0)


def docker_env(host: str) -> dict[str, str]:
    """``os.environ`` with DOCKER_HOST set to ``host`` (a ``unix://`` URL)."""
    return {**os.environ, "DOCKER_HOST": host}


def dockerd_argv(exe: str, root: Path) -> list[str]:
    """The command line of a dockerd whose socket, data, state and pidfile all live under ``root``.

    It reads no /etc/docker/daemon.json (an empty config file of its own instead).
    """
    config = root / "daemon.json"
    config.write_text("{}\n", encoding="utf-8")
    return [
        exe,
        "--config-file",
        str(config),
        "--host",
        f"unix://{root / 'docker.sock'}",
        "--data-root",
        str(root / "data"),
        "--exec-root",
        str(root / "exec"),
        "--pidfile",
        str(root / "dockerd.pid"),
    ]


def wait_dockerd(proc: subprocess.Popen[bytes], host: str, log_path: Path, timeout: float) -> None:
    """Poll ``docker version`` against ``host`` until it answers.

    Raises:
        ComponentError: dockerd exited, or did not answer within ``timeout`` seconds.
    """
    env = docker_env(host)
    deadline = time.monotonic() + timeout
    while subprocess.run(["docker", "version"], env=env, capture_output=True).returncode != 0:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise ComponentError(f"dockerd did not start; last lines of its log:\n{log_tail(log_path)}")
        time.sleep(0.2)


@contextlib.contextmanager
def private_dockerd(
    extra: Sequence[str] = ("--bridge=none", "--iptables=false", "--ip6tables=false"),
) -> Iterator[str]:
    """A dockerd of our own (by default no bridge, no iptables) in a temp dir; yield its ``unix://`` URL.

    Raises:
        ComponentError: dockerd is missing or did not start.
    """
    exe = shutil.which("dockerd")
    if exe is None:
        raise ComponentError("dockerd is missing (hint: bash scripts/install-container-deps.sh)")
    root = Path(tempfile.mkdtemp(prefix="vintage-dockerd-", dir="/tmp"))  # short: socket paths are limited
    host = f"unix://{root / 'docker.sock'}"
    log_path = root / "dockerd.log"
    try:
        with log_path.open("wb") as log:
            proc = subprocess.Popen([*dockerd_argv(exe, root), *extra], stdout=log, stderr=log)
            try:
                wait_dockerd(proc, host, log_path, DOCKERD_START_TIMEOUT_S)
                yield host
            finally:
                stop_pids([proc.pid], STOP_TIMEOUT_S)
                proc.wait()
    finally:
        shutil.rmtree(root, ignore_errors=True)
