"""Spark sessions for vintage: ``local[N]``, a standalone ``spark://`` master, or Spark Connect ``sc://``.

Every Spark port binds loopback unless the user's ``compute.spark.conf`` says otherwise; executors run the
driver's own Python (``PYSPARK_PYTHON``), so they can import vintage, scikit-learn and pyarrow.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vintage.errors import ConfigError, SparkError, first_line

if TYPE_CHECKING:
    from vintage.config.models import SparkSpec


def pyspark_available() -> bool:
    """True when PySpark is installed."""
    import importlib.util

    return importlib.util.find_spec("pyspark") is not None


def session(spec: SparkSpec, app_name: str = "vintage") -> Any:
    """A SparkSession for ``spec.master`` (classic for ``local``/``spark://``, Connect for ``sc://``).

    Raises:
        ConfigError: PySpark is not installed.
        SparkError: the session cannot be created (master unreachable, no Java, ...).
    """
    if not pyspark_available():
        raise ConfigError(
            "the Spark engine needs PySpark",
            hint="pip install 'vintage[spark]' (pyspark[connect]); Java 17 must be on the machine",
        )
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    master = spec.master
    _check_reachable(master)
    try:
        if master.startswith("sc://"):
            return _connect(SparkSession.builder.remote(master).getOrCreate(), spec.conf)
        builder = (
            SparkSession.builder.master(master)
            .appName(app_name)
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.ui.enabled", "false")
            .config("spark.sql.execution.arrow.pyspark.enabled", "true")
            .config("spark.ui.showConsoleProgress", "false")  # vintage shows its own progress
        )
        for key, value in spec.conf.items():
            builder = builder.config(key, value)
        if "spark.driver.extraJavaOptions" not in spec.conf:  # Spark's INFO/WARN chatter off the console
            logging = Path(__file__).with_name("log4j2.properties")
            builder = builder.config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile={logging}")
        return builder.getOrCreate()
    except Exception as exc:  # py4j / grpc / JVM start-up errors all end up here
        raise SparkError(
            f"cannot start a Spark session on {master}: {first_line(exc, 200)}",
            hint="check compute.spark.master and that the cluster runs (Java 17 is needed for local[*])",
        ) from exc


def _check_reachable(master: str, timeout: float = 3.0) -> None:
    """Fail in seconds, not after Spark's minute of registration retries, when nothing listens."""
    import socket

    scheme, sep, rest = master.partition("://")
    if not sep or scheme not in ("spark", "sc"):
        return
    hostport = rest.split("/", 1)[0].split(";", 1)[0]
    host, _, port = hostport.rpartition(":")
    default = 7077 if scheme == "spark" else 15002
    try:
        with socket.create_connection((host or hostport, int(port) if port.isdigit() else default), timeout):
            return
    except OSError as exc:
        raise SparkError(
            f"cannot reach the Spark {'master' if scheme == 'spark' else 'Connect server'} at {master} "
            f"({exc.__class__.__name__})",
            hint="start the cluster, or set compute.spark.master (or --master) to local[*]",
        ) from exc


def _connect(spark: Any, conf: dict[str, str]) -> Any:
    """A Spark Connect session with ``conf`` applied where the server allows it (runtime SQL settings).

    Static settings (memory, cores, ...) belong to the Connect server's own start-up; they are logged and
    skipped rather than failing the job.
    """
    import logging

    for key, value in conf.items():
        try:
            spark.conf.set(key, value)
        except Exception as exc:  # CANNOT_MODIFY_CONFIG and friends
            logging.getLogger(__name__).warning(
                "compute.spark.conf %s is not applied on Spark Connect (%s): set it where the server starts",
                key,
                first_line(exc, 120),
            )
    return spark
