"""environments.<env>.inference_log and monitoring: defaults, strictness, errors naming the key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from vintage.config import load_spec
from vintage.errors import ConfigError


def _write(directory: Path, text: str) -> Path:
    path = directory / "vintage.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_every_environment_logs_a_tenth_by_default(tmp_path: Path) -> None:
    spec = load_spec(_write(tmp_path, "experiment: x\n"))
    for env in spec.environments.values():
        assert env.inference_log.sample == 0.1 and env.inference_log.enabled
    settings = spec.environments["staging"].inference_log.server_settings(tmp_path / "inference")
    assert settings == {
        "directory": str(tmp_path / "inference"),
        "sample": 0.1,
        "max_queue_rows": 10_000,
        "rotate_rows": 100_000,
        "rotate_seconds": 60.0,
    }
    assert spec.monitoring.psi == 0.2 and spec.monitoring.ks_p == 0.001


def test_sample_zero_turns_the_log_off_for_one_environment(tmp_path: Path) -> None:
    spec = load_spec(_write(tmp_path, "environments:\n  production:\n    inference_log: {sample: 0}\n"))
    assert spec.environments["production"].inference_log.server_settings(tmp_path) is None
    assert spec.environments["production"].api_keys  # the built-in settings are kept
    assert spec.environments["staging"].inference_log.enabled


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (
            "environments:\n  staging:\n    inference_log: {sampel: 0.5}\n",
            "environments.staging.inference_log.sampel",
        ),
        (
            "environments:\n  staging:\n    inference_log: {sample: 1.5}\n",
            "environments.staging.inference_log.sample",
        ),
        (
            "environments:\n  staging:\n    inference_log: {rotate_rows: 0}\n",
            "environments.staging.inference_log.rotate_rows",
        ),
        ("monitoring: {ks_p: 1.5}\n", "monitoring.ks_p"),
        ("monitoring: {psii: 0.1}\n", "monitoring.psii"),
    ],
)
def test_a_bad_key_or_value_is_a_config_error_naming_it(tmp_path: Path, text: str, key: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_spec(path)
    assert info.value.exit_code == 2
    assert f"{path}: {key}:" in info.value.headline
