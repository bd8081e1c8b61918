"""A real single-node Kubernetes cluster on 127.0.0.1 for the tests: :class:`KubeCluster`.

It runs, each as a process of its own with its PID and log recorded in one temp dir: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, a private dockerd (own socket, data, state and bridge; runtime
``scripts/runc-clamp``), a kubelet (node ``localhost``, docker runtime) and kube-proxy (iptables mode,
NodePorts on 127.0.0.1 only). The Kubernetes binaries come from ``scripts/build-kubernetes.sh`` (cached per
machine); etcd and dockerd from apt. No image is pulled from outside the machine: the pause image is made from
the ``pause`` binary next to the others, and test images come from a registry on 127.0.0.1.

Tear-down (:meth:`KubeCluster.stop`) works from ``state.json`` in the cluster's directory, so it also cleans
up after a half start or from another process (``python -m support.kube_cluster down DIR``, run from tests/):
components stopped by PID in reverse order (the dockerd's containers removed first), mounts under the
directory unmounted, the bridge deleted, the iptables chains the cluster created (DOCKER*, KUBE-*) and the
rules pointing at them or at its bridge removed, the sysctls dockerd / kube-proxy turn on put back, the
directory removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import random
import shlex
import shutil
import ssl
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

from support.containers import docker_env, dockerd_argv, stop_pids, wait_dockerd
from support.kube_pki import make_pki, write_kubeconfig
from support.servers import free_port, log_tail, pid_alive

REPO = Path(__file__).resolve().parents[2]
RUNC_CLAMP = REPO / "scripts" / "runc-clamp"
LOOPBACK = "127.0.0.1"
NODE_NAME = "localhost"
SERVICE_CIDR = "10.0.0.0/24"
PAUSE_IMAGE = "localhost/vintage-pause:3.4"
BRIDGE_POOL = ipaddress.IPv4Network("10.200.0.0/16")  # the pod bridge gets a free /24 of it
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "pause")
# Start order; stop runs it backwards (the control plane last, so deleting state can still use it).
ORDER = (
    "etcd",
    "kube-apiserver",
    "dockerd",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
)
CHAIN_PREFIXES = ("DOCKER", "KUBE-")
MACHINE_LOCK = "/tmp/vintage-kube-cluster.lock"
OUR_COMMANDS = ("containerd", "docker", "runc", "kube", "etcd")  # stray processes stop() may end
IPTABLES = (("iptables", ("nat", "filter", "mangle")), ("ip6tables", ("nat", "filter", "mangle")))
SYSCTLS = ("net/ipv4/ip_forward", "net/ipv4/conf/all/route_localnet")
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 20.0
POLL_S = 0.25
INSTALL_HINT = "run `make system-deps` (or bash scripts/build-kubernetes.sh) once on this machine"


class KubeClusterError(RuntimeError):
    """The test cluster could not start (a component died or was not ready in time) or is missing parts."""


def cache_root() -> Path:
    """Where scripts/build-kubernetes.sh keeps its builds (same rule as the script)."""
    base = os.environ.get("VINTAGE_CACHE_DIR")
    if base:
        return Path(base) / "kubernetes"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "vintage" / "kubernetes"


def find_bin_dir() -> Path:
    """The bin directory of a complete build (``$VINTAGE_KUBE_BIN`` if set), without building anything.

    Raises:
        KubeClusterError: no complete build (stamp written, every binary present) was found.
    """
    explicit = os.environ.get("VINTAGE_KUBE_BIN")
    candidates = [Path(explicit)] if explicit else [s.parent / "bin" for s in cache_root().glob("*/stamp")]
    for bin_dir in sorted(candidates, key=lambda p: p.stat().st_mtime if p.exists() else 0, reverse=True):
        if all(os.access(bin_dir / name, os.X_OK) for name in BINARIES):
            return bin_dir
    where = explicit or str(cache_root())
    raise KubeClusterError(f"Kubernetes binaries not found in {where} (hint: {INSTALL_HINT})")


def _run(
    argv: list[str], env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout, check=False)


def _iptables_lines(tool: str, table: str) -> list[str]:
    if shutil.which(tool) is None:
        return []
    proc = _run([tool, "-w", "-t", table, "-S"])
    return proc.stdout.splitlines() if proc.returncode == 0 else []


def _chains(tool: str, table: str) -> list[str]:
    return [line.split()[1] for line in _iptables_lines(tool, table) if line.startswith("-N ")]


def _policies(tool: str, table: str) -> dict[str, str]:
    """The policy of each built-in chain (dockerd turns filter FORWARD to DROP)."""
    lines = _iptables_lines(tool, table)
    return {line.split()[1]: line.split()[2] for line in lines if line.startswith("-P ")}


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 of BRIDGE_POOL that no route on this machine overlaps."""
    out = _run(["ip", "-4", "-j", "route", "show", "table", "all"]).stdout or "[]"
    used: list[ipaddress.IPv4Network] = []
    for route in json.loads(out):
        with contextlib.suppress(ValueError):
            used.append(ipaddress.IPv4Network(route.get("dst", ""), strict=False))
    subnets = list(BRIDGE_POOL.subnets(new_prefix=24))
    random.shuffle(subnets)
    for net in subnets:
        if not any(net.overlaps(u) for u in used if u.prefixlen > 0):
            return net
    raise KubeClusterError(f"no free /24 in {BRIDGE_POOL} for the pod bridge (hint: remove stale bridges)")


