"""The container target from vintage.yaml: the config accepts it, `ops.target` builds it, and a machine
without the runtime gets one line saying how to install it (exit 1), before anything is touched."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

from vintage.config import load_spec
from vintage.errors import ConfigError, DeployError
from vintage.pipeline import ops


def _container_staging(project: Path, **extra: object) -> None:
    path = project / "vintage.yaml"
    spec = yaml.safe_load(path.read_text())
    spec.setdefault("environments", {})
    spec["environments"]["staging"] = {"target": "container", "port": 8081, **extra}
    path.write_text(yaml.safe_dump(spec))


def test_container_target_and_its_settings_are_accepted(project: Path) -> None:
    _container_staging(project, runtime="docker", memory="512m", pids_limit=128)
    env = load_spec().environments["staging"]
    assert (env.target, env.runtime, env.memory, env.pids_limit) == ("container", "docker", "512m", 128)
    assert load_spec().environments["production"].target == "local"  # local stays the default


@pytest.mark.parametrize(
    ("extra", "where"),
    [
        ({"runtime": "containerd"}, "runtime"),
        ({"memory": "lots"}, "memory"),
        ({"pids_limit": 1}, "pids_limit"),
    ],
)
def test_bad_container_settings_are_config_errors(
    project: Path, extra: dict[str, object], where: str
) -> None:
    _container_staging(project, **extra)
    with pytest.raises(ConfigError) as exc:
        load_spec()
    assert where in str(exc.value)


@pytest.mark.skipif(shutil.which("podman") is None, reason="needs podman")
def test_ops_target_builds_the_container_target(project: Path) -> None:
    from vintage.deploy.container import ContainerTarget

    _container_staging(project, api_keys=True)
    spec = load_spec()
    target = ops.target(spec, "staging")
    assert isinstance(target, ContainerTarget)
    assert (target.port, target.key_scope, target.url) == (8081, "staging/serving", "http://127.0.0.1:8081")
    assert type(ops.target(spec, "production")).__name__ == "LocalTarget"


def test_without_the_runtime_the_error_is_one_line_with_the_fix(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli
) -> None:
    empty = tmp_path / "no-tools"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    _container_staging(project)
    with pytest.raises(DeployError) as exc:
        ops.target(load_spec(), "staging")
    assert "needs podman, which is not installed" in exc.value.headline
    assert "apt-get install -y podman runc" in (exc.value.hint or "")

    result = cli("stop", "staging")
    assert result.code == 1
    assert "needs podman, which is not installed" in result.err
    assert not (project / ".vintage" / "envs" / "staging").exists()  # nothing was touched
    assert os.environ["PATH"] == str(empty)
