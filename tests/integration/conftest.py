"""Session-wide real servers for the integration tests: PostgreSQL + ``mlflow server`` on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

try:
    from tests.support.servers import mlflow_server, postgres_cluster
except ModuleNotFoundError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from support.servers import mlflow_server, postgres_cluster


@pytest.fixture(scope="session")
def mlflow_server_url() -> Iterator[str]:
    """Start a throwaway PostgreSQL cluster and an ``mlflow server`` on it once per test session.

    Yields the server's base URL (``http://127.0.0.1:PORT``). Never skips: without PostgreSQL the
    fixture errors, telling to run scripts/install-system-deps.sh (the Makefile does it).
    """
    with postgres_cluster() as backend_uri, mlflow_server(backend_uri) as url:
        yield url
