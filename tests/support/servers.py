"""Real external servers for integration tests: a throwaway PostgreSQL cluster and ``mlflow server``.

Everything binds 127.0.0.1 only, lives in its own directory under /tmp and is torn down (processes
stopped, directory removed) when the context manager exits.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

LOOPBACK = "127.0.0.1"
# Directly under /tmp: pytest's tmp dirs are 0700 and the postgres OS user could not traverse them.
SHARED_TMP = "/tmp"
PG_OS_USER = "postgres"
PG_SUPERUSER = "postgres"
PG_DATABASE = "mlflow"
PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
INSTALL_HINT = "run scripts/install-system-deps.sh (as root) to install the PostgreSQL server"
STOP_TIMEOUT_S = 30.0
HEALTH_TIMEOUT_S = 120.0


# --------------------------------------------------------------------------------------------------
# Small process / network helpers
# --------------------------------------------------------------------------------------------------


def free_port() -> int:
    """Return a TCP port that is currently free on 127.0.0.1 (bind to port 0 and read it back)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def pid_alive(pid: int) -> bool:
    """Tell whether ``pid`` is a live process; a zombie (state Z/X in /proc/PID/stat) counts as gone."""
    stat = Path(f"/proc/{pid}/stat")
    if stat.parent.parent.is_dir():
        try:
            # The state is the first field after the parenthesised command name (which may hold spaces).
            state = stat.read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        return state not in {"Z", "X", "x"}
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_gone(pids: Sequence[int], timeout: float) -> bool:
    """Poll until none of ``pids`` is alive; return False if some are still alive after ``timeout``."""
    deadline = time.monotonic() + timeout
    while any(pid_alive(pid) for pid in pids):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def signal_pid(pid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to ``pid``, ignoring a process that has already gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def child_pids(pid: int) -> list[int]:
    """Return the direct children of ``pid`` (from /proc, or ``ps -o pid= --ppid`` without /proc)."""
    proc = Path("/proc")
    if not proc.is_dir():
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True, check=False
        ).stdout
        return [int(tok) for tok in out.split()]
    children = []
    for stat in proc.glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            children.append(int(stat.parent.name))
    return children


def descendant_pids(pid: int) -> list[int]:
    """Return all descendants of ``pid`` (children, grandchildren, ...), parents before children."""
    found: list[int] = []
    todo = [pid]
    while todo:
        kids = child_pids(todo.pop())
        found.extend(kids)
        todo.extend(kids)
    return found