def _mounts_under(root: Path) -> list[str]:
    """Mount points at or below ``root`` (deepest first), from /proc/self/mountinfo."""
    points = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].encode().decode("unicode_escape")
            if point == str(root) or point.startswith(f"{root}/"):
                points.append(point)
    return sorted(points, key=len, reverse=True)


def _pids_mentioning(root: Path) -> list[int]:
    """Processes of OUR_COMMANDS naming ``root`` (containerd and its shims outlive dockerd)."""
    found = []
    needle = str(root).encode()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            comm = (cmdline.parent / "comm").read_text().strip()
            if comm.startswith(OUR_COMMANDS) and needle in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
    return found


def _other_nodes(root: Path | None) -> dict[str, list[str]]:
    """Processes elsewhere on this machine that use the machine-wide iptables chains, by family.

    ``KUBE-``: kubelets and kube-proxies (their chains have fixed names: two nodes on one machine fight over
    them). ``DOCKER``: dockerds with iptables on (a dockerd rewrites the DOCKER chains when it starts).
    Processes naming ``root`` (this cluster's own) are left out.
    """
    found: dict[str, list[str]] = {"KUBE-": [], "DOCKER": []}
    needle = str(root).encode() if root is not None else None
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            comm = (cmdline.parent / "comm").read_text().strip()
            if comm not in ("kubelet", "kube-proxy", "dockerd"):
                continue
            argv = cmdline.read_bytes()
            if (needle is not None and needle in argv) or not pid_alive(int(cmdline.parent.name)):
                continue
            command = argv.replace(b"\0", b" ").decode(errors="replace")[:160]
            shown = f"{comm} (pid {cmdline.parent.name}: {command})"
            if comm != "dockerd":
                found["KUBE-"].append(shown)
            elif b"--iptables=false" not in argv:
                found["DOCKER"].append(shown)
    return found


@contextlib.contextmanager
def _machine_lock() -> Iterator[None]:
    """Serialise the check for another node and the start of ours across processes on this machine."""
    with Path(MACHINE_LOCK).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass
