"""Throughput, latency, cold start and memory of the scoring server, against ``mlflow models serve``.

Run from the repo (any working directory works)::

    .venv/bin/python benchmarks/serving.py [--duration 10] [--repeat 3] [--json]

What it does, in one run on this machine:

1. Installs ``wrk`` with ``apt-get install -y wrk`` when it is missing and this runs as root (otherwise it
   stops and says how to install it).
2. Copies the repo's vintage.yaml into a temporary project directory, runs ``vintage train`` there (sqlite
   store in ``<dir>/.vintage/mlflow.db``) and materialises ``models:/winequality/1`` into a local model
   directory with ``vintage.model.materialize.materialize``.
3. Starts each server on its own free port on 127.0.0.1, in its own process group:

   * ``vintage``: ``python -m vintage.serving --model-dir DIR`` (the bare ASGI app on
     uvicorn+httptools+uvloop, one process): what ``vintage serve`` execs.
   * ``vintage + API key``: the same with ``--api-key-file`` (every request carries ``Authorization:
     Bearer <key>``), to show what authentication costs.
   * ``vintage + log 0.1`` and ``vintage + log 1.0``: the same with the inference log on
     (``--inference-log DIR --inference-sample 0.1``, the default of ``environments.<env>.inference_log``,
     and 1.0: every request's rows recorded), to show what recording the traffic costs.
   * ``mlflow``: the anchor, ``mlflow models serve -m models:/winequality/1 --env-manager local`` on the
     same registered model, with MLflow's default worker count (1 uvicorn worker in MLflow 3.x).
   * ``vintage on granian``: the same ASGI app (``benchmarks/_granian_app.py``) under granian (ASGI
     interface, 1 worker, defaults otherwise): the other HTTP stack candidate.
   * ``ceiling (uvicorn)`` and ``ceiling (granian)``: a trivial ASGI callable answering a constant JSON
     (``benchmarks/_ceiling_app.py``) on uvicorn+httptools+uvloop and on granian: the most any app can
     get out of each stack on this machine.

   For each it records the cold start (wall clock from ``Popen`` to the first 200 from ``/ready``,
   or ``/ping`` for MLflow and the ceiling apps, polled every 5 ms) and checks one request per body by
   hand (status 200, one prediction per row; vintage's and MLflow's predictions must agree). It then runs a
   warm-up load (``--warmup`` seconds, discarded), reads the RSS (sum of ``VmRSS`` over the server's
   process tree from /proc), and runs ``wrk`` with a Lua script POSTing a ``dataframe_split`` body of the
   first 1 or 10 rows of the red wine data, at 16 connections on 2 threads (``wrk -t2 -c16 -d{duration}s
   --latency``) and at 1 connection on 1 thread. Latency percentiles come from the Lua ``done()`` hook
   (``latency:percentile(50)``, in microseconds); errors are wrk's socket errors (connect, read, write,
   timeout) plus its count of responses with status >= 400. During each load it also accounts the CPU
   used by the server's process tree, by wrk, and by everything else on the machine (busy time in
   /proc/stat minus those two); a sample during which other processes used more than ``--max-other-cpu``
   cores (default 0.2) is retaken, at most ``--retakes`` times (default 2), and the quietest attempt is
   kept. The servers are stopped (SIGTERM, then SIGKILL, to the whole process group) after their loads,
   and restarted for the next repeat.
4. Repeats step 3 ``--repeat`` times, the servers interleaved, and prints medians.

How to read it: every figure is the median over the repeats (the machine is shared with other work, so
single samples swing; quote medians). req/s is requests completed / wrk's measured duration. ``x MLflow``
is the row's req/s over MLflow's req/s for the same body at 16 connections. ``errors`` is the total over
all repeats and must be 0. Cold start and RSS belong to the server, not to the row. ``other`` is the median
number of cores that other processes used during the kept samples: well above 0 means the figures were
taken on a busy machine (1-connection p50s then drop, because no core sits idle, while p99s and 16-connection
req/s get worse). wrk runs on the same 2 cores as the server and takes its share of the CPU; the progress
lines (stderr) give the cores used by the server and by wrk in each sample: a one-process server at 1.00
core is the limit itself, not the client. The ceiling rows show what the HTTP stack alone costs on this
machine. ``--json`` prints every sample as well. The target lines judge the ``vintage`` rows against the
scoring-server issue's targets: >= 25x MLflow's req/s at 16 connections (1 and 10 rows), >= 50% of the
ceiling (uvicorn)'s req/s for the same body at 16 connections (issue 17), p99 <= 5 ms at
16 connections, p50 <= 0.3 ms at 1 connection, cold start <= 1 s, RSS <= 150 MB; and the inference log's
(issue 15): ``vintage + log 0.1`` loses <= 10% of ``vintage``'s req/s at 16 connections (medians; the
per-repeat paired losses are printed too: each repeat runs the logged servers right after ``vintage``; and the
same losses computed from the server's CPU time per request, steadier on a busy machine).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import http.client
import json
import os
import platform
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import FrameType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
CONFIG = REPO / "vintage.yaml"
RED_WINE_CSV = REPO / "src" / "vintage" / "data" / "wine_quality" / "winequality-red.csv"
MODEL_URI = "models:/winequality/1"
TARGET_COLUMN = "quality"
BODY_ROWS = (1, 10)
CONNECTIONS = (16, 1)  # threads: 2 at 16 connections, 1 at 1 connection
START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 15.0
POLL_S = 0.005
TRAIN_TIMEOUT_S = 600

VINTAGE = "vintage"
VINTAGE_KEY = "vintage + API key"
VINTAGE_LOG = "vintage + log 0.1"
VINTAGE_LOG_ALL = "vintage + log 1.0"
BASELINE = "vintage @"
MLFLOW = "mlflow"
GRANIAN = "vintage on granian"
CEILING_UVICORN = "ceiling (uvicorn)"
CEILING_GRANIAN = "ceiling (granian)"

# The targets, judged on the `vintage` rows.
TARGET_RATIO = 25.0
TARGET_P99_MS = 5.0
TARGET_P50_MS = 0.3
TARGET_COLD_S = 1.0
TARGET_RSS_MB = 150.0
TARGET_CEILING_SHARE = 0.50  # issue 17: vintage's req/s >= half the bare ASGI app's, same body, same run
TARGET_LOG_COST = 0.10  # the inference log (sample 0.1) may cost this share of req/s at 16 connections

MATERIALIZE_SCRIPT = """\
import sys
from pathlib import Path

