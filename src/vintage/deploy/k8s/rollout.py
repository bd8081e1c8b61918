"""Reading a rollout from the objects the API server returns (plain dicts): revisions, completeness, and
why a new revision failed. Pure functions, unit-tested without a cluster."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from vintage.deploy.k8s import manifests as mf
from vintage.deploy.records import as_int

FAILING: Final = frozenset(
    {
        "CrashLoopBackOff",
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)
MAX_RESTARTS: Final = 3
"""A container of the new revision restarted this often: the rollout has failed."""


def labels_of(obj: dict[str, Any] | None) -> dict[str, str]:
    return dict(((obj or {}).get("metadata") or {}).get("labels") or {})


def revision(obj: dict[str, Any] | None) -> int:
    annotations = ((obj or {}).get("metadata") or {}).get("annotations") or {}
    return as_int(annotations.get(mf.REVISION))


def generation(obj: dict[str, Any] | None) -> int:
    return as_int(((obj or {}).get("metadata") or {}).get("generation"))


def complete(live: dict[str, Any]) -> bool:
    """``kubectl rollout status``'s test: observed, every replica updated and available, no old one."""
    spec, status = live.get("spec") or {}, live.get("status") or {}
    wanted = int(spec.get("replicas") or 0)
    return (
        as_int(status.get("observedGeneration")) >= generation(live)
        and as_int(status.get("updatedReplicas")) >= wanted
        and as_int(status.get("replicas")) <= as_int(status.get("updatedReplicas"))
        and as_int(status.get("availableReplicas")) >= as_int(status.get("updatedReplicas"))
    )


def finished(pod: dict[str, Any], now: datetime | None = None) -> bool:
    """A pod being deleted that serves nothing and holds no key any more: its containers have all exited
    (the kubelet removes the object a few seconds later), or its grace period is over (the kubelet has
    killed it, even when its status was not updated: seen when the runtime had already removed the
    container)."""
    deadline = (pod.get("metadata") or {}).get("deletionTimestamp")
    if not deadline:
        return False
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    if all((cs.get("state") or {}).get("terminated") for cs in statuses):
        return True
    try:
        ends = datetime.fromisoformat(str(deadline).replace("Z", "+00:00"))
    except ValueError:
        return False
    if ends.tzinfo is None:
        ends = ends.replace(tzinfo=UTC)
    return (now or datetime.now(UTC)) >= ends


def progress_failure(live: dict[str, Any]) -> str | None:
    for cond in (live.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return "progress deadline exceeded (readiness never passed)"
    return None


def failing(pods: Any) -> str | None:
    """Why a pod of the new revision has failed (crash loop, image pull, config), or ``None``."""
    for pod in pods:
        name = (pod.get("metadata") or {}).get("name", "?")
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason")
            if reason in FAILING:
                message = str(waiting.get("message") or "").splitlines()[:1]
                return f"pod {name}: {reason}" + (f" ({message[0][:160]})" if message else "")
            if as_int(cs.get("restartCount")) >= MAX_RESTARTS:
                return f"pod {name} restarted {cs.get('restartCount')} times"
    return None
