"""The plug-in tables: names resolve lazily, an unknown name is a one-line ConfigError naming the kind,
the name and the known names, config checks names against the tables, and a test can add a row."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vintage import plugins
from vintage.config.environments import EnvironmentSpec
from vintage.config.models import ComputeSpec, SecretsSpec
from vintage.errors import ConfigError
from vintage.plugins import DEPLOY_TARGETS, TABLES, Table


@pytest.mark.parametrize("table", list(TABLES.values()), ids=list(TABLES))
def test_every_row_resolves_to_an_attribute_with_from_spec_or_a_function(table: Table) -> None:
    for name in table.names():
        found = table.load(name)
        assert callable(found), (table.kind, name)
        if table is not plugins.SCORING_ENGINES:
            assert callable(getattr(found, "from_spec", None)), (table.kind, name)


def test_an_unknown_name_names_the_kind_the_name_the_known_names_and_the_key() -> None:
    with pytest.raises(ConfigError) as exc:
        DEPLOY_TARGETS.load("nomad")
    assert exc.value.headline == "unknown deploy target 'nomad'; known: local, container, kubernetes"
    assert exc.value.hint is not None and "environments.<env>.target" in exc.value.hint


def test_rows_are_imported_on_first_use_only() -> None:
    code = (
        "import sys, vintage.plugins, vintage.config.models;"
        "print(any(m in sys.modules for m in ('vintage.deploy.local', 'vintage.scoring.local',"
        " 'vintage.secrets.databricks', 'vintage.pipeline.remote', 'vintage.training.spark')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_override_adds_a_row_for_the_block_and_config_accepts_it_only_then() -> None:
    class Fake:
        pass

    with pytest.raises(ValueError, match="unknown deploy target 'fake'; known: local"):
        EnvironmentSpec(target="fake")
    with DEPLOY_TARGETS.override("fake", Fake):
        assert DEPLOY_TARGETS.load("fake") is Fake
        assert EnvironmentSpec(target="fake", host="10.0.0.5").target == "fake"
    assert "fake" not in DEPLOY_TARGETS
    assert DEPLOY_TARGETS.names() == ("local", "container", "kubernetes")


def test_override_of_an_existing_row_is_restored() -> None:
    real = DEPLOY_TARGETS.load("local")
    with DEPLOY_TARGETS.override("local", object):
        assert DEPLOY_TARGETS.load("local") is object
    assert DEPLOY_TARGETS.load("local") is real


def test_config_names_are_checked_against_the_tables(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown compute engine 'gpu'; known: local, spark, databricks"):
        ComputeSpec(engine="gpu")
    with pytest.raises(ValueError, match="unknown secret provider 'vault'; known: env, local, databricks"):
        SecretsSpec(providers=["env", "vault"])
    assert ComputeSpec(engine="databricks").engine == "databricks"


def test_the_loopback_rule_is_the_local_targets() -> None:
    with pytest.raises(ValueError, match="the local target binds loopback only"):
        EnvironmentSpec(host="0.0.0.0")
    with DEPLOY_TARGETS.override("elsewhere", object):
        assert EnvironmentSpec(target="elsewhere", host="0.0.0.0").host == "0.0.0.0"


def test_a_config_naming_an_unknown_target_is_a_config_error_with_the_key_path(project: Path) -> None:
    from vintage.config import load_spec

    config = project / "vintage.yaml"
    config.write_text(config.read_text() + "environments:\n  staging: {target: nomad}\n")
    with pytest.raises(ConfigError) as exc:
        load_spec(config)
    assert exc.value.headline == (
        f"{config}: environments.staging.target: unknown deploy target 'nomad'; "
        "known: local, container, kubernetes"
    )


def test_a_target_row_brings_its_own_settings_and_config_needs_no_edit(project: Path) -> None:
    """`target: fake` with the fake's own keys (declared in tests/support/fake_target.py only): accepted,
    checked by the fake's Settings with the key path, shown flat, and read back by its from_spec."""
    from support.fake_target import FakeSettings, fake_targets
    from vintage.config import load_spec
    from vintage.pipeline import ops

    config = project / "vintage.yaml"
    config.write_text(config.read_text() + "environments:\n  staging: {target: fake, region: there}\n")
    with fake_targets():
        spec = load_spec(config)
        env = spec.environments["staging"]
        assert env.settings == FakeSettings(region="there", replicas=1)
        dumped = spec.model_dump(mode="json", by_alias=True)["environments"]["staging"]
        assert list(dumped)[:3] == ["target", "region", "replicas"]  # flat, next to target
        assert type(spec).model_validate(spec.model_dump(mode="json", by_alias=True)) == spec
        target = ops.target(spec, "staging")
        assert target.settings.region == "there"  # type: ignore[attr-defined]

        config.write_text(config.read_text().replace("region: there", "region: there, replicas: 0"))
        with pytest.raises(ConfigError) as exc:
            load_spec(config)
        assert exc.value.headline.startswith(f"{config}: environments.staging.replicas: Input should be")

        config.write_text(config.read_text().replace("replicas: 0", "zone: a"))
        with pytest.raises(ConfigError) as exc:
            load_spec(config)
        assert exc.value.headline == (
            f"{config}: environments.staging.zone: unknown key for the fake target; expected one of: target, "
            "host, port, workers, api_keys, key_scope, public_metadata, approvers, forbid_self_approval, "
            "approval_ttl_hours, lock_behavior, lock_timeout_s, inference_log, region, replicas"
        )


def test_a_target_without_settings_takes_only_the_common_keys() -> None:
    class Bare:
        pass

    with DEPLOY_TARGETS.override("bare", Bare):
        assert EnvironmentSpec(target="bare", port=9000).port == 9000
        with pytest.raises(ValueError, match=r"memory\n.*unknown key for the bare target"):
            EnvironmentSpec.model_validate({"target": "bare", "memory": "1g"})


def test_a_settings_model_that_ignores_unknown_keys_is_refused() -> None:
    from pydantic import BaseModel

    class Lax:
        class Settings(BaseModel):  # extra="ignore": a typo would be dropped silently
            region: str = "here"

    with DEPLOY_TARGETS.override("lax", Lax), pytest.raises(TypeError, match="forbids unknown keys"):
        EnvironmentSpec(target="lax")


def test_loading_a_container_environment_imports_no_heavy_library(project: Path) -> None:
    """Validating its settings imports the container target's module: that import stays light."""
    config = project / "vintage.yaml"
    config.write_text(config.read_text() + "environments:\n  staging: {target: container, memory: 2g}\n")
    code = (
        "import sys; from vintage.config import load_spec;"
        "s = load_spec(); assert s.environments['staging'].settings.memory == '2g';"
        "assert 'vintage.deploy.container' in sys.modules;"
        "print(sorted(m for m in ('mlflow', 'pyspark', 'kubernetes', 'databricks') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=project
    )
    assert out.stdout.strip() == "[]"