class KubeCluster:
    """A single-node Kubernetes 1.20 cluster on 127.0.0.1, living in ``root`` (a new temp dir by default).

    Use as a context manager, or call :meth:`start` and :meth:`stop`. After :meth:`start`:

    Attributes:
        root: The cluster's directory: state.json, logs (``<component>.log``), PKI, data, kubelet root.
        bin_dir: The Kubernetes binaries used.
        kubeconfig: The admin kubeconfig (token user in ``system:masters``).
        api_url: ``https://127.0.0.1:<port>`` of kube-apiserver.
        docker_host: ``unix://`` URL of the cluster's own dockerd (the node's container runtime).
        pod_cidr: The pod bridge's subnet (dockerd's bridge, kube-proxy's cluster CIDR).
        pids: PID of each component, by name (see ORDER).
        start_seconds: Wall-clock time from start() to node Ready + default ServiceAccount.
    """

    root: Path | None = None
    bin_dir: Path | None = None
    kubeconfig: Path = field(init=False)
    api_url: str = field(init=False, default="")
    docker_host: str = field(init=False, default="")
    pod_cidr: str = field(init=False, default="")
    pids: dict[str, int] = field(init=False, default_factory=dict)
    start_seconds: float = field(init=False, default=0.0)
    _procs: dict[str, subprocess.Popen[bytes]] = field(init=False, default_factory=dict)
    _state: dict[str, Any] = field(init=False, default_factory=dict)
    _ssl: ssl.SSLContext | None = field(init=False, default=None)
    _token: str = field(init=False, default="")

    # -- public API ------------------------------------------------------------------------------------------

    def __enter__(self) -> KubeCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def api_client(self) -> Any:
        """A ``kubernetes.client.ApiClient`` for the admin user (import of the package deferred)."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))  # type: ignore[no-untyped-call]

    def docker(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run the docker CLI against the cluster's dockerd (not checked; read returncode)."""
        return _run(["docker", *args], env=docker_env(self.docker_host), timeout=timeout)

    def log_path(self, component: str) -> Path:
        """The log file of ``component`` (a name from ORDER)."""
        assert self.root is not None
        return self.root / f"{component}.log"

    def start(self) -> None:
        """Start every component and wait until the node is Ready and ``default`` has its ServiceAccount.

        Raises:
            KubeClusterError: a binary is missing, a component exited (message: the tail of its log), or the
                cluster was not ready within START_TIMEOUT_S.
        """
        with _machine_lock():
            self._start()

    def _start(self) -> None:
        began = time.monotonic()
        self.bin_dir = self.bin_dir or find_bin_dir()
        others = _other_nodes(self.root)["KUBE-"]
        if others:
            raise KubeClusterError(
                f"another Kubernetes node runs on this machine: {others[0]}; the kubelet's and "
                "kube-proxy's iptables chains are machine-wide, so one test cluster at a time (hint: let it "
                "finish, or stop it: python -m support.kube_cluster down DIR, from tests/)"
            )
        for tool in ("etcd", "dockerd", "docker", "iptables", "ip"):
            if shutil.which(tool) is None:
                raise KubeClusterError(f"{tool} is missing (hint: {INSTALL_HINT})")
        if self.root is None:
            self.root = Path(
                tempfile.mkdtemp(prefix="vk-", dir="/tmp")
            )  # short: unix socket paths are limited
        self.root.mkdir(parents=True, exist_ok=True)
        self._state = {"root": str(self.root), "pids": {}, "sysctls": self._read_sysctls()}
        self._state["chains"] = {f"{t}:{tb}": _chains(t, tb) for t, tables in IPTABLES for tb in tables}
        self._state["policies"] = {f"{t}:{tb}": _policies(t, tb) for t, tables in IPTABLES for tb in tables}
        self._save()

        pki = make_pki(self._mkdir("pki"))
        self._token = pki.tokens["admin"]
        self._ssl = ssl.create_default_context(cafile=str(pki.ca_cert))
        ports = {
            name: free_port() for name in ("etcd", "etcd-peer", "api", "cm", "sched", "kubelet", "kubelet-hz")
        }
        ports |= {name: free_port() for name in ("proxy-hz", "proxy-metrics")}
        self.api_url = f"https://{LOOPBACK}:{ports['api']}"
        kubeconfigs = {
            name: write_kubeconfig(self.root / f"{name}.kubeconfig", self.api_url, pki.ca_cert, token)
            for name, token in pki.tokens.items()
        }
        self.kubeconfig = kubeconfigs["admin"]
        self._state["kubeconfig"] = str(self.kubeconfig)
        self._state["api_url"] = self.api_url

        etcd_url = f"http://{LOOPBACK}:{ports['etcd']}"
        peer_url = f"http://{LOOPBACK}:{ports['etcd-peer']}"
        self._spawn(
            "etcd",
            ["etcd", "--name", "vt", "--data-dir", str(self.root / "etcd")],
            ["--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url],
            ["--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url],
            ["--initial-cluster", f"vt={peer_url}", "--log-level", "warn"],
        )
        self._start_dockerd()
        self._wait("etcd /health", lambda: self._http_ok(f"{etcd_url}/health"))
        b = self.bin_dir
        self._spawn(
            "kube-apiserver",
            [str(b / "kube-apiserver"), f"--bind-address={LOOPBACK}", f"--advertise-address={LOOPBACK}"],
            [
                f"--secure-port={ports['api']}",
                f"--etcd-servers={etcd_url}",
                f"--cert-dir={self._mkdir('apiserver')}",
            ],
            [f"--tls-cert-file={pki.apiserver_cert}", f"--tls-private-key-file={pki.apiserver_key}"],
            [f"--client-ca-file={pki.ca_cert}", f"--token-auth-file={pki.token_file}"],
            ["--authorization-mode=Node,RBAC", f"--service-cluster-ip-range={SERVICE_CIDR}"],
            ["--service-account-issuer=https://kubernetes.default.svc"],
            [f"--service-account-key-file={pki.sa_pub}", f"--service-account-signing-key-file={pki.sa_key}"],
            ["--kubelet-preferred-address-types=Hostname", "--allow-privileged=true", "--profiling=false"],
            [f"--kubelet-client-certificate={pki.kubelet_client_cert}"],
            [f"--kubelet-client-key={pki.kubelet_client_key}"],
        )
        wait_dockerd(self._procs["dockerd"], self.docker_host, self.log_path("dockerd"), START_TIMEOUT_S)
        self._load_pause_image()
        self._wait("kube-apiserver /readyz", lambda: self._api_get("/readyz", raw=True) is not None)

        self._spawn(
            "kube-controller-manager",
            [str(b / "kube-controller-manager"), f"--kubeconfig={kubeconfigs['controller-manager']}"],
            [
                f"--bind-address={LOOPBACK}",
                f"--secure-port={ports['cm']}",
                "--port=0",
                "--leader-elect=false",
            ],
            ["--controllers=*,-nodeipam", "--use-service-account-credentials"],
            [f"--service-account-private-key-file={pki.sa_key}", f"--root-ca-file={pki.ca_cert}"],
        )
        self._spawn(
            "kube-scheduler",
            [str(b / "kube-scheduler"), f"--kubeconfig={kubeconfigs['scheduler']}"],
            [
                f"--bind-address={LOOPBACK}",
                f"--secure-port={ports['sched']}",
                "--port=0",
                "--leader-elect=false",
            ],
        )
        kubelet_root = self._mkdir("kubelet")
        self._spawn(
            "kubelet",
            [
                str(b / "kubelet"),
                f"--kubeconfig={kubeconfigs['kubelet']}",
                f"--hostname-override={NODE_NAME}",
            ],
            [
                "--container-runtime=docker",
                f"--docker-endpoint={self.docker_host}",
                "--cgroup-driver=cgroupfs",
            ],
            [f"--address={LOOPBACK}", f"--port={ports['kubelet']}", f"--healthz-bind-address={LOOPBACK}"],
            [f"--healthz-port={ports['kubelet-hz']}", "--read-only-port=0", "--fail-swap-on=false"],
            ["--cgroups-per-qos=false", "--enforce-node-allocatable=", "--eviction-hard="],
            ["--image-gc-high-threshold=100", f"--pod-infra-container-image={PAUSE_IMAGE}"],
            [f"--root-dir={kubelet_root}", f"--cert-dir={kubelet_root / 'pki'}"],
            [f"--volume-plugin-dir={kubelet_root / 'volume-plugins'}"],
            [f"--cni-conf-dir={self._mkdir('cni')}", f"--cni-bin-dir={self._mkdir('cni')}"],
            [f"--experimental-dockershim-root-directory={self._mkdir('dockershim')}"],
            [
                "--anonymous-auth=false",
                f"--client-ca-file={pki.ca_cert}",
                "--authorization-mode=AlwaysAllow",
            ],
            ["--oom-score-adj=0", "--serialize-image-pulls=false"],
        )
        self._spawn(
            "kube-proxy",
            [
                str(b / "kube-proxy"),
                f"--kubeconfig={kubeconfigs['kube-proxy']}",
                f"--hostname-override={NODE_NAME}",
            ],
            [
                "--proxy-mode=iptables",
                f"--cluster-cidr={self.pod_cidr}",
                f"--nodeport-addresses={LOOPBACK}/32",
            ],
            [f"--bind-address={LOOPBACK}", f"--healthz-bind-address={LOOPBACK}:{ports['proxy-hz']}"],
            [f"--metrics-bind-address={LOOPBACK}:{ports['proxy-metrics']}", "--oom-score-adj=0"],
            ["--conntrack-max-per-core=0", "--conntrack-tcp-timeout-established=0s"],
            ["--conntrack-tcp-timeout-close-wait=0s"],
        )
        self._wait("node Ready", self._node_ready)
        self._wait(
            "ServiceAccount default/default",
            lambda: self._api_get("/api/v1/namespaces/default/serviceaccounts/default") is not None,
        )
        self._wait(
            "kube-proxy /healthz", lambda: self._http_ok(f"http://{LOOPBACK}:{ports['proxy-hz']}/healthz")
        )
        self.start_seconds = time.monotonic() - began

    def stop(self) -> None:
        """Tear everything down (idempotent; safe after a half start or in another process)."""
        if self.root is None:
            return
        state = self._state or self._load()
        if not state:
            return
        pids: dict[str, int] = state.get("pids", {})
        host = state.get("docker_host", "")
        for name in reversed(ORDER):
            pid = pids.get(name)
            if name == "dockerd" and host and pid and pid_alive(pid):
                out = _run(["docker", "ps", "-aq"], env=docker_env(host)).stdout.split()
                if out:
                    _run(["docker", "rm", "-f", *out], env=docker_env(host), timeout=120)
            if pid:
                stop_pids([pid], STOP_TIMEOUT_S)
                if name in self._procs:
                    self._procs[name].wait()
            if name == "dockerd":  # containerd and shims it started are reparented: stop them by PID too
                stop_pids(_pids_mentioning(self.root), STOP_TIMEOUT_S)
        for point in _mounts_under(self.root):
            if _run(["umount", point]).returncode != 0:
                _run(["umount", "-l", point])
        self._remove_pod_logs()
        bridge = state.get("bridge")
        if bridge and Path(f"/sys/class/net/{bridge}").exists():
            _run(["ip", "link", "delete", bridge])
        shared = {family for family, procs in _other_nodes(self.root).items() if procs}
        self._clean_iptables(state, shared)
        if not shared:  # another node or dockerd still needs forwarding and route_localnet
            for key, value in state.get("sysctls", {}).items():
                with contextlib.suppress(OSError):
                    Path("/proc/sys", key).write_text(value)
        self._procs.clear()
        self._state = {}
        shutil.rmtree(self.root, ignore_errors=True)

    # -- start helpers ---------------------------------------------------------------------------------------

    def _mkdir(self, name: str) -> Path:
        assert self.root is not None
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _save(self) -> None:
        assert self.root is not None
        tmp = self.root / "state.json.tmp"
        tmp.write_text(json.dumps(self._state, indent=1), encoding="utf-8")
        tmp.replace(self.root / "state.json")

    def _load(self) -> dict[str, Any]:
        assert self.root is not None
        try:
            state: dict[str, Any] = json.loads((self.root / "state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return state

    @staticmethod
    def _read_sysctls() -> dict[str, str]:
        values = {}
        for key in SYSCTLS:
            with contextlib.suppress(OSError):
                values[key] = Path("/proc/sys", key).read_text().strip()
        return values

    def _env(self) -> dict[str, str]:
        """A minimal environment: no AWS_*, no proxies; the kubelet's AWS credential lookup switched off."""
        assert self.root is not None
        return {"PATH": PATH, "HOME": str(self.root), "LANG": "C.UTF-8", "AWS_EC2_METADATA_DISABLED": "true"}

    def _spawn(self, name: str, *parts: list[str]) -> None:
        """Start component ``name`` (command line: ``parts`` joined), its output appended to its log."""
        argv = [arg for part in parts for arg in part]
        with self.log_path(name).open("ab") as log:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env(),
                cwd=self.root,
                start_new_session=True,  # a ^C in pytest reaches only pytest; stop() ends these in order
            )
        self._procs[name] = proc
        self.pids[name] = proc.pid
        self._state["pids"][name] = proc.pid
        self._save()

    def _start_dockerd(self) -> None:
        assert self.root is not None
        subnet = _free_subnet()
        bridge = f"vk-{self.root.name[-8:]}"[:15]
        gateway = f"{next(subnet.hosts())}/{subnet.prefixlen}"
        self._state["bridge"] = bridge
        self._save()
        for argv in (
            ["ip", "link", "add", "name", bridge, "type", "bridge"],
            ["ip", "addr", "add", gateway, "dev", bridge],
            ["ip", "link", "set", bridge, "up"],
        ):
            proc = _run(argv)
            if proc.returncode != 0:
                raise KubeClusterError(
                    f"cannot create the pod bridge: {shlex.join(argv)}: {proc.stderr.strip()}"
                )
        self.pod_cidr = str(subnet)
        self._state["pod_cidr"] = self.pod_cidr
        self.docker_host = f"unix://{self.root / 'docker' / 'docker.sock'}"
        self._state["docker_host"] = self.docker_host
        dockerd = shutil.which("dockerd")
        assert dockerd is not None
        argv = dockerd_argv(dockerd, self._mkdir("docker"))
        argv += [f"--bridge={bridge}", "--iptables=true", "--ip6tables=false", "--ip-masq=true"]
        argv += ["--add-runtime", f"clamp={RUNC_CLAMP}", "--default-runtime=clamp"]
        argv += ["--default-ulimit", "nofile=1024:1024", "--default-ulimit", "nproc=4096:4096"]
        argv += ["--exec-opt", "native.cgroupdriver=cgroupfs", "--log-level=warn"]
        self._spawn("dockerd", argv)

    def _load_pause_image(self) -> None:
        """Import the pause binary as a FROM-scratch image, tagged PAUSE_IMAGE (never pulled)."""
        assert self.bin_dir is not None
        buf = BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.add(self.bin_dir / "pause", arcname="pause")
        argv = ["docker", "import", "--change", 'ENTRYPOINT ["/pause"]', "-", PAUSE_IMAGE]
        proc = subprocess.run(
            argv, input=buf.getvalue(), capture_output=True, env=docker_env(self.docker_host)
        )
        if proc.returncode != 0:
            raise KubeClusterError(
                f"cannot import the pause image: {proc.stderr.decode(errors='replace').strip()}"
            )

    def _check_alive(self, waiting_for: str) -> None:
        for name, proc in self._procs.items():
            code = proc.poll()
            if code is not None:
                raise KubeClusterError(
                    f"{name} exited with code {code} while waiting for {waiting_for}; "
                    f"last lines of {self.log_path(name)}:\n{log_tail(self.log_path(name), 30)}"
                )

    def _wait(self, what: str, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            self._check_alive(what)
            if ready():
                return
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {n}:\n{log_tail(self.log_path(n), 8)}" for n in self._procs)
                raise KubeClusterError(
                    f"the test cluster was not ready ({what}) after {START_TIMEOUT_S:.0f} s\n{logs}"
                )
            time.sleep(POLL_S)

    def _http_ok(self, url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _api_get(self, path: str, raw: bool = False) -> Any:
        """GET ``path`` from the apiserver as admin: parsed JSON (text if ``raw``); None on any error."""
        req = urllib.request.Request(
            f"{self.api_url}{path}", headers={"Authorization": f"Bearer {self._token}"}
        )
        try:
            with urllib.request.urlopen(req, timeout=5, context=self._ssl) as resp:
                body = resp.read().decode()
        except (urllib.error.URLError, OSError):
            return None
        return body if raw else json.loads(body)

    def _node_ready(self) -> bool:
        node = self._api_get(f"/api/v1/nodes/{NODE_NAME}")
        if not node:
            return False
        conditions = node.get("status", {}).get("conditions", [])
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

    # -- stop helpers ----------------------------------------------------------------------------------------

    def _remove_pod_logs(self) -> None:
        """The kubelet's /var/log/pods dirs and /var/log/containers links whose logs live in our docker."""
        assert self.root is not None
        pods = Path("/var/log/pods")
        for pod_dir in pods.glob("*") if pods.is_dir() else []:
            links = [p for p in pod_dir.rglob("*") if p.is_symlink()]
            if links and all(str(p.readlink()).startswith(f"{self.root}/") for p in links):
                shutil.rmtree(pod_dir, ignore_errors=True)
        containers = Path("/var/log/containers")
        for link in containers.glob("*") if containers.is_dir() else []:
            if link.is_symlink() and not link.exists() and str(link.readlink()).startswith(str(pods)):
                link.unlink(missing_ok=True)

    def _clean_iptables(self, state: dict[str, Any], shared: set[str]) -> None:
        """Remove the chains made since start (DOCKER*, KUBE-*) and the rules using them or our bridge.

        A family of chains (prefix) in ``shared`` is in use by another process on this machine: its chains
        stay (only the rules naming our bridge or pod subnet go), and so do the built-in chains' policies.
        """
        before: dict[str, list[str]] = state.get("chains", {})
        prefixes = tuple(p for p in CHAIN_PREFIXES if p not in shared)
        bridge = state.get("bridge") or "\0"
        cidr = state.get("pod_cidr") or "\0"
        for tool, tables in IPTABLES:
            for table in tables:
                if f"{tool}:{table}" not in before:
                    continue
                ours = {
                    c
                    for c in _chains(tool, table)
                    if prefixes and c.startswith(prefixes) and c not in before[f"{tool}:{table}"]
                }
                for line in _iptables_lines(tool, table):
                    if not line.startswith("-A "):
                        continue
                    words = shlex.split(line)
                    chain = words[1]
                    target = words[words.index("-j") + 1] if "-j" in words else ""
                    if chain not in ours and (target in ours or bridge in words or cidr in words):
                        _run([tool, "-w", "-t", table, "-D", *words[1:]])
                for chain in ours:
                    _run([tool, "-w", "-t", table, "-F", chain])
                for chain in ours:
                    _run([tool, "-w", "-t", table, "-X", chain])
                if shared:
                    continue
                policies = _policies(tool, table)
                for chain, policy in state.get("policies", {}).get(f"{tool}:{table}", {}).items():
                    if policies.get(chain, policy) != policy:
                        _run([tool, "-w", "-t", table, "-P", chain, policy])


@contextlib.contextmanager
def kube_cluster(root: Path | None = None) -> Iterator[KubeCluster]:
    """``with kube_cluster() as cluster:`` a started :class:`KubeCluster`, torn down on exit."""
    with KubeCluster(root=root) as cluster:
        yield cluster


def main(argv: list[str]) -> int:
    """``python -m support.kube_cluster up DIR`` (prints the cluster's addresses as JSON) / ``down DIR``."""
    if len(argv) != 2 or argv[0] not in ("up", "down"):
        sys.stderr.write("usage: python -m support.kube_cluster up|down DIR   (run from tests/)\n")
        return 2
    command, root = argv[0], Path(argv[1]).resolve()
    cluster = KubeCluster(root=root)
    if command == "down":
        began = time.monotonic()
        cluster.stop()
        sys.stdout.write(
            json.dumps({"stopped": str(root), "seconds": round(time.monotonic() - began, 2)}) + "\n"
        )
        return 0
    try:
        cluster.start()
    except KubeClusterError as exc:
        sys.stderr.write(f"error: {exc}\nhint: python -m support.kube_cluster down {root}\n")
        return 1
    info = {
        "kubeconfig": str(cluster.kubeconfig),
        "api_url": cluster.api_url,
        "docker_host": cluster.docker_host,
        "pod_cidr": cluster.pod_cidr,
        "pids": cluster.pids,
        "start_seconds": round(cluster.start_seconds, 2),
    }
    sys.stdout.write(json.dumps(info, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
