"""The kubernetes deploy target: an environment served by a Deployment behind a Service.

A deploy pushes the model's image (built by ``vintage image build``'s code, pinned by digest) to the
environment's registry, syncs the API keys from the secret scope into a Secret (the values go from the
secret store to the API server, never to a file), server-side applies the Secret, Service, Deployment,
PodDisruptionBudget and HorizontalPodAutoscaler, and watches the rollout until every pod of the new revision
is available and every pod of an older one has exited. A rollout that fails (a pod crash-loops, an image does
not pull, readiness never passes, the deadline passes) is rolled back to the revision that served before,
which keeps serving throughout (``maxUnavailable: 0``); the deploy then fails. Everything is in the audit
trail and in ``<state_dir>/envs/<environment>/deployments.json``.
"""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from vintage.deploy.base import Deployment, DeployOutcome
from vintage.deploy.k8s import manifests as mf
from vintage.deploy.k8s.rollout import (
    complete,
    failing,
    finished,
    generation,
    labels_of,
    progress_failure,
    revision,
)
from vintage.deploy.k8s.settings import KubernetesSettings
from vintage.deploy.records import EnvironmentRecords, as_int, verified
from vintage.errors import DeployError, VintageError
from vintage.model import digest as model_digest

if TYPE_CHECKING:
    from typing import Self

    from vintage.config import Spec
    from vintage.deploy.k8s.cluster import Cluster

POLL_S: Final = 0.5


class RolloutError(Exception):
    """The new revision did not become available; the message says why, ``details`` the pod's last log
    lines."""

    def __init__(self, why: str, details: list[str] | None = None) -> None:
        super().__init__(why)
        self.details = details


