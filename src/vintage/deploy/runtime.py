"""A thin wrapper over a container runtime's command line (podman, or docker when configured).

podman runs with ``--runtime runc --cgroup-manager cgroupfs`` (crun and the systemd cgroup manager fail on
cgroups v1 hybrid hosts) and its default storage, which buildah shares: an image buildah built is visible
to podman at once. Every container gets lowered ulimits (runc cannot raise them where the host's hard
limits are low), a read-only root file system, a pids limit and a memory limit, and publishes its one port
on 127.0.0.1 only.

Nothing here puts a secret on a command line: secrets reach a container as files in a read-only bind
mount (see :mod:`vintage.deploy.container`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vintage.errors import DeployError
from vintage.redact import redact

RUNTIMES = ("podman", "docker")
CONTAINER_PORT = 8080
ULIMITS = ("nofile=1024:1024", "nproc=4096:4096")
COMMAND_TIMEOUT_S = 120.0
_INSTALL_HINT = {
    "podman": "install it: apt-get install -y podman runc (or scripts/install-container-deps.sh), "
    "or set environments.<env>.runtime: docker, or target: local",
    "docker": "install docker and start its daemon, or set environments.<env>.runtime: podman, "
    "or target: local",
}


@dataclass(frozen=True)
class RunSpec:
    """How to run one container.

    Attributes:
        name: container name.
        image: image reference or id.
        host_port: the port published on 127.0.0.1 (the container listens on :data:`CONTAINER_PORT`).
        labels: container labels.
        mounts: read-only bind mounts, host directory -> container directory.
        writable: read-write bind mounts, host directory -> container directory (the inference log).
        memory: memory limit (``"1g"``); ``None`` = none.
        pids_limit: most processes the container may run.
        args: arguments after the image (the image's command); never a secret.
    """

    name: str
    image: str
    host_port: int
    labels: Mapping[str, str] = field(default_factory=dict)
    mounts: Mapping[str, str] = field(default_factory=dict)
    writable: Mapping[str, str] = field(default_factory=dict)
    memory: str | None = None
    pids_limit: int = 256
    args: Sequence[str] = ()


class ContainerRuntime:
    """Runs ``podman`` or ``docker`` commands and reads their JSON.

    Args:
        name: ``podman`` or ``docker``.

    Raises:
        DeployError: the runtime's command is not installed (the hint says how to install it).
    """

    def __init__(self, name: str = "podman") -> None:
        if name not in RUNTIMES:
            raise DeployError(
                f"unknown container runtime {name!r}; expected one of: {', '.join(RUNTIMES)}",
                hint="set environments.<env>.runtime in vintage.yaml",
            )
        self.name = name
        path = shutil.which(name)
        if path is None:
            raise DeployError(
                f"the container target needs {name}, which is not installed", hint=_INSTALL_HINT[name]
            )
        self.binary = path

    @property
    def base(self) -> list[str]:
        """The command and the global options every call gets."""
        if self.name == "podman":
            return [
                self.binary,
                "--runtime",
                "runc",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
            ]
        return [self.binary]

    def _run(self, args: Sequence[str], *, check: bool = True, timeout: float = COMMAND_TIMEOUT_S) -> str:
        """Run one command; its stdout.

        Raises:
            DeployError: it failed (with ``check``) or timed out; the message holds its last error line.
        """
        cmd = [*self.base, *args]
        try:
            res = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired as exc:
            raise DeployError(f"`{self.name} {args[0]}` did not finish in {timeout:.0f} s") from exc
        if check and res.returncode != 0:
            lines = [line for line in res.stderr.splitlines() if line.strip()]
            last = redact(lines[-1])[:300] if lines else f"exit code {res.returncode}"
            raise DeployError(
                f"`{self.name} {args[0]}` failed: {last}",
                hint=f"check that {self.name} works here: {self.name} info",
            )
        return res.stdout

    # -- containers --------------------------------------------------------------------------------------

    def run(self, spec: RunSpec) -> str:
        """Create and start a detached container; its id."""
        return self._run(run_args(spec)).strip()

    def start(self, name: str) -> None:
        """Start a stopped container again."""
        self._run(["start", name])

    def stop(self, name: str, timeout_s: int = 30) -> None:
        """SIGTERM (the server drains), SIGKILL after ``timeout_s``; a container that is gone is no error."""
        self._run(["stop", "--time", str(timeout_s), name], check=False, timeout=timeout_s + 30)

    def remove(self, name: str) -> None:
        """Remove a container (stopping it first); one that is gone is no error."""
        self._run(["rm", "--force", name], check=False)

    def signal(self, name: str, signal: str) -> None:
        """Send ``signal`` (``HUP``) to the container's main process."""
        self._run(["kill", "--signal", signal, name])

    def inspect(self, name: str) -> dict[str, Any] | None:
        """``inspect`` of one container, or ``None`` when there is no such container."""
        out = self._run(["container", "inspect", name], check=False)
        try:
            found = json.loads(out) if out.strip() else []
        except ValueError:
            return None
        return found[0] if isinstance(found, list) and found else None

    def names(self, labels: Mapping[str, str]) -> list[str]:
        """Names of every container (running or not) carrying all ``labels``."""
        args = ["ps", "--all", "--format", "{{.Names}}"]
        for key, value in labels.items():
            args += ["--filter", f"label={key}={value}"]
        return [line.strip() for line in self._run(args).splitlines() if line.strip()]

    def logs(self, name: str, lines: int = 20) -> list[str]:
        """The last ``lines`` lines of a container's output (redacted), ``[]`` when there is none."""
        res = subprocess.run(
            [*self.base, "logs", "--tail", str(lines), name],
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
        text = res.stdout + res.stderr
        return [redact(line)[:500] for line in text.splitlines() if line.strip()][-lines:]

    # -- images ------------------------------------------------------------------------------------------

    def image(self, ref: str) -> dict[str, Any] | None:
        """``inspect`` of one image, or ``None`` when the runtime does not have it."""
        out = self._run(["image", "inspect", ref], check=False)
        try:
            found = json.loads(out) if out.strip() else []
        except ValueError:
            return None
        return found[0] if isinstance(found, list) and found else None


def run_args(spec: RunSpec) -> list[str]:
    """The ``run`` arguments of ``spec`` (after the global options)."""
    args = [
        "run",
        "--detach",
        "--name",
        spec.name,
        "--read-only",
        "--tmpfs",
        "/tmp:rw,size=64m,mode=1777",
        "--pids-limit",
        str(spec.pids_limit),
        "--publish",
        f"127.0.0.1:{spec.host_port}:{CONTAINER_PORT}",
        "--security-opt",
        "no-new-privileges",
        "--cap-drop",
        "ALL",
    ]
    for limit in ULIMITS:
        args += ["--ulimit", limit]
    if spec.memory:
        args += ["--memory", spec.memory]
    for key, value in sorted(spec.labels.items()):
        args += ["--label", f"{key}={value}"]
    for host, inside in sorted(spec.mounts.items()):
        args += ["--volume", f"{host}:{inside}:ro"]
    for host, inside in sorted(spec.writable.items()):
        args += ["--volume", f"{host}:{inside}:rw"]
    return [*args, spec.image, *spec.args]


def running(info: Mapping[str, Any] | None) -> bool:
    """An ``inspect`` result says the container runs."""
    state = (info or {}).get("State") or {}
    return bool(state.get("Running")) or str(state.get("Status", "")).lower() == "running"


def labels_of(info: Mapping[str, Any] | None) -> dict[str, str]:
    """The labels of an ``inspect`` result (container or image)."""
    config = (info or {}).get("Config") or {}
    return dict(config.get("Labels") or (info or {}).get("Labels") or {})


def user_ids(image: Mapping[str, Any]) -> tuple[int, int] | None:
    """The numeric ``uid, gid`` an image runs as (``Config.User``); ``None`` when it is not numeric.

    ``1000`` means uid 1000 and gid 1000 here, as the image's group is its user's own one.
    """
    user = str(((image.get("Config") or {}).get("User")) or "").strip()
    if not user:
        return None
    uid, _, gid = user.partition(":")
    if not uid.isdigit() or (gid and not gid.isdigit()):
        return None
    return int(uid), int(gid or uid)