def log_tail(path: Path, lines: int = 20) -> str:
    """Return the last ``lines`` lines of a log file (empty string if it does not exist)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def running_as_root() -> bool:
    """True when this process runs as root (initdb must then run as the postgres OS user)."""
    return os.geteuid() == 0


# --------------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------------


def find_pg_bindir() -> Path:
    """Locate the PostgreSQL *server* binaries (initdb, pg_ctl), which are usually not on PATH.

    Tries ``pg_config --bindir`` first, then the highest version under /usr/lib/postgresql/*/bin.
    """
    candidates: list[Path] = []
    if pg_config := shutil.which("pg_config"):
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if out.returncode == 0 and out.stdout.strip():
            candidates.append(Path(out.stdout.strip()))

    def version(path: Path) -> tuple[int, ...]:
        digits = path.parent.name.split(".")
        return tuple(int(d) for d in digits) if all(d.isdigit() for d in digits) else (-1,)

    candidates += sorted(Path("/").glob(PG_BIN_GLOB.lstrip("/")), key=version, reverse=True)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    raise RuntimeError(f"PostgreSQL server binaries (initdb, pg_ctl) not found; {INSTALL_HINT}.")


def ensure_os_user(name: str) -> None:
    """Create the system user ``name`` (no home directory) if it does not exist yet."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", name], check=True)


def _pg_env() -> dict[str, str]:
    """Environment for PostgreSQL tools, without PG* variables that could redirect them elsewhere."""
    return {key: value for key, value in os.environ.items() if not key.startswith("PG")}


def _run_pg(cmd: list[str], cwd: Path, as_pg_user: bool) -> None:
    """Run a PostgreSQL command (as the postgres OS user when root); raise with its output on failure."""
    if as_pg_user and running_as_root():
        # runuser keeps the cwd, hence cwd=<cluster dir>: /root is not readable by postgres.
        cmd = ["runuser", "-u", PG_OS_USER, "--", *cmd]
    result = subprocess.run(
        cmd, cwd=cwd, env=_pg_env(), stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"command failed ({result.returncode}): {' '.join(cmd)}\n{result.stdout}\n{result.stderr}"
        )


def _postmaster_pid(data_dir: Path) -> int | None:
    """Read the postmaster PID from line 1 of ``data/postmaster.pid`` (None if not running)."""
    try:
        return int((data_dir / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, IndexError, ValueError):
        return None


def stop_postgres(data_dir: Path) -> None:
    """Fast-shutdown the cluster (SIGINT to the postmaster), wait until gone, SIGKILL as a fallback."""
    pid = _postmaster_pid(data_dir)
    if pid is None:
        return
    signal_pid(pid, signal.SIGINT)
    if not wait_gone([pid], STOP_TIMEOUT_S):
        signal_pid(pid, signal.SIGKILL)
        wait_gone([pid], 5.0)


@contextlib.contextmanager
def postgres_cluster(port: int | None = None) -> Iterator[str]:
    """Run a throwaway PostgreSQL cluster on 127.0.0.1 and yield a SQLAlchemy URL to its ``mlflow`` DB.

    The URL uses ``postgresql+psycopg2://`` explicitly: SQLAlchemy 2.1 maps plain ``postgresql://``
    to psycopg 3. Durability is switched off (fsync, synchronous_commit, full_page_writes) for speed.
    """
    bindir = find_pg_bindir()
    port = port or free_port()
    root = Path(tempfile.mkdtemp(prefix="vintage-pg-", dir=SHARED_TMP))
    data_dir = root / "data"
    try:
        root.chmod(0o755)
        if running_as_root():
            ensure_os_user(PG_OS_USER)
            shutil.chown(root, user=PG_OS_USER)
        initdb = [str(bindir / "initdb"), "-D", str(data_dir), "-U", PG_SUPERUSER]
        _run_pg([*initdb, "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"], cwd=root, as_pg_user=True)
        server_opts = (
            f"-p {port} -k {root} -c listen_addresses={LOOPBACK}"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        pg_ctl = [str(bindir / "pg_ctl"), "-D", str(data_dir), "-l", str(root / "postgres.log")]
        try:
            _run_pg([*pg_ctl, "-w", "-t", "60", "-o", server_opts, "start"], cwd=root, as_pg_user=True)
            _run_pg(
                [str(bindir / "createdb"), "-h", LOOPBACK, "-p", str(port), "-U", PG_SUPERUSER, PG_DATABASE],
                cwd=root,
                as_pg_user=False,
            )
            yield f"postgresql+psycopg2://{PG_SUPERUSER}@{LOOPBACK}:{port}/{PG_DATABASE}"
        finally:
            stop_postgres(data_dir)
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# mlflow server
# --------------------------------------------------------------------------------------------------


def _http_ok(url: str) -> bool:
    """True if GET ``url`` answers 200; proxies are bypassed (the server is on 127.0.0.1)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _wait_healthy(proc: subprocess.Popen[bytes], url: str, log: Path, timeout: float) -> None:
    """Poll ``url`` until it answers 200; raise with the log tail if the server dies or times out."""
    deadline = time.monotonic() + timeout
    while not _http_ok(url):
        if proc.poll() is not None:
            raise RuntimeError(
                f"mlflow server exited with code {proc.returncode} before becoming healthy; "
                f"last lines of its log:\n{log_tail(log)}"
            )
        if time.monotonic() >= deadline:
            raise RuntimeError(
                f"mlflow server not healthy after {timeout:.0f} s; last lines:\n{log_tail(log)}"
            )
        time.sleep(0.2)


def stop_process_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM ``proc`` (mlflow forwards it to its uvicorn children), wait, then SIGKILL any survivor."""
    children = descendant_pids(proc.pid)  # record first: they are reparented once proc exits
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if not wait_gone(children, STOP_TIMEOUT_S / 3):
        for pid in children:
            if pid_alive(pid):
                signal_pid(pid, signal.SIGKILL)
        wait_gone(children, 5.0)


@contextlib.contextmanager
def mlflow_server(backend_uri: str, python: str = sys.executable, port: int | None = None) -> Iterator[str]:
    """Run a real ``mlflow server`` on 127.0.0.1 with proxied artifacts; yield its base URL.

    Artifacts go to ``<dir>/artifacts`` (runs get ``mlflow-artifacts:/`` URIs), the log to
    ``<dir>/server.log``. One worker only, and MLflow's background job runner is disabled.
    """
    port = port or free_port()
    root = Path(tempfile.mkdtemp(prefix="vintage-mlflow-", dir=SHARED_TMP))
    log = root / "server.log"
    url = f"http://{LOOPBACK}:{port}"
    env = {
        **os.environ,
        "TMPDIR": str(root / "tmp"),
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "PYTHONUNBUFFERED": "1",
    }
    cmd = [python, "-m", "mlflow", "server", "--backend-store-uri", backend_uri]
    cmd += ["--artifacts-destination", str(root / "artifacts"), "--host", LOOPBACK, "--port", str(port)]
    cmd += ["--workers", "1"]
    try:
        (root / "tmp").mkdir()
        with log.open("wb") as log_file:
            proc = subprocess.Popen(
                cmd,
                cwd=root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal reaches pytest, not the server
            )
            try:
                _wait_healthy(proc, f"{url}/health", log, HEALTH_TIMEOUT_S)
                yield url
            finally:
                stop_process_tree(proc)
    finally:
        shutil.rmtree(root, ignore_errors=True)
