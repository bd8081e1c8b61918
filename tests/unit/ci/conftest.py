"""Pipelines to render: the repo's vintage.yaml and a custom four-stage pipeline with two approval gates."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]

# build -> qa (approval) -> production (approval) -> report (always), with secret references: shared
# (ci/...), bound to production (production/registry/...), and the API keys of qa and production.
CUSTOM = """\
experiment: Custom
tracking_uri: http://127.0.0.1:5000
tracking_token: ${secret:ci/mlflow_token}
compute:
  databricks:
    token: ${secret:ci/databricks_token}
environments:
  qa:
    port: 8083
    api_keys: true
  production:
    port: 8084
    approvers: [alice, bob]
pipeline:
  stages:
    - name: build
      steps: [validate, train, register, release]
    - name: qa
      environment: qa
      depends_on: [build]
      steps: [approval, deploy, smoke_test, promote]
    - name: production
      environment: production
      depends_on: [qa]
      steps: [approval, deploy, smoke_test, promote]
    - name: smoke-report
      environment: staging
      depends_on: [production]
      condition: always
      steps: [smoke_test]
"""


@pytest.fixture
def repo_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project holding a copy of the repo's vintage.yaml, as the working directory."""
    shutil.copy(REPO / "vintage.yaml", tmp_path / "vintage.yaml")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def custom_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project with the custom pipeline, as the working directory."""
    (tmp_path / "vintage.yaml").write_text(CUSTOM, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path