class KubernetesTarget(EnvironmentRecords):
    """Serves an environment on a Kubernetes cluster (see the module's docstring and docs/kubernetes.md).

    Args:
        environment: The environment (``production``).
        state_dir: The project's state directory (history, audit trail, local secret store).
        settings: The target's settings from vintage.yaml.
        port: The Service's port.
        key_scope: Secret scope holding the API keys; ``None``: no keys.
        secrets: The ``secrets`` settings of vintage.yaml (providers), as a plain mapping.
        public_metadata: Serve ``/version``, ``/metrics``, ``/openapi.json`` without the API key.
        workers: Server worker processes per pod.
    """

    TYPE = "kubernetes"
    Settings = KubernetesSettings

    def __init__(
        self,
        environment: str,
        state_dir: Path,
        *,
        settings: KubernetesSettings,
        port: int,
        key_scope: str | None = None,
        secrets: dict[str, Any] | None = None,
        public_metadata: bool = False,
        workers: int = 1,
    ) -> None:
        super().__init__(environment, state_dir)
        self.settings = settings
        self.key_scope = key_scope
        self.secrets: dict[str, Any] = dict(secrets or {})
        self.options = mf.Options(
            environment=environment,
            port=port,
            api_keys=key_scope is not None,
            public_metadata=public_metadata,
            workers=max(1, workers),
        )
        self.name = mf.object_name(settings, environment)
        self.namespace = settings.namespace

    @classmethod
    def from_spec(cls, spec: Spec, environment: str) -> Self:
        """The target of ``environment`` as vintage.yaml configures it."""
        env = spec.environments[environment]
        return cls(
            environment,
            spec.state_dir.resolve(),
            settings=env.settings_as(cls.Settings),
            port=env.port,
            key_scope=spec.key_scope(environment),
            secrets=spec.secrets.model_dump(mode="json"),
            public_metadata=env.public_metadata,
            workers=env.workers,
        )

    # -- the DeployTarget protocol ----------------------------------------------------------------------

    def deploy(self, model_dir: Path, model_name: str, version: int) -> DeployOutcome:
        """Roll ``model_dir``'s image out (or nothing, when it already serves with these settings and keys).

        Raises:
            DeployError: the image cannot be built or pushed, the cluster refuses an object, or the rollout
                failed (then the previous revision serves again, as the message says).
        """
        model_dir = Path(model_dir).resolve()
        detail = f"{model_name} v{version}"
        try:
            digest = verified(model_dir)
            image, image_digest = self._image(model_dir, digest)
            served = mf.Served(model_name, version, digest, image, image_digest)
            current, previous, action = self._release(served, model_dir)
        except VintageError as exc:
            self._audit("deploy", "failed", f"{detail}: {exc.headline}")
            raise
        self._audit(
            "deploy",
            "ok",
            f"{detail} ({model_digest.short(digest)}) {action}: {self._where()} revision {current.revision}",
        )
        return DeployOutcome(current=current, previous=previous, action=action, history=self.history())

    def restore(self, previous: Deployment | None) -> Deployment | None:
        """Serve ``previous`` again (its recorded image, no build); ``None``: stop (as ``stop`` does).

        Raises:
            DeployError: the rollout of the previous image failed too.
        """
        if previous is None:
            stopped = self._stop()
            self._audit("rollback", "ok", "stopped" if stopped else "nothing was running")
            return None
        detail = f"{previous.model_name} v{previous.version}"
        try:
            if not previous.image or not previous.image_digest or not previous.digest:
                raise DeployError(
                    f"the record of {detail} in {self.environment} names no image to roll back to",
                    hint="deploy that version again: vintage rollback goes through the model registry",
                )
            served = mf.Served(
                previous.model_name, previous.version, previous.digest, previous.image, previous.image_digest
            )
            current, _, action = self._release(served, Path(previous.model_dir))
        except VintageError as exc:
            self._audit("rollback", "failed", f"{detail}: {exc.headline}")
            raise
        self._audit("rollback", "ok", f"{detail} {action}: {self._where()} revision {current.revision}")
        return current

    def status(self) -> Deployment | None:
        """What the Deployment serves: ready/desired replicas, image digest, model; ``None`` when it does
        not exist or is scaled to zero.

        Raises:
            DeployError: the cluster cannot be reached.
        """
        with self._cluster() as cluster:
            live = self._live(cluster)
            if live is None or not (live.get("spec") or {}).get("replicas"):
                return None
            return self._describe(cluster, live)

    def crashed(self) -> str | None:
        """Always ``None``: Kubernetes restarts pods that die, and a Deployment nobody scaled down still
        exists; pods that keep failing show as fewer ready replicas (``status``)."""
        return None

    def stop(self) -> bool:
        """Scale the Deployment to zero (``stop: scale``, the default: Service, Secret, history stay) or
        delete every object of the environment (``stop: delete``); ``False`` when nothing served."""
        stopped = self._stop()
        if stopped:
            self._audit("stop", "ok", f"{self.settings.stop}: {self._where()}")
        return stopped

    # -- beyond the protocol -----------------------------------------------------------------------------

    def rotate_keys(self) -> Deployment:
        """Sync the Secret from the scope and restart the pods (rolling) when the keys changed; returns once
        no pod with the old keys is left, so a removed key is refused from then on.

        Raises:
            DeployError: nothing is deployed, or the restart's rollout failed (rolled back: the pods with
                the old keys then still serve, and the Secret holds the new ones).
        """
        history = self.history()
        if not history or not history[-1].image or not history[-1].digest:
            raise DeployError(
                f"nothing is deployed to {self.environment} yet", hint="deploy first: vintage run (or stage)"
            )
        last = history[-1]
        served = mf.Served(
            last.model_name, last.version, last.digest or "", last.image or "", last.image_digest or ""
        )
        try:
            current, _, action = self._release(served, Path(last.model_dir))
        except VintageError as exc:
            self._audit("keys", "failed", exc.headline)
            raise
        self._audit("keys", "ok", f"{'restarted' if action != 'unchanged' else 'unchanged'}: {self._where()}")
        return current

    def manifests(self, served: mf.Served, *, cluster: Cluster | None = None) -> list[dict[str, Any]]:
        """The environment's objects for ``served``, without key values (``vintage deploy render``): API
        versions as ``cluster`` offers them, else the current ones (``policy/v1``, ``autoscaling/v2``)."""
        if cluster is None:
            return mf.all_objects(self.settings, self.options, served)
        versions = self._versions(cluster)
        return mf.all_objects(
            self.settings,
            self.options,
            served,
            pdb_version=versions["pdb_version"],
            hpa_version=versions["hpa_version"],
        )

    def check(self, objects: list[dict[str, Any]]) -> list[str]:
        """A server-side dry run of ``objects`` (nothing changes); the objects checked, ``Kind/name``.

        Raises:
            DeployError: the server refuses one (its message).
        """
        with self._cluster() as cluster:
            for obj in objects:
                cluster.apply(obj, dry_run=True)
        return [f"{o['kind']}/{o['metadata']['name']}" for o in objects]

    # -- the release -------------------------------------------------------------------------------------

    def _release(self, served: mf.Served, model_dir: Path) -> tuple[Deployment, Deployment | None, str]:
        """Apply everything for ``served`` and watch the rollout; roll back when it fails."""
        history = self.history()
        last = history[-1] if history else None
        with self._cluster() as cluster:
            live = self._live(cluster)
            running = live is not None and bool((live.get("spec") or {}).get("replicas"))
            before = revision(live) if running else None
            versions = self._versions(cluster)
            keys_version = None
            if self.options.api_keys:
                secret = cluster.apply(mf.secret(self.settings, self.options, self._read_keys()))
                keys_version = str(secret["metadata"]["resourceVersion"])
            served = dataclasses.replace(served, keys_version=keys_version)
            deployment = mf.deployment(self.settings, self.options, served)
            deployment["spec"]["replicas"] = self._replicas(live)
            cluster.apply(mf.service(self.settings, self.options))
            applied = cluster.apply(deployment)
            changed = live is None or generation(applied) != generation(live)
            try:
                self._await(cluster, deadline=time.monotonic() + self.settings.rollout_timeout_s + 15)
            except RolloutError as exc:
                raise self._roll_back(cluster, served, before, str(exc), exc.details) from None
            cluster.apply(mf.disruption_budget(self.settings, self.options, versions["pdb_version"]))
            if self.settings.autoscaling.enabled:
                cluster.apply(mf.autoscaler(self.settings, self.options, versions["hpa_version"]))
            else:
                cluster.delete(versions["hpa_version"], "HorizontalPodAutoscaler", self.name, self.namespace)
            found = self._describe(cluster, self._live(cluster) or applied)
        action = "unchanged" if not changed else ("swapped" if running else "started")
        previous = last if running else None
        if (
            not changed
            and last is not None
            and last.digest == served.model_digest
            and last.image_digest == served.image_digest
        ):
            return dataclasses.replace(last, **_live_fields(found)), last, action
        current = dataclasses.replace(
            found,
            model_dir=str(model_dir),
            since=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        self.write_history([*history, current])
        return current, previous, action

    def _roll_back(
        self,
        cluster: Cluster,
        served: mf.Served,
        before: int | None,
        why: str,
        details: list[str] | None = None,
    ) -> DeployError:
        """Return the Deployment to revision ``before`` (or scale it to zero when nothing served before)
        after a failed rollout; the error to raise."""
        what = f"{served.model_name} v{served.version}"
        headline = f"the rollout of {what} to {self.environment} failed: {why}"
        try:
            if before is None:
                cluster.patch("apps/v1", "Deployment", self.name, self.namespace, {"spec": {"replicas": 0}})
                self._audit(
                    "rollback", "ok", f"{what}: rollout failed, scaled to zero (nothing served before)"
                )
                return DeployError(
                    f"{headline}; scaled to zero (nothing served before)",
                    hint=f"kubectl -n {self.namespace} describe deployment {self.name}",
                    details=details,
                )
            template = self._template_of(cluster, before)
            cluster.patch(
                "apps/v1",
                "Deployment",
                self.name,
                self.namespace,
                [{"op": "replace", "path": "/spec/template", "value": template}],
                json_patch=True,
            )
            self._await(cluster, deadline=time.monotonic() + self.settings.rollout_timeout_s + 15)
        except (VintageError, RolloutError) as exc:
            text = exc.headline if isinstance(exc, VintageError) else str(exc)
            self._audit("rollback", "failed", f"{what}: {text}")
            return DeployError(
                f"{headline}; rolling back to revision {before} failed too: {text}",
                hint=f"kubectl -n {self.namespace} rollout status deployment/{self.name}",
                details=details,
            )
        labels = (template.get("metadata") or {}).get("labels") or {}
        back = f"v{labels.get(mf.LABEL_VERSION, '?')}"
        self._audit("rollback", "ok", f"{what}: rollout failed ({why}); revision {before} ({back}) serves")
        return DeployError(
            f"{headline}; rolled back to revision {before}: {back} serves",
            hint=f"kubectl -n {self.namespace} describe pods -l app.kubernetes.io/instance={self.name}",
            details=details,
        )

    def _template_of(self, cluster: Cluster, number: int) -> dict[str, Any]:
        """The pod template of the Deployment's ReplicaSet at revision ``number`` (as ``kubectl rollout
        undo``)."""
        for rs in self._replica_sets(cluster):
            if revision(rs) == number:
                template = dict((rs.get("spec") or {}).get("template") or {})
                meta = dict(template.get("metadata") or {})
                meta["labels"] = {
                    k: v for k, v in (meta.get("labels") or {}).items() if k != "pod-template-hash"
                }
                template["metadata"] = meta
                return template
        raise DeployError(f"revision {number} of {self.name} is gone", hint="deploy a version again")

    # -- watching ----------------------------------------------------------------------------------------

    def _await(self, cluster: Cluster, *, deadline: float) -> None:
        """Until the newest revision is complete: every replica updated and available, and no pod of an
        older revision running (a terminating one only once its containers have exited).

        Raises:
            RolloutError: a pod of the new revision fails, the progress deadline passed, or ``deadline``.
        """
        while True:
            live = self._live(cluster)
            if live is None:
                raise RolloutError("the Deployment was deleted during the rollout")
            why = progress_failure(live)
            if why is not None:
                raise RolloutError(why)
            sets = self._replica_sets(cluster)
            newest = max(sets, key=revision, default=None)
            pods = self._pods(cluster)
            new_hash = labels_of(newest).get("pod-template-hash") if newest is not None else None
            new_pods = [p for p in pods if labels_of(p).get("pod-template-hash") == new_hash]
            why_failed = failing(new_pods)
            if why_failed is not None:
                pod = why_failed.split(" ", 2)[1].rstrip(":")
                raise RolloutError(why_failed, cluster.logs(pod, self.namespace, "server").splitlines())
            if (
                complete(live)
                and new_hash is not None
                and all(labels_of(p).get("pod-template-hash") == new_hash or finished(p) for p in pods)
            ):
                return
            if time.monotonic() > deadline:
                raise RolloutError(f"not complete after {self.settings.rollout_timeout_s} s")
            time.sleep(POLL_S)

    # -- reading the cluster -----------------------------------------------------------------------------

    def _cluster(self) -> _Session:
        return _Session(self)

    def _live(self, cluster: Cluster) -> dict[str, Any] | None:
        return cluster.get("apps/v1", "Deployment", self.name, self.namespace)

    def _replica_sets(self, cluster: Cluster) -> list[dict[str, Any]]:
        live = self._live(cluster)
        uid = ((live or {}).get("metadata") or {}).get("uid")
        found = cluster.list("apps/v1", "ReplicaSet", self.namespace, mf.selector(self.name))
        return [
            rs
            for rs in found
            if any(o.get("uid") == uid for o in (rs.get("metadata") or {}).get("ownerReferences") or [])
        ]

    def _pods(self, cluster: Cluster) -> list[dict[str, Any]]:
        return cluster.list("v1", "Pod", self.namespace, mf.selector(self.name))

    def _versions(self, cluster: Cluster) -> dict[str, str]:
        return {
            "pdb_version": cluster.offers("policy", ("v1", "v1beta1")),
            "hpa_version": cluster.offers("autoscaling", ("v2", "v2beta2", "v1")),
        }

    def _replicas(self, live: dict[str, Any] | None) -> int:
        """The replicas to apply: the setting, or what the autoscaler chose within its bounds."""
        wanted = self.settings.replicas
        scale = self.settings.autoscaling
        current = int(((live or {}).get("spec") or {}).get("replicas") or 0)
        if not scale.enabled or current <= 0:
            return wanted
        low = scale.min_replicas or wanted
        high = scale.max_replicas or 3 * wanted
        return min(max(current, low), high)

    def _url(self, cluster: Cluster) -> str:
        if self.settings.url:
            return self.settings.url.rstrip("/")
        svc = cluster.get("v1", "Service", self.name, self.namespace) or {}
        spec = svc.get("spec") or {}
        port = (spec.get("ports") or [{}])[0]
        if spec.get("type") == "NodePort" and port.get("nodePort"):
            return f"http://127.0.0.1:{port['nodePort']}"
        for entry in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []:
            host = entry.get("ip") or entry.get("hostname")
            if host:
                return f"http://{host}:{self.options.port}"
        return f"http://{spec.get('clusterIP', self.name)}:{self.options.port}"

    def _describe(self, cluster: Cluster, live: dict[str, Any]) -> Deployment:
        """A Deployment record of what the cluster runs now (the history's last entry when it matches)."""
        spec = live.get("spec") or {}
        status = live.get("status") or {}
        template = spec.get("template") or {}
        annotations = (template.get("metadata") or {}).get("annotations") or {}
        lbls = (template.get("metadata") or {}).get("labels") or {}
        containers = (template.get("spec") or {}).get("containers") or [{}]
        image = str(containers[0].get("image") or "")
        desired = int(spec.get("replicas") or 0)
        ready = int(status.get("readyReplicas") or 0)
        served_digest = annotations.get(mf.ANN_MODEL_DIGEST)
        history = self.history()
        last = history[-1] if history else None
        fields: dict[str, Any] = {
            "url": self._url(cluster),
            "healthy": ready > 0 and complete(live),
            "served_digest": served_digest if last is None or last.image == image else f"image {image}",
            "replicas": desired,
            "ready_replicas": ready,
            "revision": revision(live),
        }
        if last is not None and last.image == image:
            return dataclasses.replace(last, **fields)
        return Deployment(
            target=self.TYPE,
            environment=self.environment,
            model_name=str(lbls.get(mf.LABEL_MODEL, "")),
            version=as_int(lbls.get(mf.LABEL_VERSION)),
            model_dir="",
            pid=None,
            since=str((live.get("metadata") or {}).get("creationTimestamp") or "")[:19],
            digest=served_digest,
            image=image,
            image_digest=annotations.get(mf.ANN_IMAGE_DIGEST),
            **{**fields, "served_digest": served_digest},
        )

    def _stop(self) -> bool:
        with self._cluster() as cluster:
            live = self._live(cluster)
            served = live is not None and bool((live.get("spec") or {}).get("replicas"))
            if self.settings.stop == "delete":
                versions = self._versions(cluster)
                for api, kind, name in (
                    (versions["hpa_version"], "HorizontalPodAutoscaler", self.name),
                    (versions["pdb_version"], "PodDisruptionBudget", self.name),
                    ("apps/v1", "Deployment", self.name),
                    ("v1", "Service", self.name),
                    ("v1", "Secret", f"{self.name}-keys"),
                ):
                    cluster.delete(api, kind, name, self.namespace)
            elif live is not None:
                cluster.patch("apps/v1", "Deployment", self.name, self.namespace, {"spec": {"replicas": 0}})
        return served

    # -- image and keys ----------------------------------------------------------------------------------

    def _image(self, model_dir: Path, digest: str) -> tuple[str, str]:
        """The image serving ``model_dir`` in the registry, pinned by digest: one pushed before for this
        model digest (no build), else built and pushed now."""
        registry = self.settings.registry
        for past in reversed(self.history()):
            if (
                past.digest == digest
                and past.image
                and past.image_digest
                and past.image.startswith(f"{registry}/")
                and "@" in past.image
            ):
                return past.image, past.image_digest
        from vintage.image.build import build_image
        from vintage.image.push import push_image

        built = build_image(model_dir)
        pushed = push_image(built.reference, registry)
        repository = pushed.reference.rsplit(":", 1)[0]  # HOST:PORT/NAME:TAG -> HOST:PORT/NAME
        return f"{repository}@{pushed.digest}", pushed.digest

    def _read_keys(self) -> list[str]:
        from vintage.serving.auth import ApiKeys, ScopeKeys

        assert self.key_scope is not None
        keys = ScopeKeys(self.key_scope, self.environment, str(self.state_dir), self.secrets).read()
        return ApiKeys._check(keys)

    def _where(self) -> str:
        return f"deployment/{self.name} in namespace {self.namespace}"


class _Session:
    """``with target._cluster() as cluster``: one API connection for the block."""

    def __init__(self, target: KubernetesTarget) -> None:
        self.target = target
        self.cluster: Cluster | None = None

    def __enter__(self) -> Cluster:
        from vintage.deploy.k8s.cluster import Cluster

        self.target.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        settings = self.target.settings
        self.cluster = Cluster(settings.kubeconfig, settings.context, cache_dir=self.target.dir)
        return self.cluster

    def __exit__(self, *exc: object) -> None:
        if self.cluster is not None:
            self.cluster.close()


def _live_fields(found: Deployment) -> dict[str, Any]:
    return {
        "url": found.url,
        "healthy": found.healthy,
        "served_digest": found.served_digest,
        "replicas": found.replicas,
        "ready_replicas": found.ready_replicas,
        "revision": found.revision,
    }
