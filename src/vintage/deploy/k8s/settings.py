"""The keys of ``environments.<env>`` the kubernetes target takes (flat, next to ``target: kubernetes``)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from vintage.config.base import Strict
from vintage.config.environments import TargetSettings

_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?$"


class Quantities(Strict):
    """CPU and memory quantities, as Kubernetes writes them (``250m``, ``512Mi``)."""

    cpu: Annotated[str | None, Field(pattern=_QUANTITY)] = None
    memory: Annotated[str | None, Field(pattern=_QUANTITY)] = None


class Resources(Strict):
    """The scoring container's requests and limits."""

    requests: Quantities = Field(default_factory=lambda: Quantities(cpu="250m", memory="256Mi"))
    limits: Quantities = Field(default_factory=lambda: Quantities(memory="512Mi"))


class Autoscaling(Strict):
    """The HorizontalPodAutoscaler (CPU utilisation of the requests); needs a metrics server to act."""

    enabled: bool = True
    min_replicas: Annotated[int | None, Field(ge=1, le=1000)] = None
    """Default: ``replicas``."""
    max_replicas: Annotated[int | None, Field(ge=1, le=1000)] = None
    """Default: three times ``replicas``."""
    cpu_utilization: Annotated[int, Field(ge=1, le=100)] = 70
    """Target average CPU utilisation, percent of the CPU request."""


class KubernetesSettings(TargetSettings):
    """Settings of the kubernetes target.

    ``port`` (a common key) is the Service's port; the pods listen on 8080.
    """

    kubeconfig: str | None = None
    """The kubeconfig file (default: ``$KUBECONFIG``, then ``~/.kube/config``, then the in-cluster
    service account)."""
    context: str | None = None
    """The kubeconfig context (default: its current context)."""
    namespace: Annotated[str, Field(pattern=_DNS_LABEL, max_length=63)] = "default"
    name: Annotated[str | None, Field(pattern=_DNS_LABEL, max_length=40)] = None
    """The name of the Deployment, Service, Secret, ... (default ``vintage-<environment>``)."""
    registry: str
    """``HOST:PORT`` the model's image is pushed to and the cluster pulls from (required; plain HTTP only
    for a registry on loopback)."""
    replicas: Annotated[int, Field(ge=1, le=1000)] = 3
    resources: Resources = Field(default_factory=Resources)
    autoscaling: Autoscaling = Field(default_factory=Autoscaling)
    service_type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    node_port: Annotated[int | None, Field(ge=1, le=65535)] = None
    """A fixed node port (``service_type: NodePort``); default: the cluster picks one."""
    url: str | None = None
    """Where clients (and the smoke test) reach the Service, e.g. the ingress URL. Default: derived from
    the Service (``NodePort``: ``http://127.0.0.1:<node port>``; ``ClusterIP``: the cluster IP)."""
    rollout_timeout_s: Annotated[int, Field(ge=10, le=3600)] = 300
    """A rollout not complete by then is rolled back (also the Deployment's progress deadline)."""
    min_ready_s: Annotated[int, Field(ge=0, le=300)] = 2
    """A new pod counts as available after being ready this long (``minReadySeconds``)."""
    prestop_s: Annotated[int, Field(ge=0, le=120)] = 5
    """A terminating pod keeps serving this long while it leaves the Service's endpoints."""
    drain_s: Annotated[int, Field(ge=1, le=600)] = 30
    """Then in-flight requests get this long to finish (grace period = prestop_s + drain_s)."""
    max_unavailable_pods: Annotated[int, Field(ge=1, le=1000)] = 1
    """The PodDisruptionBudget: at most this many pods down by voluntary disruption (a node drain)."""
    image_pull_policy: Literal["IfNotPresent", "Always", "Never"] = "IfNotPresent"
    image_pull_secret: Annotated[str | None, Field(pattern=_DNS_LABEL)] = None
    """A Secret of type docker-registry in the namespace, for a private registry."""
    stop: Literal["scale", "delete"] = "scale"
    """``vintage stop``: scale the Deployment to zero (Service, Secret and history stay), or delete every
    object vintage made for the environment."""

    @field_validator("registry")
    @classmethod
    def _registry(cls, value: str) -> str:
        if not re.match(r"^([A-Za-z0-9.-]+|\[[0-9A-Fa-f:]+\]):[0-9]{1,5}$", value):
            raise ValueError("give HOST:PORT, e.g. myregistry.azurecr.io:443 or 127.0.0.1:5000")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> KubernetesSettings:
        if self.node_port is not None and self.service_type == "ClusterIP":
            raise ValueError("node_port needs service_type: NodePort (or LoadBalancer)")
        scale = self.autoscaling
        low = scale.min_replicas or self.replicas
        high = scale.max_replicas or 3 * self.replicas
        if scale.enabled and low > high:
            raise ValueError(f"autoscaling.min_replicas ({low}) is above autoscaling.max_replicas ({high})")
        return self
