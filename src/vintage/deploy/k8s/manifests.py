"""The Kubernetes objects of one environment, as plain manifests (dicts).

Pure functions of the settings and of what is served: ``vintage deploy render`` writes them, the target
applies them (server-side apply), and the unit tests read them without a cluster. No manifest holds a key:
the Secret is rendered without ``data`` and filled by the target from the secret scope.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Final

from vintage.deploy.k8s.settings import KubernetesSettings

PORT: Final = 8080
"""The port the scoring server listens on inside the pod (the image's)."""
KEYS_DIR: Final = "/run/secrets/vintage"
KEYS_ITEM: Final = "keys"
UID: Final = 10001
"""The image's user and group (vintage image build)."""
MANAGER: Final = "vintage"
"""The field manager of every server-side apply."""

PREFIX: Final = "vintage.dev"
LABEL_ENV: Final = f"{PREFIX}/environment"
LABEL_MODEL: Final = f"{PREFIX}/model"
LABEL_VERSION: Final = f"{PREFIX}/version"
LABEL_MODEL_DIGEST: Final = f"{PREFIX}/model-digest"
"""12 hex digits of the model digest (a label value cannot hold the whole ``sha256:...``)."""
LABEL_IMAGE_DIGEST: Final = f"{PREFIX}/image-digest"
ANN_MODEL_DIGEST: Final = f"{PREFIX}/model-digest"
ANN_IMAGE_DIGEST: Final = f"{PREFIX}/image-digest"
ANN_KEYS_VERSION: Final = f"{PREFIX}/keys-version"
"""The Secret's resourceVersion the pods were started with: a new one restarts them (key rotation)."""
REVISION: Final = "deployment.kubernetes.io/revision"


@dataclass(frozen=True)
class Served:
    """What the Deployment serves.

    Attributes:
        model_name: registered model name.
        version: registered version.
        model_digest: the model directory's content digest (``sha256:...``).
        image: the image reference the pods run, pinned by digest (``HOST/NAME@sha256:...``).
        image_digest: the registry's manifest digest of that image.
        keys_version: the key Secret's resourceVersion (``None``: no keys, or rendering for GitOps).
    """

    model_name: str
    version: int
    model_digest: str
    image: str
    image_digest: str
    keys_version: str | None = None


@dataclass(frozen=True)
class Options:
    """The environment's settings the manifests need (besides :class:`KubernetesSettings`)."""

    environment: str
    port: int
    api_keys: bool
    public_metadata: bool = False
    workers: int = 1


def object_name(settings: KubernetesSettings, environment: str) -> str:
    """The name every object of the environment shares (``vintage-<environment>`` by default)."""
    return settings.name or f"vintage-{environment}"[:40].rstrip("-")


def selector(name: str) -> dict[str, str]:
    """The labels that select the environment's pods (never the version: a rolling update keeps them)."""
    return {"app.kubernetes.io/name": "vintage", "app.kubernetes.io/instance": name}


def _hex12(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


def labels(name: str, opts: Options, served: Served | None = None) -> dict[str, str]:
    """The labels of every object; with ``served``, also the model, version and digests."""
    out = {**selector(name), "app.kubernetes.io/managed-by": "vintage", LABEL_ENV: opts.environment}
    if served is not None:
        out[LABEL_MODEL] = _label_value(served.model_name)
        out[LABEL_VERSION] = str(served.version)
        out[LABEL_MODEL_DIGEST] = _hex12(served.model_digest)
        out[LABEL_IMAGE_DIGEST] = _hex12(served.image_digest)
    return out


def _label_value(text: str) -> str:
    """``text`` as a valid label value (63 characters of ``[A-Za-z0-9._-]``, alphanumeric at both ends)."""
    cleaned = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "-" for c in text)[:63]
    return cleaned.strip("._-") or "model"


def server_args(opts: Options) -> list[str]:
    """The server's arguments (the image's command): where the key file is, or none; never a key."""
    from vintage.serving.auth import OPEN_FLAG

    args = ["--api-key-file", f"{KEYS_DIR}/{KEYS_ITEM}"] if opts.api_keys else [OPEN_FLAG]
    if opts.public_metadata:
        args.append("--public-metadata")
    if opts.workers > 1:
        args += ["--workers", str(opts.workers)]
    return args


def _meta(name: str, namespace: str, lbls: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": lbls, **extra}


def deployment(settings: KubernetesSettings, opts: Options, served: Served) -> dict[str, Any]:
    """The Deployment: rolling update that never lowers capacity, probes, a locked-down pod."""
    name = object_name(settings, opts.environment)
    lbls = labels(name, opts, served)
    annotations = {ANN_MODEL_DIGEST: served.model_digest, ANN_IMAGE_DIGEST: served.image_digest}
    if served.keys_version is not None:
        annotations[ANN_KEYS_VERSION] = served.keys_version
    probe = {"httpGet": {"path": "/ready", "port": "http"}, "timeoutSeconds": 2}
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    if opts.api_keys:
        volumes.append(
            {
                "name": "keys",
                "secret": {
                    "secretName": f"{name}-keys",
                    "defaultMode": 0o440,
                    "items": [{"key": KEYS_ITEM, "path": KEYS_ITEM}],
                },
            }
        )
        mounts.append({"name": "keys", "mountPath": KEYS_DIR, "readOnly": True})
    resources = {
        part: {k: v for k, v in getattr(settings.resources, part).model_dump().items() if v is not None}
        for part in ("requests", "limits")
    }
    container: dict[str, Any] = {
        "name": "server",
        "image": served.image,
        "imagePullPolicy": settings.image_pull_policy,
        "args": server_args(opts),
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "startupProbe": {**probe, "periodSeconds": 1, "failureThreshold": 120},
        "readinessProbe": {**probe, "periodSeconds": 2, "failureThreshold": 2},
        "livenessProbe": {
            "httpGet": {"path": "/health", "port": "http"},
            "periodSeconds": 10,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
        },
        "resources": {k: v for k, v in resources.items() if v},
        "securityContext": {
            "runAsNonRoot": True,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": mounts,
    }
    if settings.prestop_s:
        # Keep serving while the endpoint controller and kube-proxy take the pod out of the Service;
        # SIGTERM (the server drains) comes after.
        container["lifecycle"] = {"preStop": {"exec": {"command": ["sleep", str(settings.prestop_s)]}}}
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": settings.prestop_s + settings.drain_s,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": UID,
            "runAsGroup": UID,
            "fsGroup": UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
    if settings.image_pull_secret:
        pod["imagePullSecrets"] = [{"name": settings.image_pull_secret}]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(name, settings.namespace, lbls, annotations=dict(annotations)),
        "spec": {
            "replicas": settings.replicas,
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": settings.rollout_timeout_s,
            "minReadySeconds": settings.min_ready_s,
            "selector": {"matchLabels": selector(name)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {"metadata": {"labels": lbls, "annotations": annotations}, "spec": pod},
        },
    }


def service(settings: KubernetesSettings, opts: Options) -> dict[str, Any]:
    """The Service in front of the pods (``port`` -> the pods' 8080)."""
    name = object_name(settings, opts.environment)
    port: dict[str, Any] = {"name": "http", "port": opts.port, "targetPort": "http", "protocol": "TCP"}
    if settings.node_port is not None:
        port["nodePort"] = settings.node_port
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(name, settings.namespace, labels(name, opts)),
        "spec": {"type": settings.service_type, "selector": selector(name), "ports": [port]},
    }


def secret(settings: KubernetesSettings, opts: Options, keys: list[str] | None = None) -> dict[str, Any]:
    """The Secret holding the API keys, one per line; without ``keys`` (rendering), no ``data``."""
    name = object_name(settings, opts.environment)
    out: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(f"{name}-keys", settings.namespace, labels(name, opts)),
        "type": "Opaque",
    }
    if keys is not None:
        text = "".join(f"{k}\n" for k in keys)
        out["data"] = {KEYS_ITEM: base64.b64encode(text.encode()).decode()}
    return out


def disruption_budget(settings: KubernetesSettings, opts: Options, api_version: str) -> dict[str, Any]:
    """The PodDisruptionBudget (``policy/v1`` or ``policy/v1beta1``, as the server offers)."""
    name = object_name(settings, opts.environment)
    return {
        "apiVersion": api_version,
        "kind": "PodDisruptionBudget",
        "metadata": _meta(name, settings.namespace, labels(name, opts)),
        "spec": {
            "maxUnavailable": settings.max_unavailable_pods,
            "selector": {"matchLabels": selector(name)},
        },
    }


def autoscaler(settings: KubernetesSettings, opts: Options, api_version: str) -> dict[str, Any]:
    """The HorizontalPodAutoscaler on CPU, in ``api_version`` (``autoscaling/v2``, ``v2beta2`` or
    ``v1``: the newest the server offers)."""
    name = object_name(settings, opts.environment)
    scale = settings.autoscaling
    spec: dict[str, Any] = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
        "minReplicas": scale.min_replicas or settings.replicas,
        "maxReplicas": scale.max_replicas or 3 * settings.replicas,
    }
    if api_version == "autoscaling/v1":
        spec["targetCPUUtilizationPercentage"] = scale.cpu_utilization
    else:
        spec["metrics"] = [
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": scale.cpu_utilization},
                },
            }
        ]
    return {
        "apiVersion": api_version,
        "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(name, settings.namespace, labels(name, opts)),
        "spec": spec,
    }


def all_objects(
    settings: KubernetesSettings,
    opts: Options,
    served: Served,
    *,
    keys: list[str] | None = None,
    pdb_version: str = "policy/v1",
    hpa_version: str = "autoscaling/v2",
) -> list[dict[str, Any]]:
    """Every object, in apply order: Secret (with API keys), Service, Deployment, budget, autoscaler."""
    objects = [secret(settings, opts, keys)] if opts.api_keys else []
    objects += [service(settings, opts), deployment(settings, opts, served)]
    objects.append(disruption_budget(settings, opts, pdb_version))
    if settings.autoscaling.enabled:
        objects.append(autoscaler(settings, opts, hpa_version))
    return objects
