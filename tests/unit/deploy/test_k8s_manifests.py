"""The kubernetes target's manifests and settings, without a cluster (the e2e tests apply them for real)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from vintage.config.environments import EnvironmentSpec
from vintage.deploy.k8s import manifests as mf
from vintage.deploy.k8s.rollout import complete as _complete
from vintage.deploy.k8s.rollout import failing as _failing
from vintage.deploy.k8s.rollout import progress_failure as _progress_failure
from vintage.deploy.k8s.settings import KubernetesSettings
from vintage.deploy.k8s.target import KubernetesTarget
from vintage.errors import DeployError

DIGEST = "sha256:" + "ab" * 32
IMAGE_DIGEST = "sha256:" + "cd" * 32
SERVED = mf.Served(
    "winequality", 7, DIGEST, f"127.0.0.1:5000/vintage-winequality@{IMAGE_DIGEST}", IMAGE_DIGEST
)
KEY = "k" * 40


def settings(**extra: object) -> KubernetesSettings:
    return KubernetesSettings.model_validate({"registry": "127.0.0.1:5000", **extra})


def options(api_keys: bool = True, **extra: object) -> mf.Options:
    return mf.Options(environment="production", port=8082, api_keys=api_keys, **extra)  # type: ignore[arg-type]


def test_deployment_rolls_without_losing_capacity_and_locks_the_pod_down():
    dep = mf.deployment(settings(), options(), SERVED)
    spec = dep["spec"]
    assert spec["replicas"] == 3
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    assert spec["progressDeadlineSeconds"] == 300
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == SERVED.image and "@sha256:" in container["image"]
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["startupProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsUser"] == 10001 and pod["automountServiceAccountToken"] is False
    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]
    assert pod["terminationGracePeriodSeconds"] == 35
    assert container["args"] == ["--api-key-file", "/run/secrets/vintage/keys"]
    assert {"name": "keys", "mountPath": "/run/secrets/vintage", "readOnly": True} in container[
        "volumeMounts"
    ]


def test_labels_name_model_version_and_digests_but_the_selector_never_the_version():
    dep = mf.deployment(settings(), options(), SERVED)
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert labels[mf.LABEL_MODEL] == "winequality" and labels[mf.LABEL_VERSION] == "7"
    assert labels[mf.LABEL_MODEL_DIGEST] == "ab" * 6 and labels[mf.LABEL_IMAGE_DIGEST] == "cd" * 6
    annotations = dep["spec"]["template"]["metadata"]["annotations"]
    assert annotations[mf.ANN_IMAGE_DIGEST] == IMAGE_DIGEST and annotations[mf.ANN_MODEL_DIGEST] == DIGEST
    selector = dep["spec"]["selector"]["matchLabels"]
    assert mf.LABEL_VERSION not in selector and selector.items() <= labels.items()
    assert mf.service(settings(), options())["spec"]["selector"] == selector


def test_label_values_are_valid_for_any_model_name():
    served = mf.Served("Wine Quality/ü" + "x" * 80, 1, DIGEST, SERVED.image, IMAGE_DIGEST)
    value = mf.labels("n", options(), served)[mf.LABEL_MODEL]
    assert len(value) <= 63 and all(c.isalnum() or c in "._-" for c in value)


def test_a_new_secret_version_changes_the_pod_template_so_the_pods_restart():
    a = mf.deployment(settings(), options(), SERVED)
    b = mf.deployment(settings(), options(), SERVED.__class__(**{**SERVED.__dict__, "keys_version": "42"}))
    assert a["spec"]["template"] != b["spec"]["template"]
    assert b["spec"]["template"]["metadata"]["annotations"][mf.ANN_KEYS_VERSION] == "42"


def test_the_secret_has_no_data_when_rendered_and_the_keys_when_synced():
    assert "data" not in mf.secret(settings(), options())
    synced = mf.secret(settings(), options(), [KEY, "s" * 40])
    assert base64.b64decode(synced["data"]["keys"]).decode() == f"{KEY}\n{'s' * 40}\n"
    rendered = json.dumps(mf.all_objects(settings(), options(), SERVED))
    assert KEY not in rendered


def test_without_keys_there_is_no_secret_and_the_server_is_told_it_runs_open():
    objs = mf.all_objects(settings(), options(api_keys=False), SERVED)
    assert [o["kind"] for o in objs] == [
        "Service",
        "Deployment",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
    ]
    container = objs[1]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["--allow-unauthenticated-network-access"]
    assert all(v["name"] != "keys" for v in objs[1]["spec"]["template"]["spec"]["volumes"])


def test_autoscaler_speaks_the_api_version_the_server_offers():
    v1 = mf.autoscaler(settings(), options(), "autoscaling/v1")
    assert v1["spec"]["targetCPUUtilizationPercentage"] == 70 and "metrics" not in v1["spec"]
    v2 = mf.autoscaler(settings(replicas=2), options(), "autoscaling/v2")
    assert v2["spec"]["minReplicas"] == 2 and v2["spec"]["maxReplicas"] == 6
    assert v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 70
    assert "HorizontalPodAutoscaler" not in [
        o["kind"] for o in mf.all_objects(settings(autoscaling={"enabled": False}), options(), SERVED)
    ]
    pdb = mf.disruption_budget(settings(), options(), "policy/v1beta1")
    assert pdb["apiVersion"] == "policy/v1beta1" and pdb["spec"]["maxUnavailable"] == 1


def test_node_port_and_names():
    svc = mf.service(settings(service_type="NodePort", node_port=30082, name="wine"), options())
    assert svc["metadata"]["name"] == "wine" and svc["spec"]["type"] == "NodePort"
    assert svc["spec"]["ports"][0] == {
        "name": "http",
        "port": 8082,
        "targetPort": "http",
        "protocol": "TCP",
        "nodePort": 30082,
    }
    assert mf.object_name(settings(), "production") == "vintage-production"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"registry": "not a registry"}, "HOST:PORT"),
        ({"node_port": 30080}, "node_port needs service_type: NodePort"),
        ({"autoscaling": {"min_replicas": 5, "max_replicas": 2}}, r"min_replicas \(5\) is above"),
        ({"replicas": 0}, "greater than or equal to 1"),
        ({"resources": {"limits": {"memory": "lots"}}}, "should match pattern"),
        ({"namespace": "Prod_1"}, "should match pattern"),
    ],
)
def test_bad_settings_are_refused_naming_the_problem(extra, message):
    with pytest.raises(ValidationError, match=message):
        settings(**extra)


def test_registry_is_required_and_unknown_keys_name_the_target():
    with pytest.raises(ValidationError, match="registry"):
        EnvironmentSpec.model_validate({"target": "kubernetes"})
    with pytest.raises(ValidationError, match="unknown key for the kubernetes target"):
        EnvironmentSpec.model_validate({"target": "kubernetes", "registry": "r:1", "replica": 2})


def _live(**status: object) -> dict[str, object]:
    return {
        "metadata": {"generation": 2},
        "spec": {"replicas": 3},
        "status": {"observedGeneration": 2, **status},
    }


def test_rollout_complete_only_when_every_replica_is_new_and_available():
    assert _complete(_live(updatedReplicas=3, replicas=3, availableReplicas=3))
    assert not _complete(_live(updatedReplicas=2, replicas=3, availableReplicas=3))
    assert not _complete(_live(updatedReplicas=3, replicas=4, availableReplicas=3))
    assert not _complete(_live(updatedReplicas=3, replicas=3, availableReplicas=2))
    stale = _live(updatedReplicas=3, replicas=3, availableReplicas=3)
    stale["status"]["observedGeneration"] = 1  # type: ignore[index]
    assert not _complete(stale)


def test_failures_are_read_from_pods_and_conditions():
    crash = {
        "metadata": {"name": "p"},
        "status": {"containerStatuses": [{"state": {"waiting": {"reason": "CrashLoopBackOff"}}}]},
    }
    assert _failing([crash]) == "pod p: CrashLoopBackOff"
    restarts = {
        "metadata": {"name": "q"},
        "status": {"containerStatuses": [{"state": {}, "restartCount": 3}]},
    }
    assert _failing([restarts]) == "pod q restarted 3 times"
    fine = {
        "metadata": {"name": "r"},
        "status": {"containerStatuses": [{"state": {"running": {}}, "restartCount": 0}]},
    }
    assert _failing([fine]) is None
    deadline = _live(conditions=[{"type": "Progressing", "reason": "ProgressDeadlineExceeded"}])
    assert "deadline" in str(_progress_failure(deadline))
    assert (
        _progress_failure(_live(conditions=[{"type": "Progressing", "reason": "NewReplicaSetAvailable"}]))
        is None
    )


def test_replicas_follow_the_autoscaler_within_its_bounds(tmp_path: Path):
    target = KubernetesTarget("production", tmp_path, settings=settings(), port=8082)
    assert target._replicas(None) == 3
    assert target._replicas({"spec": {"replicas": 5}}) == 5
    assert target._replicas({"spec": {"replicas": 50}}) == 9
    assert target._replicas({"spec": {"replicas": 1}}) == 3
    fixed = KubernetesTarget(
        "production", tmp_path, settings=settings(autoscaling={"enabled": False}), port=8082
    )
    assert fixed._replicas({"spec": {"replicas": 5}}) == 3


def test_a_missing_kubeconfig_is_one_line_with_the_fix(tmp_path: Path):
    target = KubernetesTarget(
        "production", tmp_path, settings=settings(kubeconfig=str(tmp_path / "nope")), port=8082
    )
    with pytest.raises(DeployError, match=r"the kubeconfig file .*nope does not exist") as info:
        target.status()
    assert "kubeconfig" in str(info.value.hint)


def test_an_unreachable_api_server_is_one_line(tmp_path: Path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = tmp_path / "kubeconfig"
    config.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": f"https://127.0.0.1:{port}"}}],
                "users": [{"name": "u", "user": {"token": "t" * 20}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    target = KubernetesTarget("production", tmp_path, settings=settings(kubeconfig=str(config)), port=8082)
    with pytest.raises(
        DeployError, match=f"the Kubernetes API server at https://127.0.0.1:{port} did not answer"
    ):
        target.status()


def test_an_old_pod_counts_as_gone_once_its_containers_exited_or_its_grace_period_ended():
    from datetime import UTC, datetime

    from vintage.deploy.k8s.rollout import finished as _finished

    running = {"state": {"running": {}}}
    exited = {"state": {"terminated": {"exitCode": 0}}}
    now = datetime(2026, 12, 4, 12, 0, 30, tzinfo=UTC)

    def pod(deleted: str | None, *statuses: dict[str, object]) -> dict[str, object]:
        return {"metadata": {"deletionTimestamp": deleted}, "status": {"containerStatuses": list(statuses)}}

    assert not _finished(pod(None, exited), now)  # not being deleted: a live pod of an old revision
    assert _finished(pod("2026-12-04T12:01:00Z", exited), now)
    assert not _finished(pod("2026-12-04T12:01:00Z", running), now)
    assert _finished(pod("2026-12-04T12:00:00Z", running), now)  # grace period over: killed
