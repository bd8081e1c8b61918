"""The container target from vintage.yaml: the config accepts it, `ops.target` builds it, and a machine
without the runtime gets one line saying how to install it (exit 1), before anything is touched."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from vintage.config import load_spec
from vintage.errors import ConfigError, DeployError
from vintage.pipeline import ops

CONTAINER_VALUES: dict[str, object] = {"runtime": "podman", "memory": "1g", "pids_limit": 256}


def _container_staging(project: Path, **extra: object) -> None:
    path = project / "vintage.yaml"
    spec = yaml.safe_load(path.read_text())
    spec.setdefault("environments", {})
    spec["environments"]["staging"] = {"target": "container", "port": 8081, **extra}
    path.write_text(yaml.safe_dump(spec))


def test_container_target_and_its_settings_are_accepted(project: Path) -> None:
    from vintage.deploy.container import ContainerSettings

    _container_staging(project, runtime="docker", memory="512m", pids_limit=128)
    env = load_spec().environments["staging"]
    assert env.target == "container"
    assert env.settings == ContainerSettings(runtime="docker", memory="512m", pids_limit=128)
    assert load_spec().environments["production"].target == "local"  # local stays the default


def test_container_settings_default_and_are_shown_flat(project: Path, cli) -> None:
    _container_staging(project)
    result = cli("config", "show", "--json")
    assert result.code == 0
    staging = json.loads(result.out)["environments"]["staging"]
    assert {k: staging[k] for k in ("runtime", "memory", "pids_limit")} == {
        "runtime": "podman",
        "memory": "1g",
        "pids_limit": 256,
    }
    assert "settings" not in staging
    assert "runtime" not in json.loads(result.out)["environments"]["production"]  # local: none of them


@pytest.mark.parametrize(
    ("extra", "where"),
    [
        ({"runtime": "containerd"}, "environments.staging.runtime: Input should be 'podman' or 'docker'"),
        ({"memory": "lots"}, "environments.staging.memory: String should match pattern"),
        ({"pids_limit": 1}, "environments.staging.pids_limit: Input should be greater than or equal to 16"),
    ],
)
def test_bad_container_settings_are_config_errors(
    project: Path, extra: dict[str, object], where: str
) -> None:
    _container_staging(project, **extra)
    with pytest.raises(ConfigError) as exc:
        load_spec()
    assert where in exc.value.headline


@pytest.mark.parametrize("key", ["runtime", "memory", "pids_limit"])
def test_a_container_setting_on_a_local_environment_is_an_unknown_key(project: Path, key: str) -> None:
    path = project / "vintage.yaml"
    spec = yaml.safe_load(path.read_text())
    spec["environments"] = {"production": {key: CONTAINER_VALUES[key]}}
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError) as exc:
        load_spec()
    where = f"{path.name}: environments.production.{key}"
    assert exc.value.headline.startswith(
        f"{where}: unknown key for the local target; expected one of: target,"
    )


@pytest.mark.skipif(shutil.which("podman") is None, reason="needs podman")
def test_ops_target_builds_the_container_target(project: Path) -> None:
    from vintage.deploy.container import ContainerTarget

    _container_staging(project, api_keys=True, memory="512m", pids_limit=128)
    spec = load_spec()
    target = ops.target(spec, "staging")
    assert isinstance(target, ContainerTarget)
    assert (target.port, target.key_scope, target.url) == (8081, "staging/serving", "http://127.0.0.1:8081")
    assert (target.memory, target.pids_limit, target.runtime.name) == ("512m", 128, "podman")
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
