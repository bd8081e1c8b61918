"""The container target's own decisions, without starting a container: names, the server's arguments
(a key file path or the explicit no-key flag, never a key), and a broken deployment history."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from vintage.errors import DeployError

if TYPE_CHECKING:
    from vintage.deploy.container import ContainerTarget

pytestmark = pytest.mark.skipif(shutil.which("podman") is None, reason="the target looks podman up")


def _target(tmp_path: Path, **kwargs: Any) -> ContainerTarget:
    from vintage.deploy.container import ContainerTarget

    return ContainerTarget("staging", tmp_path / "state", port=18081, **kwargs)


def test_name_holds_environment_model_digest_and_project(tmp_path: Path) -> None:
    target = _target(tmp_path)
    other = _target(tmp_path / "elsewhere")
    name = target.name_for("sha256:" + "ab" * 32)
    assert name == f"vintage-staging-{'ab' * 6}-{target.project}"
    assert other.name_for("sha256:" + "ab" * 32) != name  # another project's container is never ours


def test_server_arguments_name_the_key_file_never_a_key(tmp_path: Path) -> None:
    keyed = _target(tmp_path, key_scope="staging/serving", workers=2, public_metadata=True)
    assert keyed._serve_args() == [
        "--api-key-file",
        "/run/secrets/vintage/keys",
        "--public-metadata",
        "--workers",
        "2",
    ]
    # no keys: the server must be told explicitly that it listens (inside its namespace) without them
    assert _target(tmp_path)._serve_args() == ["--allow-unauthenticated-network-access"]


def test_the_inference_log_goes_to_the_mounted_directory(tmp_path: Path) -> None:
    from vintage.config.environments import InferenceLogSpec

    settings = InferenceLogSpec(sample=0.5, rotate_seconds=5).server_settings(
        Path("/var/lib/vintage/inference")
    )
    args = _target(tmp_path, inference_log=settings)._serve_args()
    assert args[args.index("--inference-log") + 1] == "/var/lib/vintage/inference"
    assert args[args.index("--inference-sample") + 1] == "0.5"
    assert args[args.index("--inference-rotate-seconds") + 1] == "5.0"


def test_a_broken_history_is_a_clear_error(tmp_path: Path) -> None:
    target = _target(tmp_path)
    target.dir.mkdir(parents=True)
    target.history_file.write_text("{not json")
    with pytest.raises(DeployError) as exc:
        target.history()
    assert "deployment history of staging cannot be read" in exc.value.headline
    assert target.history_file.name in (exc.value.hint or "")
