"""Operations on runs and environments outside a run: approve, reject, status, stop, rollback."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vintage import audit
from vintage.errors import ConfigError, DeployError, PipelineError, VintageError
from vintage.pipeline import state as st

if TYPE_CHECKING:
    from vintage.config import Spec
    from vintage.deploy.base import Deployment, DeployOutcome, DeployTarget
    from vintage.pipeline.model_registry import ModelRegistry


def _store(spec: Spec) -> st.StateStore:
    from vintage.shared_state import attach

    attach(spec)
    return st.StateStore(spec.state_dir.resolve())


def check_stage(spec: Spec, stage: str) -> None:
    """Raise ConfigError (exit 2) when the pipeline has no stage ``stage``."""
    names = [s.name for s in spec.pipeline.stages]
    if stage not in names:
        raise ConfigError(
            f"the pipeline has no stage {stage!r}; stages: {', '.join(names)}",
            hint="stage names come from pipeline.stages in vintage.yaml (`vintage config show`)",
        )


def check_environment(spec: Spec, environment: str) -> None:
    """Raise ConfigError (exit 2) when vintage.yaml declares no environment ``environment``."""
    if environment not in spec.environments:
        raise ConfigError(
            f"no environment {environment!r}; environments: {', '.join(spec.environments)}",
            hint="environments come from `environments` in vintage.yaml (`vintage config show`)",
        )


def _when(time: str) -> str:
    return time[:19].replace("T", " ") + " UTC"


def _not_decided(store: st.StateStore, run: st.RunState, stage: str, decision: str) -> None:
    """Refuse a second decision: an approval gate is decided once (a rejection is final; an approval may
    still be revoked by a rejection until the run goes on)."""
    decisions = [a for a in store.approvals(run.id, stage) if a["decision"] != "requested"]
    last = decisions[-1] if decisions else None
    if last is not None and last["decision"] == "rejected":
        raise PipelineError(
            f"stage {stage} of run {run.id} was rejected by {last['actor']} at {_when(last['time'])}"
            + (f" ({last['comment']})" if last["comment"] else "")
            + f"; it cannot be {decision} again",
            hint="a rejected run stays rejected: start a new run with `vintage run`",
        )
    if last is not None and last["decision"] == "approved" and decision == "approved":
        how = " (--auto-approve)" if last["auto"] else ""
        raise PipelineError(
            f"stage {stage} of run {run.id} was already approved by {last['actor']}{how} "
            f"at {_when(last['time'])}",
            hint=f"nothing new was recorded; `vintage resume {run.id}` goes on",
        )
    if run.status == st.REJECTED:
        raise PipelineError(
            f"run {run.id} was rejected ({run.reason}); its stage {stage} cannot be {decision}",
            hint="a rejected run stays rejected: start a new run with `vintage run`",
        )


def _waiting_stage(spec: Spec, run: st.RunState, stage: str) -> st.StageState:
    check_stage(spec, stage)
    found = run.stage(stage)
    if found.status != st.WAITING:
        raise PipelineError(
            f"stage {stage} of run {run.id} is {found.status}, not waiting for approval",
            hint="only a stage stopped at its approval step can be approved or rejected",
        )
    return found


def decide(
    spec: Spec, run_id: str, stage: str, decision: str, *, actor: str | None = None, comment: str = ""
) -> dict[str, Any]:
    """Approve or reject a stage waiting for approval; returns the evidence that was shown.

    Raises:
        ConfigError: the pipeline has no such stage.
        PipelineError: the stage is not waiting, was already approved (approving again) or rejected, the
            request expired, the actor may not approve. A refused second decision records nothing.
    """
    check_stage(spec, stage)
    store = _store(spec)
    run = store.run(run_id)
    _not_decided(store, run, stage, decision)
    found = _waiting_stage(spec, run, stage)
    who = actor or audit.current_actor()
    env = spec.environments.get(found.environment or "")
    requests = [a for a in store.approvals(run_id, stage) if a["decision"] == "requested"]
    evidence = requests[-1]["evidence"] if requests else {}
    if env is not None:
        if env.approvers and who not in env.approvers:
            audit.record(
                store.state_dir,
                f"approval.{decision}",
                f"{run_id}/{stage}",
                "refused",
                actor=who,
                environment=found.environment,
                detail="not an approver",
            )
            raise PipelineError(
                f"{who} may not approve {stage}: approvers are {', '.join(env.approvers)}",
                hint="ask an approver, or add the user to environments.<env>.approvers",
            )
        if env.forbid_self_approval and who == run.actor and decision == "approved":
            audit.record(
                store.state_dir,
                "approval.approved",
                f"{run_id}/{stage}",
                "refused",
                actor=who,
                environment=found.environment,
                detail="self-approval forbidden",
            )
            raise PipelineError(
                f"{who} started run {run_id} and may not approve it (forbid_self_approval)",
                hint="another approver must approve it",
            )
        if requests:
            asked = datetime.fromisoformat(requests[-1]["time"])
            if datetime.now(UTC) - asked > timedelta(hours=env.approval_ttl_hours):
                store.add_approval(run_id, stage, "expired", "vintage", "request older than the ttl")
                store.set_stage(run_id, stage, st.EXPIRED, "approval request expired")
                store.set_run(run_id, st.EXPIRED, f"approval request of {stage} expired")
                audit.record(
                    store.state_dir,
                    "approval.expired",
                    f"{run_id}/{stage}",
                    "expired",
                    environment=found.environment,
                )
                raise PipelineError(
                    f"the approval request of run {run_id} ({stage}) expired "
                    f"({env.approval_ttl_hours:g} h after {requests[-1]['time']})",
                    hint="start a new run: `vintage run`",
                )
    store.add_approval(run_id, stage, decision, who, comment, evidence)
    audit.record(
        store.state_dir,
        f"approval.{decision}",
        f"{run_id}/{stage}",
        decision,
        actor=who,
        environment=found.environment,
        detail=comment,
    )
    store.update_release(
        run_id,
        approvals={
            stage: {
                "by": who,
                "decision": decision,
                "time": st.now(),
                "comment": comment,
                "evidence": evidence,
            }
        },
    )
    if decision == "rejected":
        store.set_stage(run_id, stage, st.REJECTED, f"rejected by {who}: {comment}")
        store.set_run(run_id, st.REJECTED, f"{stage} rejected by {who}")
    return evidence


# ------------------------------------------------------------------------------------- environments


def target(spec: Spec, environment: str) -> DeployTarget:
    """The deploy target of an environment: its row of :data:`vintage.plugins.DEPLOY_TARGETS`, built with
    ``from_spec(spec, environment)``.

    Raises:
        ConfigError: unknown environment or deploy target.
    """
    check_environment(spec, environment)
    from vintage.plugins import DEPLOY_TARGETS

    found: DeployTarget = DEPLOY_TARGETS.load(spec.environments[environment].target).from_spec(
        spec, environment
    )
    return found


def previous_target(spec: Spec, environment: str) -> DeployTarget | None:
    """The deploy target that made the environment's last deployment, when the config now names another one
    (``environments.staging.target`` changed from ``local`` to ``container``, or back); else ``None``.

    Its server may still hold the environment's port: :func:`check_target_switch` refuses to deploy until it
    is stopped, and :func:`stop` stops it too.
    """
    from vintage.deploy.records import EnvironmentRecords
    from vintage.plugins import DEPLOY_TARGETS

    check_environment(spec, environment)
    env = spec.environments[environment]
    history = EnvironmentRecords(environment, spec.state_dir).history()
    if not history or history[-1].target == env.target or history[-1].target not in DEPLOY_TARGETS:
        return None
    before = history[-1].target
    impl = DEPLOY_TARGETS.load(before)
    settings = getattr(impl, "Settings", None)
    then = env.model_copy(update={"target": before, **({"settings": settings()} if settings else {})})
    then_spec = spec.model_copy(update={"environments": {**spec.environments, environment: then}})
    found: DeployTarget = impl.from_spec(then_spec, environment)
    return found


def check_target_switch(spec: Spec, environment: str) -> None:
    """Refuse to deploy while the target the environment used before still serves it.

    Raises:
        DeployError: the earlier target's server still runs (it would hold the port, and no command of the
            new target could stop it).
    """
    earlier = previous_target(spec, environment)
    if earlier is None:
        return
    serving = earlier.status()
    if serving is not None:
        now = spec.environments[environment].target
        raise DeployError(
            f"{environment} is still served by its {serving.target} target ({serving.model_name} "
            f"v{serving.version} at {serving.url}), but vintage.yaml now names the {now} target",
            hint=f"stop it first: vintage stop {environment}; then run again",
        )


@contextlib.contextmanager
def env_lock(spec: Spec, environment: str, timeout: float = 600.0) -> Iterator[None]:
    """The environment's deploy lock (the one pipeline runs take).

    Raises:
        ConfigError: unknown environment (checked before any lock file is created).
    """
    check_environment(spec, environment)
    lock = _store(spec).lock(st.env_lock(environment))
    if not lock.acquire(timeout):
        raise PipelineError(
            f"environment {environment} stayed locked for {timeout:.0f} s",
            hint="a pipeline run deploys to it; see `vintage runs list`",
        )
    try:
        yield
    finally:
        lock.release()


def status(
    spec: Spec,
    errors: dict[str, VintageError] | None = None,
    crashed: dict[str, str] | None = None,
) -> dict[str, Deployment | None]:
    """What each environment serves now.

    Args:
        errors: When given, an environment whose target cannot answer (e.g. a ``container`` environment on a
            machine without its runtime) maps to ``None`` here and its error is put in ``errors``, so one
            environment does not hide the others; without it the first such error is raised.
        crashed: When given, gets the environments that serve nothing although nobody stopped them, with
            the reason (:meth:`~vintage.deploy.base.DeployTarget.crashed`).
    """
    found: dict[str, Deployment | None] = {}
    for name in spec.environments:
        try:
            now = target(spec, name)
            found[name] = now.status()
            earlier = previous_target(spec, name) if found[name] is None else None
            if earlier is not None:
                found[name] = earlier.status()  # the config changed target; the old server still runs
            if found[name] is None and crashed is not None:
                reason = (earlier or now).crashed()
                if reason is not None:
                    crashed[name] = reason
        except VintageError as exc:
            if errors is None:
                raise
            errors[name] = exc
            found[name] = None
    return found


def start(spec: Spec, environment: str) -> tuple[DeployOutcome | None, Deployment]:
    """Serve again what ``environment`` served last (its last deployment record): after a crash, a
    ``vintage stop`` or a restart of the machine. Recorded like any deploy.

    Returns:
        (the deploy's outcome, what serves), the outcome ``None`` when it already served.

    Raises:
        ConfigError: unknown environment.
        PipelineError: nothing was ever deployed to it.
        DeployError: the model directory is gone or changed since, or the server does not come up.
    """
    from vintage.deploy.records import EnvironmentRecords, verified

    check_environment(spec, environment)
    with env_lock(spec, environment):
        check_target_switch(spec, environment)
        found = target(spec, environment)
        serving = found.status()
        if serving is not None:
            return None, serving
        history = EnvironmentRecords(environment, spec.state_dir).history()
        if not history:
            raise PipelineError(
                f"nothing was ever deployed to {environment}, so there is nothing to start",
                hint="deploy a model with `vintage run` first",
            )
        last = history[-1]
        model_dir = Path(last.model_dir)
        verified(model_dir, last.digest)  # the very model it served, unchanged
        outcome = found.deploy(model_dir, last.model_name, last.version)
    return outcome, outcome.current


def check_serving_keys(spec: Spec) -> None:
    """Before a whole pipeline run: every environment it deploys to behind API keys has its primary key.

    Without it the run would train, register and serve staging, and only then fail at production's
    deploy. The key is read as ``preflight:<environment>`` (recorded in the audit trail like any read).

    Raises:
        PipelineError: a key is missing (nothing was started).
        SecretAccessError: the scope may not be read from that environment.
    """
    from vintage.errors import SecretError
    from vintage.secrets.access import SecretReader

    for stage in spec.pipeline.order():
        environment = stage.environment
        if environment is None or "deploy" not in [str(step) for step in stage.steps]:
            continue
        scope = spec.key_scope(environment)
        if scope is None:
            continue
        reader = SecretReader.from_spec(
            spec.secrets, spec.state_dir.resolve(), reader=f"preflight:{environment}", environment=environment
        )
        try:
            reader.get(f"{scope}/primary")
        except SecretError as exc:
            if type(exc) is not SecretError:
                raise  # access denied: say so as it is
            raise PipelineError(
                f"{environment} serves behind API keys, but its key {scope}/primary is missing: "
                f"{exc.headline}; nothing was started",
                hint=f"create it: vintage secrets put --scope {scope} --key primary --generate",
            ) from exc


def stop(spec: Spec, environment: str) -> bool:
    """Stop an environment's server (graceful). ``False`` when nothing ran.

    Raises:
        ConfigError: unknown environment.
    """
    with env_lock(spec, environment):
        earlier = previous_target(spec, environment)
        stopped_earlier = earlier.stop() if earlier is not None else False
        return target(spec, environment).stop() or stopped_earlier


def rollback(spec: Spec, environment: str, registry: ModelRegistry | None = None) -> tuple[int, int]:
    """Serve the previous version of an environment again and move its alias back (both recorded).

    ``registry``: the model registry (default: the tracking store's, opened with the environment's secrets).

    Returns:
        (from_version, to_version).

    Raises:
        ConfigError: unknown environment.
        PipelineError: there is no earlier version in the alias history.
    """
    check_environment(spec, environment)
    if registry is None:
        from vintage.pipeline.model_registry import MlflowRegistry
        from vintage.secrets.access import SecretReader
        from vintage.tracking import open_session

        reader = SecretReader.from_spec(
            spec.secrets, spec.state_dir.resolve(), reader=f"rollback:{environment}", environment=environment
        )
        session = open_session(spec, create_experiment=False, resolve=reader.resolve)
        registry = MlflowRegistry(lambda: session)
    history = registry.alias_history(spec.model_name, environment)
    if not history or history[-1].get("previous") is None:
        raise PipelineError(
            f"no earlier version of {spec.model_name} was promoted to {environment}; nothing to roll back to",
            hint="`vintage models` shows the versions and aliases",
        )
    current, previous = int(history[-1]["version"]), int(history[-1]["previous"])
    with env_lock(spec, environment):
        model_dir = registry.materialize(spec.model_name, previous, Path(spec.state_dir.resolve()) / "models")
        target(spec, environment).deploy(model_dir, spec.model_name, previous)
        moved_from = registry.move_alias(
            spec.model_name,
            environment,
            previous,
            actor=audit.current_actor(),
            reason=f"rollback from v{current}",
        )
    # Recorded like the pipeline's promote step records a move (vintage audit --action alias.move).
    audit.record(
        spec.state_dir.resolve(),
        "alias.move",
        f"{spec.model_name}@{environment}",
        "ok",
        environment=environment,
        reader="cli:rollback",
        detail=(f"v{moved_from} -> v{previous}" if moved_from else f"-> v{previous}") + " (rollback)",
    )
    audit.record(
        spec.state_dir.resolve(),
        "deploy.rollback",
        environment,
        "ok",
        environment=environment,
        detail=f"{spec.model_name} v{current} -> v{previous} (vintage rollback)",
    )
    return current, previous


def render(spec: Spec, environment: str, *, check: bool = False) -> list[dict[str, Any]]:
    """The manifests of an environment served by a target that has them (kubernetes), for what it
    serves now (its last deployment), without key values. ``check``: API versions as the cluster offers
    them, and a server-side dry run of every object (nothing changes).

    Raises:
        ConfigError: unknown environment, or its target has no manifests.
        DeployError: nothing was deployed there yet; the dry run was refused.
    """
    found = target(spec, environment)
    manifests = getattr(found, "manifests", None)
    if manifests is None:
        raise ConfigError(
            f"environment {environment} uses the {spec.environments[environment].target} target, "
            "which has no manifests",
            hint=f"set environments.{environment}.target: kubernetes",
        )
    history = found.history()
    last = history[-1] if history else None
    if last is None or not last.image or not last.digest or not last.image_digest:
        raise DeployError(
            f"nothing was deployed to {environment} yet: the manifests name the image it serves",
            hint=f"deploy first (vintage run), then render {environment}",
        )
    from vintage.deploy.k8s.manifests import Served

    served = Served(last.model_name, last.version, last.digest, last.image, last.image_digest)
    if not check:
        objects: list[dict[str, Any]] = manifests(served)
        return objects
    with found._cluster() as cluster:  # type: ignore[attr-defined]
        objects = manifests(served, cluster=cluster)
    found.check(objects)  # type: ignore[attr-defined]
    return objects


def rotate_keys(spec: Spec, environment: str) -> Deployment:
    """Sync an environment's API keys from its scope and restart its pods (kubernetes target).

    Raises:
        ConfigError: unknown environment, or its target restarts nothing for keys.
        DeployError: nothing deployed; the restart failed (rolled back).
    """
    found = target(spec, environment)
    rotate = getattr(found, "rotate_keys", None)
    if rotate is None:
        raise ConfigError(
            f"the {spec.environments[environment].target} target of {environment} takes new keys on the "
            "next deploy",
            hint="deploy again (vintage run): the running server re-reads its keys",
        )
    with env_lock(spec, environment):
        current: Deployment = rotate()
    return current
