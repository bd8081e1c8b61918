"""Session-wide real servers for the integration tests: PostgreSQL + ``mlflow server`` on 127.0.0.1, and
one Spark standalone cluster (master + 2 workers) shared by every Spark test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

try:
    from tests.support.spark import Cluster, spark_cluster
except ModuleNotFoundError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from support.spark import Cluster, spark_cluster


@pytest.fixture(scope="session")
def spark_master(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A Spark standalone master + 2 workers from the pip package on 127.0.0.1, once per test session.

    Started on first use (~8 s) and shared: the machine has 2 cores, and a second cluster would only
    compete with the first. Tests that start a Spark Connect server on it give that server 1 core.
    """
    with spark_cluster(tmp_path_factory.mktemp("spark"), workers=2) as cluster:
        yield cluster
