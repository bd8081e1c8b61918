"""A real Spark standalone cluster (master + workers) from the pip ``pyspark`` package, on 127.0.0.1.

The pip package has no sbin start scripts, so the JVMs are started with ``spark-class``; ``SPARK_HOME``
comes from ``import pyspark`` and executors run this venv's python (``PYSPARK_PYTHON``). Every port binds
loopback (``SPARK_LOCAL_IP=127.0.0.1``), the master's REST port is off, and work/log/tmp dirs live in a
temp dir. Start-up takes ~8 s, so the integration tests share one cluster per session.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spark_home() -> str:
    import pyspark

    return str(Path(pyspark.__file__).parent)


def spark_env(work: Path) -> dict[str, str]:
    """Environment for Spark JVMs and drivers started by the tests."""
    tmp = work / "tmp"
    for sub in ("logs", "work", "local", "tmp"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    jvm = f"-Djava.io.tmpdir={tmp} -XX:-UsePerfData"
    return {
        **os.environ,
        "SPARK_HOME": spark_home(),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "SPARK_LOG_DIR": str(work / "logs"),
        "SPARK_LOCAL_DIRS": str(work / "local"),
        "TMPDIR": str(tmp),
        "SPARK_MASTER_OPTS": "-Dspark.master.rest.enabled=false",
        "SPARK_DAEMON_JAVA_OPTS": jvm,
    }


@dataclass
class Cluster:
    """A running cluster: ``master`` is ``spark://127.0.0.1:PORT``."""

    master: str
    work: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    worker_pids: list[int] = field(default_factory=list)


def _wait_log(proc: subprocess.Popen[bytes], log: Path, pattern: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and pattern in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"{log.name}: process exited {proc.returncode}: {log.read_text()[-2000:]}")
        time.sleep(0.25)
    raise RuntimeError(f"{log.name}: no '{pattern}' after {timeout} s: {log.read_text()[-2000:]}")


@contextlib.contextmanager
def spark_cluster(work: Path, workers: int = 2) -> Iterator[Cluster]:
    """Master + ``workers`` workers (1 core, 1 GiB each); stopped (SIGTERM, then SIGKILL) at exit."""
    env = spark_env(work)
    spark_class = str(Path(env["SPARK_HOME"]) / "bin" / "spark-class")
    port, ui = _free_port(), _free_port()
    cluster = Cluster(f"spark://127.0.0.1:{port}", work)
    try:
        log = work / "master.log"
        with log.open("wb") as fh:
            master = subprocess.Popen(
                [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                 "--port", str(port), "--webui-port", str(ui)],
                stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )  # fmt: skip
        cluster.procs.append(master)
        _wait_log(master, log, "I have been elected leader", 120)
        pending = []
        for i in range(workers):
            wlog = work / f"worker{i}.log"
            with wlog.open("wb") as fh:
                proc = subprocess.Popen(
                    [spark_class, "org.apache.spark.deploy.worker.Worker", cluster.master,
                     "--host", "127.0.0.1", "--cores", "1", "--memory", "1g",
                     "--webui-port", str(_free_port()), "--work-dir", str(work / "work")],
                    stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                )  # fmt: skip
            cluster.procs.append(proc)
            cluster.worker_pids.append(proc.pid)
            pending.append((proc, wlog))
        for proc, wlog in pending:
            _wait_log(proc, wlog, "Successfully registered with master", 120)
        yield cluster
    finally:
        for proc in reversed(cluster.procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in reversed(cluster.procs):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@contextlib.contextmanager
def connect_server(cluster: Cluster, cores: int = 1) -> Iterator[str]:
    """A Spark Connect server on ``cluster`` (holding ``cores`` cores for its life); yields ``sc://...``.

    It gets only part of the cluster, or a classic session started later would wait forever for cores.
    """
    env = spark_env(cluster.work)
    port = _free_port()
    submit = str(Path(env["SPARK_HOME"]) / "bin" / "spark-submit")
    tmp = cluster.work / "tmp"
    log = cluster.work / "connect.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [submit, "--class", "org.apache.spark.sql.connect.service.SparkConnectServer",
             "--name", "vintage-tests-connect", "--master", cluster.master,
             "--driver-java-options", f"-Djava.io.tmpdir={tmp} -XX:-UsePerfData",
             "--conf", "spark.connect.grpc.binding.address=127.0.0.1",
             "--conf", f"spark.connect.grpc.binding.port={port}",
             "--conf", "spark.driver.host=127.0.0.1", "--conf", "spark.ui.enabled=false",
             "--conf", "spark.executor.memory=512m", "--conf", f"spark.cores.max={cores}"],
            stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip
    try:
        _wait_log(proc, log, "Spark Connect server started at", 180)
        yield f"sc://127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


MEMORY_GUARD = "vintage memory guard: the whole data set was materialised on the driver"
_GUARD_MODULE = f'''"""Imported before ``vintage`` runs (support.spark.guarded_vintage): the data is validated
and digested in 200-row chunks; anything that would hold the whole data set in the driver fails."""
import vintage.data.load as load

load.SCAN_ROWS = 200


def _refuse(*args, **kwargs):
    raise AssertionError({MEMORY_GUARD!r})


load.read_table = _refuse  # pandas read of the whole file
load.Dataset.frame = property(_refuse)  # the whole pandas frame
load.Dataset.split = _refuse  # train_test_split of it


def _bounded(original):
    def to_pandas(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        if len(out) > 200:
            raise AssertionError({MEMORY_GUARD!r} + f" (toPandas of {{len(out)}} rows)")
        return out

    return to_pandas


from pyspark.sql.classic.dataframe import DataFrame as _Classic
from pyspark.sql.connect.dataframe import DataFrame as _Connect

_Classic.toPandas = _bounded(_Classic.toPandas)
_Connect.toPandas = _bounded(_Connect.toPandas)
'''


def guarded_vintage(work: Path) -> list[str]:
    """The command line of a ``vintage`` process that fails (``MEMORY_GUARD``) if the whole data set is
    loaded into the driver: a pandas read of the whole file, ``Dataset.frame``/``split``, or a Spark
    ``toPandas`` of more than 200 rows. Load-and-validate runs in 200-row chunks there."""
    guard = work / "guard"
    guard.mkdir(parents=True, exist_ok=True)
    (guard / "vintage_memory_guard.py").write_text(_GUARD_MODULE)
    code = (
        f"import sys; sys.path.insert(0, {str(guard)!r}); import vintage_memory_guard; "
        "from vintage.cli.main import run; run(sys.argv[1:])"
    )
    return [sys.executable, "-c", code]
