"""Talking to a Kubernetes API server through the official Python client.

One :class:`Cluster` per deploy: the kubeconfig (or the in-cluster service account) is read once, objects are
applied with server-side apply (field manager ``vintage``), and every client error becomes a one-line
:class:`~vintage.errors.DeployError` naming the object and the fix. Nothing here reads or logs a key: Secret
bodies pass through :meth:`Cluster.apply` and are never echoed (errors name the object, not its content).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from vintage.errors import DeployError

REQUEST_TIMEOUT_S: Final = 30


class Cluster:
    """A Kubernetes API server, as one kubeconfig context (or the pod's service account) sees it.

    Args:
        kubeconfig: the kubeconfig file; ``None``: ``$KUBECONFIG``, then ``~/.kube/config``, then the
            in-cluster configuration.
        context: the context to use (default: the file's current context).
        cache_dir: where the client may keep its API discovery cache (the environment's directory).

    Raises:
        DeployError: no usable configuration (one line, with the fix).
    """

    def __init__(self, kubeconfig: str | None, context: str | None, cache_dir: Path | None = None) -> None:
        from kubernetes import client, config
        from kubernetes.config.config_exception import ConfigException
        from kubernetes.dynamic import DynamicClient

        path = kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or None
        if path is None and Path("~/.kube/config").expanduser().is_file():
            path = str(Path("~/.kube/config").expanduser())
        try:
            if path is not None:
                if not Path(path).expanduser().is_file():
                    raise DeployError(
                        f"the kubeconfig file {path} does not exist",
                        hint="set environments.<env>.kubeconfig (or $KUBECONFIG) to the cluster's kubeconfig",
                    )
                api = config.new_client_from_config(  # type: ignore[no-untyped-call]
                    config_file=str(Path(path).expanduser()), context=context, persist_config=False
                )
                self.where = f"context {context}" if context else "the kubeconfig's current context"
            else:
                configuration = client.Configuration()
                config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
                api = client.ApiClient(configuration)
                self.where = "the in-cluster service account"
        except ConfigException as exc:
            raise DeployError(
                f"cannot use the Kubernetes configuration: {_first(str(exc))}",
                hint="set environments.<env>.kubeconfig / context, or $KUBECONFIG",
            ) from exc
        self.api = api
        self.host = str(api.configuration.host)
        cache = str(cache_dir / "k8s-discovery.json") if cache_dir is not None else None
        with self.calling("reach the API server"):
            self.dynamic = DynamicClient(api, cache_file=cache)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        """Close the connection pool."""
        self.api.close()

    @contextmanager
    def calling(self, what: str) -> Iterator[None]:
        """Turn client errors inside the block into a DeployError ``cannot <what>: <reason>``."""
        from kubernetes.client.exceptions import ApiException
        from kubernetes.dynamic.exceptions import DynamicApiError
        from urllib3.exceptions import HTTPError

        try:
            yield
        except DynamicApiError as exc:
            raise DeployError(
                f"cannot {what}: {exc.status} {_api_message(exc.body) or exc.reason}", hint=_hint(exc.status)
            ) from exc
        except ApiException as exc:
            raise DeployError(
                f"cannot {what}: {exc.status} {_api_message(exc.body) or exc.reason}", hint=_hint(exc.status)
            ) from exc
        except (HTTPError, OSError) as exc:
            raise DeployError(
                f"cannot {what}: the Kubernetes API server at {self.host} did not answer "
                f"({exc.__class__.__name__})",
                hint=f"is the cluster up and is {self.where} the right one? (kubectl cluster-info)",
            ) from exc

    def resource(self, api_version: str, kind: str) -> Any:
        """The dynamic client's resource for ``kind`` in ``api_version``."""
        with self.calling(f"find {kind} in {api_version}"):
            return self.dynamic.resources.get(api_version=api_version, kind=kind)

    def offers(self, group: str, versions: tuple[str, ...]) -> str:
        """The first of ``versions`` (newest first) the server offers for API group ``group``, as
        ``group/version``.

        Raises:
            DeployError: the server offers none of them.
        """
        from kubernetes import client

        with self.calling(f"list the API versions of {group}"):
            groups = client.ApisApi(self.api).get_api_versions(_request_timeout=REQUEST_TIMEOUT_S).groups
        offered = {v.version for g in groups if g.name == group for v in g.versions}
        for version in versions:
            if version in offered:
                return f"{group}/{version}"
        raise DeployError(
            f"the API server offers none of {', '.join(f'{group}/{v}' for v in versions)}",
            hint="vintage supports Kubernetes 1.20 and later",
        )

    def apply(self, obj: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        """Server-side apply ``obj`` (created or updated; fields owned by ``vintage``, conflicts forced).

        Returns the object as the server stored it (or would store it, with ``dry_run``).
        """
        kind, name = obj["kind"], obj["metadata"]["name"]
        resource = self.resource(obj["apiVersion"], kind)
        extra = {"dry_run": "All"} if dry_run else {}
        with self.calling(f"apply {kind} {name}"):
            found = resource.server_side_apply(
                body=obj,
                namespace=obj["metadata"].get("namespace"),
                field_manager="vintage",
                force_conflicts=True,
                _request_timeout=REQUEST_TIMEOUT_S,
                **extra,
            )
        return dict(found.to_dict())

    def get(self, api_version: str, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        """The object, or ``None`` when it does not exist."""
        from kubernetes.dynamic.exceptions import NotFoundError

        resource = self.resource(api_version, kind)
        with self.calling(f"read {kind} {name}"):
            try:
                found = resource.get(name=name, namespace=namespace, _request_timeout=REQUEST_TIMEOUT_S)
            except NotFoundError:
                return None
        return dict(found.to_dict())

    def list(
        self, api_version: str, kind: str, namespace: str, selector: dict[str, str]
    ) -> list[dict[str, Any]]:
        """The objects of ``kind`` whose labels match ``selector``."""
        resource = self.resource(api_version, kind)
        query = ",".join(f"{k}={v}" for k, v in selector.items())
        with self.calling(f"list {kind}"):
            found = resource.get(
                namespace=namespace, label_selector=query, _request_timeout=REQUEST_TIMEOUT_S
            )
        return [dict(item) for item in found.to_dict().get("items") or []]

    def patch(
        self, api_version: str, kind: str, name: str, namespace: str, body: Any, *, json_patch: bool = False
    ) -> dict[str, Any]:
        """A merge patch (or, with ``json_patch``, a JSON patch: a list of operations) of one object."""
        resource = self.resource(api_version, kind)
        content = "application/json-patch+json" if json_patch else "application/merge-patch+json"
        with self.calling(f"update {kind} {name}"):
            found = resource.patch(
                body=body,
                name=name,
                namespace=namespace,
                content_type=content,
                field_manager="vintage",
                _request_timeout=REQUEST_TIMEOUT_S,
            )
        return dict(found.to_dict())

    def delete(self, api_version: str, kind: str, name: str, namespace: str) -> bool:
        """Delete one object (its dependents in the background); ``False`` when it did not exist."""
        from kubernetes.dynamic.exceptions import NotFoundError

        resource = self.resource(api_version, kind)
        with self.calling(f"delete {kind} {name}"):
            try:
                resource.delete(
                    name=name,
                    namespace=namespace,
                    propagation_policy="Background",
                    _request_timeout=REQUEST_TIMEOUT_S,
                )
            except NotFoundError:
                return False
        return True

    def logs(self, pod: str, namespace: str, container: str, *, lines: int = 20) -> str:
        """The last ``lines`` of a container's log (of its previous run when it restarted); ``""`` when
        the kubelet cannot say."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        core = client.CoreV1Api(self.api)
        for previous in (True, False):
            try:
                text = core.read_namespaced_pod_log(
                    pod,
                    namespace,
                    container=container,
                    previous=previous,
                    tail_lines=lines,
                    _request_timeout=REQUEST_TIMEOUT_S,
                )
            except (ApiException, HTTPError, OSError):
                continue
            if text:
                return str(text)
        return ""


def _first(text: str) -> str:
    return (text.strip().splitlines() or [""])[0][:300]


def _api_message(body: Any) -> str:
    """The ``message`` of a Kubernetes Status body (never the object that was sent)."""
    import json

    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    try:
        data = json.loads(body) if isinstance(body, str) else None
    except ValueError:
        return ""
    return _first(str(data.get("message", ""))) if isinstance(data, dict) else ""


def _hint(status: int | None) -> str:
    if status in (401, 403):
        return "the kubeconfig's user lacks a permission vintage needs (docs/kubernetes.md, 'RBAC')"
    if status == 404:
        return "does the namespace exist? (environments.<env>.namespace)"
    if status == 422:
        return "a setting of environments.<env> is not valid for this cluster (the message says which)"
    return "kubectl describe / kubectl get events in the namespace say more"