from vintage.model.materialize import materialize

print(materialize(sys.argv[1], Path(sys.argv[2]), tracking_uri=sys.argv[3]))
"""

LUA_TEMPLATE = """\
wrk.method = "POST"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "application/json"
{auth}
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH {{\\"requests\\": %d, \\"duration_us\\": %d, \\"p50_us\\": %d, \\"p99_us\\": %d, " ..
    "\\"max_us\\": %d, \\"connect\\": %d, \\"read\\": %d, \\"write\\": %d, \\"status\\": %d, " ..
    "\\"timeout\\": %d}}\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""


# --- data classes ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerSpec:
    """How to start one server and what to measure on it."""

    name: str
    stack: str
    command: Callable[[int], list[str]]  # port -> argv
    env: dict[str, str]
    ready_path: str
    rows: tuple[int, ...]
    auth: str | None = None  # the API key every request carries
    checks_predictions: bool = True  # False for the constant-answer ceiling apps


@dataclass
class LoadSample:
    """One wrk run."""

    requests: int
    duration_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    server_cores: float = 0.0  # CPU the server's process tree used, in cores (CPU s / wall s)
    wrk_cores: float = 0.0
    other_cores: float = 0.0  # everything else on the machine (other processes, steal)

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s


@dataclass
class ServerSamples:
    """Everything measured on one server across the repeats."""

    spec: ServerSpec
    cold_s: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    rss_end_mb: list[float] = field(default_factory=list)
    loads: dict[tuple[int, int], list[LoadSample]] = field(default_factory=dict)
    retakes: int = 0
    predictions: dict[int, list[float]] = field(default_factory=dict)


@dataclass
class Row:
    """One line of the result table (medians over the repeats)."""

    server: str
    rows: int
    connections: int
    rps: float
    rps_min: float
    rps_max: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    other_cores: float
    cold_s: float
    rss_mb: float
    ratio_vs_mlflow: float | None
    n: int


@dataclass
class Machine:
    """Where the figures were taken."""

    cores: int
    python: str
    platform: str
    wrk: str
    versions: dict[str, str]


# --- set-up --------------------------------------------------------------------------------------------


def ensure_wrk() -> str:
    """The path of wrk, installing it with apt-get when missing and running as root.

    Raises:
        SystemExit: wrk is missing and cannot be installed from here.
    """
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise SystemExit(
            "wrk is not installed and this is not root on an apt system; install it first "
            "(`sudo apt-get install -y wrk`, or build it from source) and run again"
        )
    print("wrk is missing: apt-get install -y wrk", file=sys.stderr, flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "wrk"]
    if subprocess.run(install, env=env, stdout=subprocess.DEVNULL, check=False).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, stdout=subprocess.DEVNULL, check=False)
        subprocess.run(install, env=env, stdout=subprocess.DEVNULL, check=False)
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("apt-get could not install wrk; install it by hand and run again")
    return found


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without MLflow/vintage/granian overrides, with the venv's bin first on PATH
    (``mlflow models serve`` runs ``uvicorn`` from PATH), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "VINTAGE_", "GRANIAN_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra or {})
    return env


def venv_tool(name: str) -> str:
    """A console script next to this interpreter (the venv's), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"cannot find `{name}`; run this with the project's .venv/bin/python")
    return found


def run_checked(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float) -> str:
    """Run to completion; stdout.

    Raises:
        RuntimeError: the command failed (its stderr tail is in the message).
    """
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace")[-2000:]
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{tail}")
    return proc.stdout.decode()


def train_and_materialize(root: Path) -> tuple[Path, str]:
    """Train the default workload in a fresh project under ``root``; (model directory of v1, tracking URI)."""
    project = root / "project"
    project.mkdir()
    shutil.copy2(CONFIG, project / "vintage.yaml")
    env = child_env()
    run_checked([venv_tool("vintage"), "train"], project, env, TRAIN_TIMEOUT_S)
    uri = f"sqlite:///{project / '.vintage' / 'mlflow.db'}"
    out = run_checked(
        [sys.executable, "-c", MATERIALIZE_SCRIPT, MODEL_URI, str(root / "models"), uri],
        project,
        env,
        TRAIN_TIMEOUT_S,
    )
    return Path(out.strip().splitlines()[-1]), uri


def bodies(rows: tuple[int, ...]) -> dict[int, bytes]:
    """``dataframe_split`` bodies with the first n rows of the red wine data, for each n in ``rows``."""
    with RED_WINE_CSV.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh, delimiter=";")
        header = next(reader)
        keep = [i for i, name in enumerate(header) if name != TARGET_COLUMN]
        data = [[float(line[i]) for i in keep] for _, line in zip(range(max(rows)), reader, strict=False)]
    columns = [header[i] for i in keep]
    out: dict[int, bytes] = {}
    for n in rows:
        doc = {"dataframe_split": {"columns": columns, "data": data[:n]}}
        out[n] = json.dumps(doc, separators=(",", ":")).encode()
    return out


def write_lua(path: Path, body: bytes, key: str | None) -> Path:
    """The wrk script: POST ``body``, print one ``BENCH {json}`` line from ``done()``."""
    auth = f'wrk.headers["Authorization"] = "Bearer {key}"' if key else ""
    path.write_text(LUA_TEMPLATE.format(body=body.decode(), auth=auth), encoding="utf-8")
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_specs(
    model_dir: Path,
    tracking_uri: str,
    key_file: Path,
    key: str,
    baseline_src: list[Path] | None = None,
    log_root: Path | None = None,
) -> list[ServerSpec]:
    """The servers, in the order each repeat runs them (with ``baseline_src``, the same server from another
    source tree too, for a before/after comparison in one run)."""
    from vintage.serving.launch import ServerCommand

    py, granian, local = sys.executable, venv_tool("granian"), ["--host", "127.0.0.1"]
    quiet = ["--no-access-log", "--log-level", "warning"]

    def vintage(port: int) -> list[str]:
        return ServerCommand(model_dir, host="127.0.0.1", port=port).argv(py)

    def vintage_key(port: int) -> list[str]:
        return [*vintage(port), "--api-key-file", str(key_file)]

    def vintage_log(sample: float) -> Callable[[int], list[str]]:
        def cmd(port: int) -> list[str]:
            directory = (log_root or Path(tempfile.gettempdir())) / f"inference-{sample:g}-{port}"
            settings = {"directory": str(directory), "sample": sample}
            return ServerCommand(model_dir, host="127.0.0.1", port=port, inference_log=settings).argv(py)

        return cmd

    def mlflow(port: int) -> list[str]:
        serve = f"models serve -m {MODEL_URI} --env-manager local -h 127.0.0.1".split()
        return [venv_tool("mlflow"), *serve, "-p", str(port)]

    def on_granian(target: str, factory: bool) -> Callable[[int], list[str]]:
        def cmd(port: int) -> list[str]:
            opts = ["--interface", "asgi", *local, "--port", str(port), "--workers", "1", *quiet]
            extra = ["--factory"] if factory else []
            return [granian, *opts, "--working-dir", str(BENCH_DIR), *extra, target]

        return cmd

    def ceiling_uvicorn(port: int) -> list[str]:
        stack = ["--http", "httptools", "--loop", "uvloop", "--lifespan", "off"]
        return [
            py,
            "-m",
            "uvicorn",
            *local,
            "--port",
            str(port),
            *stack,
            *quiet,
            "--app-dir",
            str(BENCH_DIR),
            "_ceiling_app:app",
        ]

    uvi, gra = "uvicorn+httptools+uvloop", "granian (asgi)"
    plain, with_model = child_env(), child_env({"VINTAGE_MODEL_DIR": str(model_dir)})
    registry = child_env({"MLFLOW_TRACKING_URI": tracking_uri})
    baseline = [
        ServerSpec(f"{BASELINE} {src.resolve().parent.name}", uvi, vintage,
                   child_env({"PYTHONPATH": str(src)}), "/ready", BODY_ROWS)
        for src in baseline_src or []
    ]  # fmt: skip
    return [
        ServerSpec(VINTAGE, uvi, vintage, plain, "/ready", BODY_ROWS),
        ServerSpec(VINTAGE_LOG, uvi, vintage_log(0.1), plain, "/ready", BODY_ROWS),
        ServerSpec(VINTAGE_LOG_ALL, uvi, vintage_log(1.0), plain, "/ready", BODY_ROWS),
        *baseline,
        ServerSpec(MLFLOW, "uvicorn+FastAPI (MLflow)", mlflow, registry, "/ping", BODY_ROWS),
        ServerSpec(VINTAGE_KEY, uvi, vintage_key, plain, "/ready", (1,), auth=key),
        ServerSpec(GRANIAN, gra, on_granian("_granian_app:build", True), with_model, "/ready", BODY_ROWS),
        ServerSpec(CEILING_UVICORN, uvi, ceiling_uvicorn, plain, "/ping", BODY_ROWS,
                   checks_predictions=False),
        ServerSpec(CEILING_GRANIAN, gra, on_granian("_ceiling_app:app", False), plain, "/ping", (1,),
                   checks_predictions=False),
    ]  # fmt: skip


# --- processes -----------------------------------------------------------------------------------------


_LIVE: dict[int, subprocess.Popen[bytes]] = {}


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group, SIGKILL it if it is still there after STOP_TIMEOUT_S."""
    _LIVE.pop(proc.pid, None)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            continue
        # the leader is gone; make sure no worker of the group survives it
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        return


def stop_all() -> None:
    for proc in list(_LIVE.values()):
        stop(proc)


@contextlib.contextmanager
def running(spec: ServerSpec, port: int, log: Path) -> Iterator[tuple[subprocess.Popen[bytes], float]]:
    """Start the server in its own process group; yield (process, cold start s); always stop it."""
    with log.open("wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(
            spec.command(port),
            env=spec.env,
            cwd=log.parent,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _LIVE[proc.pid] = proc
    try:
        cold = wait_ready(proc, port, spec.ready_path, started, log)
        yield proc, cold
    finally:
        stop(proc)


def wait_ready(proc: subprocess.Popen[bytes], port: int, path: str, started: float, log: Path) -> float:
    """Seconds from ``started`` to the first 200 on ``path``.

    Raises:
        RuntimeError: the server exited or did not get ready within START_TIMEOUT_S.
    """
    while time.perf_counter() - started < START_TIMEOUT_S:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}:\n{_tail(log)}")
        try:
            status, _ = request(port, "GET", path, None, None, timeout=2.0)
        except OSError:
            status = 0
        if status == 200:
            return time.perf_counter() - started
        time.sleep(POLL_S)
    raise RuntimeError(f"the server was not ready after {START_TIMEOUT_S:.0f} s:\n{_tail(log)}")


def _tail(log: Path) -> str:
    return log.read_text(encoding="utf-8", errors="replace")[-2000:]


def request(
    port: int, method: str, path: str, body: bytes | None, key: str | None, timeout: float = 10.0
) -> tuple[int, bytes]:
    """One HTTP request to 127.0.0.1; (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def process_tree(pid: int) -> set[int]:
    """``pid`` and all its live descendants (from /proc/*/stat)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parents[int(entry.name)] = int(_stat_fields(entry / "stat")[1])
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in tree:
                tree.add(child)
                frontier.append(child)
    return tree


def _stat_fields(path: Path) -> list[str]:
    """Fields of a /proc/PID/stat after the command name (which may hold spaces): state, ppid, ..."""
    stat = path.read_text()
    return stat[stat.rfind(")") + 2 :].split()


def tree_rss_mb(pid: int) -> float:
    """Sum of VmRSS over ``pid`` and all its descendants, in MB (10^6 bytes)."""
    kb = 0
    for member in process_tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    kb += int(line.split()[1])
    return kb * 1024 / 1e6


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and its live descendants."""
    ticks = 0
    for member in process_tree(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = _stat_fields(Path(f"/proc/{member}/stat"))
            ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks / CLOCK_TICKS


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy (user, nice, system, steal; not interrupts)."""
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = (
        int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    return (user + nice + system + steal) / CLOCK_TICKS


def own_and_children_cpu_s() -> tuple[float, float]:
    """CPU seconds of this process, and of its reaped children (wrk, once it has exited)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


# --- load ----------------------------------------------------------------------------------------------


def run_wrk(wrk: str, lua: Path, port: int, connections: int, duration: float, server: int) -> LoadSample:
    """``wrk -t{2|1} -c{connections} -d{duration}s --latency`` against /invocations, with the CPU that the
    server (process tree of ``server``), wrk and everything else on the machine used meanwhile.

    Raises:
        RuntimeError: wrk failed or printed no BENCH line.
    """
    threads = min(2, connections)
    cmd = [wrk, f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--latency", "-s", str(lua)]
    cmd.append(f"http://127.0.0.1:{port}/invocations")
    busy0, server0, (me0, kids0) = machine_busy_s(), tree_cpu_s(server), own_and_children_cpu_s()
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, timeout=duration + 60, check=False)
    wall = time.perf_counter() - started
    busy, server_s, (me, kids) = (
        machine_busy_s() - busy0,
        tree_cpu_s(server) - server0,
        own_and_children_cpu_s(),
    )
    wrk_s, mine = kids - kids0, me - me0
    out = proc.stdout.decode(errors="replace")
    line = next((x for x in out.splitlines() if x.startswith("BENCH ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out}\n{proc.stderr.decode()}")
    r = json.loads(line.removeprefix("BENCH "))
    errors = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
    return LoadSample(
        requests=r["requests"],
        duration_s=r["duration_us"] / 1e6,
        p50_ms=r["p50_us"] / 1000,
        p99_ms=r["p99_us"] / 1000,
        max_ms=r["max_us"] / 1000,
        errors=errors,
        server_cores=server_s / wall,
        wrk_cores=wrk_s / wall,
        other_cores=max(0.0, busy - server_s - wrk_s - mine) / wall,
    )


def check_answers(spec: ServerSpec, port: int, payloads: dict[int, bytes], samples: ServerSamples) -> None:
    """One request per body by hand: 200 and (unless a ceiling app) one finite prediction per row.

    Raises:
        RuntimeError: a wrong status or answer.
    """
    for rows in spec.rows:
        status, body = request(port, "POST", "/invocations", payloads[rows], spec.auth)
        if status != 200:
            raise RuntimeError(
                f"{spec.name}: POST /invocations ({rows} rows) answered {status}: {body[:300]!r}"
            )
        if not spec.checks_predictions:
            continue
        preds = json.loads(body)["predictions"]
        if len(preds) != rows or not all(isinstance(p, float) for p in preds):
            raise RuntimeError(f"{spec.name}: unexpected answer for {rows} rows: {body[:300]!r}")
        samples.predictions[rows] = preds
    if spec.auth:
        status, _ = request(port, "POST", "/invocations", payloads[spec.rows[0]], None)
        if status != 401:
            raise RuntimeError(f"{spec.name}: a request without the key answered {status}, not 401")


def quiet_load(
    name: str,
    samples: ServerSamples,
    load: Callable[[], LoadSample],
    args: argparse.Namespace,
    label: str,
    progress: Callable[[str], None],
) -> LoadSample:
    """Run ``load``; retake it (at most ``--retakes`` times) while other processes used more than
    ``--max-other-cpu`` cores meanwhile. Returns the quietest attempt, carrying the errors of all."""
    tries: list[LoadSample] = []
    while True:
        s = load()
        tries.append(s)
        progress(
            f"  {name:<20} {label} {s.rps:>9.0f} req/s  p50 {s.p50_ms:.3f} ms  p99 {s.p99_ms:.3f} ms"
            f"  errors {s.errors}  cores: server {s.server_cores:.2f} wrk {s.wrk_cores:.2f}"
            f" other {s.other_cores:.2f}"
        )
        if s.other_cores <= args.max_other_cpu or len(tries) > args.retakes:
            break
        samples.retakes += 1
        progress(f"  retaking: other processes used {s.other_cores:.2f} cores meanwhile")
    best = min(tries, key=lambda t: t.other_cores)
    best.errors = sum(t.errors for t in tries)
    return best


def measure_server(
    spec: ServerSpec,
    samples: ServerSamples,
    luas: dict[tuple[int, bool], Path],
    payloads: dict[int, bytes],
    wrk: str,
    args: argparse.Namespace,
    logs: Path,
    progress: Callable[[str], None],
) -> None:
    """Start, check, warm up, measure RSS and every load of one server once; stop it."""
    port = free_port()
    log = logs / f"{spec.name.replace(' ', '_').replace('(', '').replace(')', '').replace('+', 'plus')}.log"
    with running(spec, port, log) as (proc, cold):
        samples.cold_s.append(cold)
        check_answers(spec, port, payloads, samples)
        first = spec.rows[0]
        if args.warmup > 0:
            run_wrk(wrk, luas[(first, spec.auth is not None)], port, 16, args.warmup, proc.pid)
        samples.rss_mb.append(tree_rss_mb(proc.pid))
        for rows in spec.rows:
            for conns in CONNECTIONS:
                lua = luas[(rows, spec.auth is not None)]
                load = functools.partial(run_wrk, wrk, lua, port, conns, args.duration, proc.pid)
                sample = quiet_load(spec.name, samples, load, args, f"{rows:>2} rows c{conns:<2}", progress)
                samples.loads.setdefault((rows, conns), []).append(sample)
        samples.rss_end_mb.append(tree_rss_mb(proc.pid))
        progress(f"  {spec.name:<20} cold start {cold:.3f} s, RSS {samples.rss_mb[-1]:.1f} MB")


def run_all(args: argparse.Namespace, wrk: str, progress: Callable[[str], None]) -> list[ServerSamples]:
    """Set up once, then measure every server ``--repeat`` times, interleaved."""
    with tempfile.TemporaryDirectory(prefix="vintage-serving-bench-") as tmp:
        root = Path(tmp)
        progress("training the default workload and materialising models:/winequality/1 ...")
        model_dir, tracking_uri = train_and_materialize(root)
        key = secrets.token_urlsafe(32)
        key_file = root / "api-keys"
        key_file.write_text(key + "\n", encoding="utf-8")
        key_file.chmod(0o600)
        payloads = bodies(BODY_ROWS)
        luas = {
            (rows, auth): write_lua(
                root / f"post-{rows}-{int(auth)}.lua", payloads[rows], key if auth else None
            )
            for rows in BODY_ROWS
            for auth in (False, True)
        }
        logs = root / "logs"
        logs.mkdir()
        specs = server_specs(model_dir, tracking_uri, key_file, key, args.baseline_src, root / "inference")
        if args.servers:
            keep = {*args.servers, MLFLOW}
            specs = [s for s in specs if s.name in keep or s.name.startswith(BASELINE)]
        results = [ServerSamples(spec) for spec in specs]
        for i in range(args.repeat):
            progress(f"repeat {i + 1}/{args.repeat}")
            for samples in results:
                measure_server(samples.spec, samples, luas, payloads, wrk, args, logs, progress)
        return results


# --- report --------------------------------------------------------------------------------------------


def summarize(results: list[ServerSamples]) -> list[Row]:
    """Median rows; ratio vs MLflow's req/s for the same body at 16 connections."""
    by_name = {r.spec.name: r for r in results}
    mlflow = by_name.get(MLFLOW)
    anchor = {
        rows: statistics.median(s.rps for s in mlflow.loads[(rows, 16)])
        for rows in BODY_ROWS
        if mlflow and (rows, 16) in mlflow.loads
    }
    out: list[Row] = []
    for r in results:
        for (rows, conns), loads in r.loads.items():
            rps = statistics.median(s.rps for s in loads)
            ratio = rps / anchor[rows] if conns == 16 and rows in anchor else None
            out.append(
                Row(
                    server=r.spec.name,
                    rows=rows,
                    connections=conns,
                    rps=rps,
                    rps_min=min(s.rps for s in loads),
                    rps_max=max(s.rps for s in loads),
                    p50_ms=statistics.median(s.p50_ms for s in loads),
                    p99_ms=statistics.median(s.p99_ms for s in loads),
                    errors=sum(s.errors for s in loads),
                    requests=sum(s.requests for s in loads),
                    other_cores=statistics.median(s.other_cores for s in loads),
                    cold_s=statistics.median(r.cold_s),
                    rss_mb=statistics.median(r.rss_mb),
                    ratio_vs_mlflow=ratio,
                    n=len(loads),
                )
            )
    return out


def targets(rows: list[Row]) -> list[dict[str, Any]]:
    """The issue's targets, judged on the `vintage` rows."""
    mine = {(r.rows, r.connections): r for r in rows if r.server == VINTAGE}
    out: list[dict[str, Any]] = []

    def add(what: str, value: float | None, limit: float, unit: str, higher_is_better: bool) -> None:
        met = value is not None and (value >= limit if higher_is_better else value <= limit)
        op = ">=" if higher_is_better else "<="
        out.append({"target": f"{what} {op} {limit:g}{unit}", "value": value, "unit": unit, "met": met})

    for n in BODY_ROWS:
        if (n, 16) in mine:
            add(f"req/s vs MLflow, {n} row(s), 16 connections", mine[(n, 16)].ratio_vs_mlflow, TARGET_RATIO,
                "x", True)  # fmt: skip
    ceiling = {(r.rows, r.connections): r for r in rows if r.server == CEILING_UVICORN}
    for n in BODY_ROWS:
        if (n, 16) in mine and (n, 16) in ceiling:
            share = 100.0 * mine[(n, 16)].rps / ceiling[(n, 16)].rps
            add(f"req/s vs the bare-ASGI ceiling (uvicorn), {n} row(s), 16 connections", share,
                100 * TARGET_CEILING_SHARE, "%", True)  # fmt: skip
    for n in BODY_ROWS:
        if (n, 16) in mine:
            add(f"p99, {n} row(s), 16 connections", mine[(n, 16)].p99_ms, TARGET_P99_MS, " ms", False)
    for n in BODY_ROWS:
        if (n, 1) in mine:
            add(f"p50, {n} row(s), 1 connection", mine[(n, 1)].p50_ms, TARGET_P50_MS, " ms", False)
    if mine:
        any_row = next(iter(mine.values()))
        add("cold start", any_row.cold_s, TARGET_COLD_S, " s", False)
        add("RSS after warm-up", any_row.rss_mb, TARGET_RSS_MB, " MB", False)
    logged = {(r.rows, r.connections): r for r in rows if r.server == VINTAGE_LOG}
    for n in BODY_ROWS:
        if (n, 16) in mine and (n, 16) in logged:
            cost = 100.0 * (1.0 - logged[(n, 16)].rps / mine[(n, 16)].rps)
            add(f"inference log (sample 0.1) cost, {n} row(s), 16 connections", cost, 100 * TARGET_LOG_COST,
                "% of req/s", False)  # fmt: skip
    return out


def paired_log_costs(results: list[ServerSamples]) -> dict[str, list[float]]:
    """Per repeat, the req/s an inference-log server lost against ``vintage`` (in %), at 16 connections."""
    by_name = {r.spec.name: r for r in results}
    base = by_name.get(VINTAGE)
    out: dict[str, list[float]] = {}
    for name in (VINTAGE_LOG, VINTAGE_LOG_ALL):
        logged = by_name.get(name)
        if base is None or logged is None:
            continue
        for n in BODY_ROWS:
            pairs = list(zip(base.loads.get((n, 16), []), logged.loads.get((n, 16), []), strict=False))
            out[f"{name}, {n} row(s)"] = [100.0 * (1.0 - b.rps / a.rps) for a, b in pairs]
            # the same from the server's CPU time per request, which other processes on the machine disturb
            # less than req/s: on a quiet machine one worker is CPU-bound, so req/s = 1 / (CPU per request)
            out[f"{name}, {n} row(s), from server CPU per request"] = [
                100.0 * (1.0 - (a.server_cores / a.rps) / (b.server_cores / b.rps))
                for a, b in pairs
                if a.rps and b.rps and b.server_cores
            ]
    return out


def agreement(results: list[ServerSamples]) -> float | None:
    """Largest |vintage - MLflow| over the checked predictions, or None when either is missing."""
    by_name = {r.spec.name: r for r in results}
    if VINTAGE not in by_name or MLFLOW not in by_name:
        return None
    diffs = [
        abs(a - b)
        for rows, preds in by_name[VINTAGE].predictions.items()
        for a, b in zip(preds, by_name[MLFLOW].predictions.get(rows, []), strict=False)
    ]
    return max(diffs) if diffs else None


def machine(wrk: str) -> Machine:
    out = subprocess.run([wrk, "--version"], capture_output=True, check=False).stdout.decode()
    versions = {}
    for dist in ("mlflow", "scikit-learn", "uvicorn", "httptools", "uvloop", "granian", "orjson", "numpy"):
        try:
            versions[dist] = version(dist)
        except PackageNotFoundError:
            versions[dist] = "not installed"
    return Machine(
        cores=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0,
        python=platform.python_version(),
        platform=platform.platform(),
        wrk=out.splitlines()[0] if out else "unknown",
        versions=versions,
    )


def render(rows: list[Row], results: list[ServerSamples], box: Machine, args: argparse.Namespace) -> str:
    """Plain-text report: machine, the median table, the targets."""
    vs = ", ".join(f"{k} {v}" for k, v in box.versions.items())
    lines = [
        f"machine: {box.cores} cores, Python {box.python}, {box.wrk}; {vs}",
        f"wrk -d{args.duration:g}s, {args.repeat} repeats, medians; 16 connections = -t2 -c16, 1 = -t1 -c1",
        "",
        f"{'server':<20} {'rows':>4} {'conns':>5} {'req/s':>9} {'(min-max)':>15} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'errors':>6} {'cold s':>6} {'RSS MB':>6} {'x MLflow':>8} {'other':>5}",
    ]
    for r in rows:
        ratio = f"{r.ratio_vs_mlflow:.1f}" if r.ratio_vs_mlflow is not None else ""
        span = f"{r.rps_min:.0f}-{r.rps_max:.0f}"
        lines.append(
            f"{r.server:<20} {r.rows:>4} {r.connections:>5} {r.rps:>9.0f} {span:>15} {r.p50_ms:>7.3f} "
            f"{r.p99_ms:>7.3f} {r.errors:>6} {r.cold_s:>6.2f} {r.rss_mb:>6.1f} {ratio:>8} "
            f"{r.other_cores:>5.2f}"
        )
    retakes = sum(r.retakes for r in results)
    lines.append(
        f"other: median cores used by other processes during the kept samples; {retakes} sample(s) retaken "
        f"because other processes used more than {args.max_other_cpu:g} cores"
    )
    diff = agreement(results)
    if diff is not None:
        lines.append(f"\nlargest |vintage - MLflow| prediction difference on the checked bodies: {diff:.3g}")
    for what, costs in paired_log_costs(results).items():
        shown = ", ".join(f"{c:.1f}" for c in costs)
        median = f" (median {statistics.median(costs):.1f})" if costs else ""
        lines.append(
            f"req/s lost to the inference log per repeat (%), {what}, 16 connections: {shown}{median}"
        )
    lines.append("")
    for t in targets(rows):
        value = "n/a" if t["value"] is None else f"{t['value']:.3g}{t['unit']}"
        lines.append(f"target {t['target']}: {value}, {'met' if t['met'] else 'NOT met'}")
    return "\n".join(lines)


def as_json(rows: list[Row], results: list[ServerSamples], box: Machine, args: argparse.Namespace) -> str:
    raw = [
        {
            "server": r.spec.name,
            "stack": r.spec.stack,
            "cold_s": [round(x, 4) for x in r.cold_s],
            "rss_mb": [round(x, 1) for x in r.rss_mb],
            "rss_after_loads_mb": [round(x, 1) for x in r.rss_end_mb],
            "retakes": r.retakes,
            "loads": {
                f"{rows}rows_c{conns}": [asdict(s) | {"rps": round(s.rps, 1)} for s in loads]
                for (rows, conns), loads in r.loads.items()
            },
        }
        for r in results
    ]
    payload = {
        "machine": asdict(box),
        "duration_s": args.duration,
        "repeat": args.repeat,
        "max_other_cpu": args.max_other_cpu,
        "rows": [asdict(r) for r in rows],
        "targets": targets(rows),
        "max_prediction_difference_vs_mlflow": agreement(results),
        "inference_log_cost_pct_per_repeat": paired_log_costs(results),
        "samples": raw,
    }
    return json.dumps(payload, indent=2)


# --- main ----------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (default 10)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds over all servers (default 3)")
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="seconds of discarded load first (default 2)"
    )
    parser.add_argument(
        "--max-other-cpu",
        type=float,
        default=0.2,
        help="retake a load sample during which other processes used more than this many cores (default 0.2)",
    )
    parser.add_argument(
        "--retakes", type=int, default=2, help="at most this many retakes per sample (default 2)"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--baseline-src",
        type=Path,
        action="append",
        help="also run `python -m vintage.serving` from this src/ tree (e.g. a `git archive` of an older "
        "commit) as the row 'vintage @ <name of the directory holding src>': before and after side by "
        "side in one run (repeatable)",
    )
    parser.add_argument(
        "--servers",
        nargs="+",
        metavar="NAME",
        help="only these server rows (by name; the MLflow anchor and --baseline-src rows always run)",
    )
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.duration < 1 or args.warmup < 0:
        parser.error("--repeat and --duration must be >= 1, --warmup >= 0")
    return args


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)  # run the clean-up on `kill` as on Ctrl-C
    wrk = ensure_wrk()
    box = machine(wrk)
    try:
        results = run_all(args, wrk, lambda msg: print(msg, file=sys.stderr, flush=True))
    except KeyboardInterrupt:
        print("interrupted; servers stopped, temporary files removed", file=sys.stderr)
        return 130
    finally:
        stop_all()
    rows = summarize(results)
    print(as_json(rows, results, box, args) if args.json else render(rows, results, box, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
