"""`vintage deploy render` / `deploy keys` outside a cluster: what they refuse, and what render writes
from the environment's last deployment (no cluster needed without --check)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from vintage.config import load_spec
from vintage.deploy.base import Deployment
from vintage.deploy.k8s.target import KubernetesTarget
from vintage.errors import ConfigError, DeployError
from vintage.pipeline import ops

DIGEST = "sha256:" + "12" * 32
IMAGE_DIGEST = "sha256:" + "34" * 32


def _kubernetes(project: Path) -> None:
    spec = yaml.safe_load((project / "vintage.yaml").read_text())
    spec["environments"] = {
        "production": {"target": "kubernetes", "registry": "127.0.0.1:5000", "port": 8082}
    }
    (project / "vintage.yaml").write_text(yaml.safe_dump(spec))


def test_render_and_keys_are_refused_for_a_target_without_manifests(project: Path) -> None:
    spec = load_spec()
    with pytest.raises(ConfigError, match="uses the local target, which has no manifests") as info:
        ops.render(spec, "production")
    assert info.value.hint == "set environments.production.target: kubernetes"
    with pytest.raises(ConfigError, match="takes new keys on the next deploy"):
        ops.rotate_keys(spec, "production")


def test_render_before_any_deploy_says_to_deploy_first(project: Path) -> None:
    _kubernetes(project)
    with pytest.raises(DeployError, match="nothing was deployed to production yet"):
        ops.render(load_spec(), "production")


def test_render_names_the_recorded_image_and_no_key(project: Path) -> None:
    _kubernetes(project)
    spec = load_spec()
    target = KubernetesTarget.from_spec(spec, "production")
    image = f"127.0.0.1:5000/vintage-winequality@{IMAGE_DIGEST}"
    record = Deployment(
        environment="production",
        model_name="winequality",
        version=4,
        model_dir=str(project / "m"),
        url="http://127.0.0.1:30082",
        pid=None,
        since="2026-12-04T00:00:00+00:00",
        digest=DIGEST,
        image=image,
        image_digest=IMAGE_DIGEST,
        target="kubernetes",
    )
    target.write_history([record])
    objects = ops.render(spec, "production")
    assert [o["kind"] for o in objects] == [
        "Secret",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
    ]
    deployment = objects[2]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == image
    assert deployment["metadata"]["labels"]["vintage.dev/version"] == "4"
    assert "data" not in objects[0]
    target.write_history([dataclasses.replace(record, image=None)])
    with pytest.raises(DeployError, match="nothing was deployed"):
        ops.render(spec, "production")
