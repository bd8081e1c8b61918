"""The step library of ``vintage run``. Every step is idempotent: running it again after a crash (or on
resume) does not register a second version, deploy twice or move an alias twice.

A step returns its output (a JSON-able dict, stored in the run state); later steps read earlier outputs.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vintage import audit
from vintage.errors import PipelineError, WaitingApproval
from vintage.pipeline import state as st
from vintage.secrets.access import SecretReader

if TYPE_CHECKING:
    from vintage.config import Spec
    from vintage.config.models import StageSpec
    from vintage.deploy.base import Deployment, DeployTarget
    from vintage.tracking import TrackingSession

log = logging.getLogger(__name__)


class GateRefused(PipelineError):  # noqa: N818 - reads as what happened
    """A gate (champion, smoke test) refused the candidate; the reason is recorded."""


@dataclass
class StepContext:
    """What a step sees."""

    spec: Spec
    project_dir: Path
    store: st.StateStore
    run_id: str
    stage: StageSpec
    options: dict[str, Any]
    say: Callable[[str], None]
    stop: threading.Event | None = None
    _session: TrackingSession | None = field(default=None, repr=False)

    @property
    def state_dir(self) -> Path:
        return self.spec.state_dir.resolve()

    @functools.cached_property
    def secrets(self) -> SecretReader:
        """Reads secrets as ``stage:<name>`` in the stage's environment."""
        return SecretReader.from_spec(
            self.spec.secrets,
            self.state_dir,
            reader=f"stage:{self.stage.name}",
            environment=self.stage.environment,
        )

    def session(self) -> TrackingSession:
        """The tracking session (opened once per stage)."""
        if self._session is None:
            from vintage.tracking import open_session

            self._session = open_session(self.spec, resolve=self.secrets.resolve)
        return self._session

    def output(self, step: str) -> dict[str, Any]:
        """Output of an earlier succeeded step of this run."""
        return self.store.run(self.run_id).output(step)

    def candidate(self) -> tuple[str, int]:
        """The model name and version this run registered."""
        reg = self.output("register")
        if not reg:
            raise PipelineError(
                f"run {self.run_id} has no registered candidate yet",
                hint="the build stage (steps train, register) must succeed first",
            )
        return str(reg["model_name"]), int(reg["version"])

    def target(self) -> DeployTarget:
        """The deploy target of the stage's environment."""
        assert self.stage.environment is not None
        env = self.spec.environments[self.stage.environment]
        if env.target != "local":
            raise PipelineError(f"deploy target {env.target!r} is not available yet")
        from vintage.deploy.local import LocalTarget

        return LocalTarget(
            self.stage.environment,
            self.state_dir,
            host=env.host,
            port=env.port,
            workers=env.workers,
            key_scope=self.spec.key_scope(self.stage.environment),
            secrets=self.spec.secrets.model_dump(mode="json"),
        )


def config_digest(spec: Spec) -> str:
    """SHA-256 (first 16 hex) of the resolved config (secret references, not values)."""
    blob = json.dumps(spec.model_dump(mode="json", by_alias=True), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------- build


def validate(ctx: StepContext) -> dict[str, Any]:
    """Load and validate the data set."""
    from vintage.data import load_dataset

    ds = load_dataset(ctx.spec.data)
    ctx.say(f"data {ds.source}: {ds.n_rows} rows, digest {ds.digest}")
    return {"source": ds.source, "rows": ds.n_rows, "digest": ds.digest}


def train(ctx: StepContext) -> dict[str, Any]:
    """Train the grid and select the best run (nothing registered yet)."""
    from vintage.pipeline.build import train_and_select

    trained = train_and_select(ctx.spec, project_dir=ctx.project_dir, stop=ctx.stop, secrets=ctx.secrets)
    ctx._session = trained.session
    report, selected = trained.report, trained.selected
    trained.session.client.set_tag(report.parent_run_id, "vintage.pipeline_run", ctx.run_id)
    key = ctx.spec.selection.selection_key
    ctx.say(
        f"trained {len(report.runs)} grid point(s) ({len(report.failed)} failed); chosen {selected.name}, "
        f"{key} = {selected.metrics.get(key, float('nan')):.4f}"
    )
    return {
        "parent_run_id": report.parent_run_id,
        "data_digest": report.data_digest,
        "selection_key": key,
        "runs": len(report.runs),
        "failed": len(report.failed),
        "selected": {
            "run_id": selected.run_id,
            "name": selected.name,
            "estimator": selected.estimator,
            "metrics": selected.metrics,
            "model_uri": selected.model_uri,
            "training_key": selected.training_key,
        },
    }


@dataclass
class _Chosen:
    run_id: str
    name: str
    estimator: str
    metrics: dict[str, float]
    model_uri: str | None
    training_key: str | None


def register(ctx: StepContext) -> dict[str, Any]:
    """Register the chosen run (alias ``candidate``); idempotent by run and training key."""
    from vintage.registry import CANDIDATE, register_run

    trained = ctx.output("train")
    if not trained:
        raise PipelineError("nothing to register: the train step has not succeeded in this run")
    chosen = _Chosen(**trained["selected"])
    version = register_run(
        ctx.session(), ctx.spec.model_name, chosen, trained["data_digest"], alias=CANDIDATE
    )
    client = ctx.session().client
    client.set_tag(trained["parent_run_id"], "vintage.registered_version", str(version.version))
    audit.record(
        ctx.state_dir,
        "model.register",
        f"{version.name}/{version.version}",
        "ok",
        reader=f"run:{ctx.run_id}",
        detail=f"run_id={chosen.run_id} alias={CANDIDATE}",
    )
    ctx.say(f"registered {version.name} version {version.version} (alias {CANDIDATE})")
    return {"model_name": version.name, "version": version.version, "run_id": chosen.run_id}


def release(ctx: StepContext) -> dict[str, Any]:
    """Write the release record (the original pipeline's image.json, with much more in it)."""
    trained, reg = ctx.output("train"), ctx.output("register")
    name, version = ctx.candidate()
    record = ctx.store.update_release(
        ctx.run_id,
        model_name=name,
        version=version,
        mlflow_run_id=trained.get("selected", {}).get("run_id"),
        metrics=trained.get("selected", {}).get("metrics", {}),
        selection_metric=trained.get("selection_key"),
        data_digest=trained.get("data_digest"),
        config_digest=config_digest(ctx.spec),
        created=st.now(),
    )
    out_dir = ctx.state_dir / "releases"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{ctx.run_id}.json").write_text(json.dumps(record, indent=2, default=str))
    ctx.say(f"release record written: {name} v{version} (run {reg.get('run_id')})")
    return {"path": f"releases/{ctx.run_id}.json"}


# ------------------------------------------------------------------------------------- environments


def _materialize(ctx: StepContext, name: str, version: int) -> Path:
    from vintage.serving.materialize import materialize

    session = ctx.session()
    return materialize(f"models:/{name}/{version}", ctx.state_dir / "models", tracking_uri=session.target.uri)


def deploy(ctx: StepContext) -> dict[str, Any]:
    """Serve the candidate in the stage's environment (start, or hot-swap with zero downtime)."""
    name, version = ctx.candidate()
    model_dir = _materialize(ctx, name, version)
    outcome = ctx.target().deploy(model_dir, name, version)
    env = ctx.stage.environment
    ctx.say(f"{env}: {outcome.action} {name} v{version} at {outcome.current.url}")
    ctx.store.update_release(
        ctx.run_id,
        deployments={
            str(env): {
                "version": version,
                "action": outcome.action,
                "url": outcome.current.url,
                "time": st.now(),
            }
        },
    )
    return {
        "action": outcome.action,
        "current": _deployment_json(outcome.current),
        "previous": _deployment_json(outcome.previous) if outcome.previous else None,
    }


def _deployment_json(d: Deployment) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(d)


def _api_key(ctx: StepContext) -> str | None:
    scope = ctx.spec.key_scope(ctx.stage.environment or "")
    return ctx.secrets.get(f"{scope}/primary") if scope else None


def smoke_test(ctx: StepContext) -> dict[str, Any]:
    """POST the first rows of the data set as split JSON (as the original notebooks did); expect finite
    predictions equal to the registry model's own. A failure rolls the environment back."""
    name, version = ctx.candidate()
    try:
        result = _smoke(ctx, name, version)
    except GateRefused as exc:
        deployed = _here(ctx, "deploy")
        _roll_back(ctx, deployed, exc.headline)
        raise
    ctx.say(
        f"{ctx.stage.environment}: smoke test passed "
        f"({result['rows']} rows, max diff {result['max_diff']:.2e})"
    )
    return result


def _deployed_here(ctx: StepContext) -> bool:
    return bool(_here(ctx, "deploy"))


def _here(ctx: StepContext, step: str) -> dict[str, Any]:
    """Output of a succeeded step of the current stage (``{}`` if it did not run or failed)."""
    run = ctx.store.run(ctx.run_id)
    for s in run.stage(ctx.stage.name).steps:
        if s.name == step and s.status == st.SUCCEEDED:
            return s.output or {"ok": True}
    return {}


def _predict(model: Any, frame: Any) -> Any:
    """Predict with a served-model loader: columns in the model's order, as float64."""
    return model.predict(frame[list(model.info.columns)].to_numpy(dtype="float64"))


def _smoke(ctx: StepContext, name: str, version: int) -> dict[str, Any]:
    import http.client

    import numpy as np

    from vintage.data import load_dataset
    from vintage.serving.model import load_model_dir

    status = ctx.target().status()
    if status is None:
        raise GateRefused(f"smoke test: nothing serves in {ctx.stage.environment}")
    rows = load_dataset(ctx.spec.data).frame[list(ctx.spec.data.features)].head(ctx.spec.pipeline.smoke_rows)
    body = json.dumps({"dataframe_split": json.loads(rows.to_json(orient="split", index=False))})
    headers = {"Content-Type": "application/json"}
    key = _api_key(ctx)
    if key:
        headers["Authorization"] = f"Bearer {key}"
    host = status.url.split("//", 1)[1]
    conn = http.client.HTTPConnection(host, timeout=30)
    try:
        conn.request("POST", "/invocations", body=body, headers=headers)
        resp = conn.getresponse()
        payload = resp.read()
    except OSError as exc:
        raise GateRefused(f"smoke test: {status.url} did not answer ({exc.__class__.__name__})") from exc
    finally:
        conn.close()
    if resp.status != 200:
        raise GateRefused(f"smoke test: {status.url}/invocations answered {resp.status}: {payload[:200]!r}")
    try:
        preds = np.asarray(json.loads(payload)["predictions"], dtype="float64").reshape(-1)
    except (ValueError, KeyError, TypeError) as exc:
        raise GateRefused(
            f"smoke test: the answer is not {{'predictions': [...]}}: {payload[:200]!r}"
        ) from exc
    if len(preds) != len(rows) or not np.all(np.isfinite(preds)):
        raise GateRefused(f"smoke test: expected {len(rows)} finite predictions, got {preds.tolist()[:20]}")
    expected = _predict(load_model_dir(_materialize(ctx, name, version)), rows)
    diff = float(np.max(np.abs(np.asarray(expected, dtype="float64").reshape(-1) - preds)))
    if not math.isfinite(diff) or diff > 1e-6 * max(1.0, float(np.max(np.abs(preds)))):
        raise GateRefused(
            f"smoke test: {ctx.stage.environment} predictions differ from {name} v{version}'s own "
            f"by {diff:.3g}"
        )
    served = status.version
    if served != version:
        raise GateRefused(f"smoke test: {ctx.stage.environment} serves v{served}, expected v{version}")
    return {"rows": len(rows), "max_diff": diff, "url": status.url}


def _roll_back(ctx: StepContext, deployed: dict[str, Any], reason: str) -> None:
    from vintage.deploy.base import Deployment

    prev = deployed.get("previous")
    previous = Deployment(**prev) if prev else None
    restored = ctx.target().restore(previous)
    what = f"v{restored.version}" if restored else "nothing (stopped)"
    audit.record(
        ctx.state_dir,
        "deploy.rollback",
        str(ctx.stage.environment),
        "ok",
        reader=f"run:{ctx.run_id}",
        environment=ctx.stage.environment,
        detail=f"automatic: {reason[:160]}; now serving {what}",
    )
    ctx.store.update_release(
        ctx.run_id, deployments={str(ctx.stage.environment): {"rolled_back": True, "reason": reason}}
    )
    ctx.say(f"{ctx.stage.environment}: rolled back ({reason[:80]}); serving {what}")


def champion_gate(ctx: StepContext) -> dict[str, Any]:
    """Fail-closed: the candidate must not be worse than the current ``production`` model on the same
    holdout by more than ``pipeline.champion_tolerance`` (on the selection metric)."""
    from vintage.registry import alias_version

    name, version = ctx.candidate()
    champion = alias_version(ctx.session().client, name, "production")
    sel = ctx.spec.selection
    cand_score = _holdout_score(ctx, name, version)
    result: dict[str, Any] = {
        "candidate": version,
        "candidate_score": cand_score,
        "metric": sel.metric,
        "champion": champion,
        "champion_score": None,
        "tolerance": ctx.spec.pipeline.champion_tolerance,
        "forced": False,
    }
    if champion is None or champion == version:
        result["verdict"] = "no champion" if champion is None else "candidate is the champion"
    else:
        champ_score = _holdout_score(ctx, name, champion)
        result["champion_score"] = champ_score
        tol = ctx.spec.pipeline.champion_tolerance
        worse = (
            (cand_score - champ_score > tol)
            if sel.direction == "minimize"
            else (champ_score - cand_score > tol)
        )
        if worse:
            reason = (
                f"champion gate: candidate v{version} {sel.metric} {cand_score:.4f} is worse than "
                f"production v{champion} {champ_score:.4f} (tolerance {tol})"
            )
            forced = ctx.options.get("force_promote_reason")
            if not forced:
                ctx.store.update_release(ctx.run_id, champion=result | {"verdict": "refused"})
                if _deployed_here(ctx):  # the refused candidate must not keep serving this environment
                    _roll_back(ctx, _here(ctx, "deploy"), reason)
                raise GateRefused(
                    reason, hint="fix the model, or override with --force-promote --reason '...'"
                )
            result.update(forced=True, force_reason=forced, verdict="forced")
            audit.record(
                ctx.state_dir,
                "gate.force_promote",
                f"{name}/{version}",
                "ok",
                reader=f"run:{ctx.run_id}",
                environment=ctx.stage.environment,
                detail=f"{reason}; reason: {forced}",
            )
            ctx.say(f"WARNING: {reason}; promoted anyway (--force-promote: {forced})")
        else:
            result["verdict"] = "not worse"
    ctx.store.update_release(ctx.run_id, champion=result)
    ctx.say(
        f"champion gate: {result['verdict']} (candidate v{version} {sel.metric} {cand_score:.4f}"
        + (
            f", champion v{champion} {result['champion_score']:.4f})"
            if result["champion_score"] is not None
            else ")"
        )
    )
    return result


def _holdout_score(ctx: StepContext, name: str, version: int) -> float:
    from vintage.data import load_dataset
    from vintage.serving.model import load_model_dir

    ds = load_dataset(ctx.spec.data)
    _, test = ds.split(ctx.spec.data.split.test_size, ctx.spec.data.split.seed)
    model = load_model_dir(_materialize(ctx, name, version))
    import numpy as np

    pred = np.asarray(_predict(model, test), dtype="float64").reshape(-1)
    y = test[ds.target].to_numpy(dtype="float64")
    metric = ctx.spec.selection.metric
    if metric == "rmse":
        return float(np.sqrt(np.mean((y - pred) ** 2)))
    if metric == "mae":
        return float(np.mean(np.abs(y - pred)))
    ss_res = float(np.sum((y - pred) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return 1.0 - ss_res / ss_tot if ss_tot else 0.0


def approval(ctx: StepContext) -> dict[str, Any]:
    """Wait for ``vintage approve`` (or take ``--auto-approve``, loudly). Approvals expire."""
    from datetime import UTC, datetime, timedelta

    env_name = str(ctx.stage.environment)
    env = ctx.spec.environments[env_name]
    ttl = timedelta(hours=env.approval_ttl_hours)
    decisions = ctx.store.approvals(ctx.run_id, ctx.stage.name)
    evidence = _evidence(ctx)
    if ctx.options.get("auto_approve"):
        actor = audit.current_actor()
        ctx.store.add_approval(
            ctx.run_id, ctx.stage.name, "approved", actor, "--auto-approve", evidence, auto=True
        )
        audit.record(
            ctx.state_dir,
            "approval.auto",
            f"{ctx.run_id}/{ctx.stage.name}",
            "approved",
            environment=env_name,
            reader=f"run:{ctx.run_id}",
            detail="--auto-approve (no human review)",
        )
        ctx.store.update_release(
            ctx.run_id, approvals={ctx.stage.name: {"by": actor, "auto": True, "time": st.now()}}
        )
        ctx.say(f"WARNING: {ctx.stage.name} auto-approved (--auto-approve): no human reviewed this release")
        return {"decision": "approved", "by": actor, "auto": True}
    last = decisions[-1] if decisions else None
    now = datetime.now(UTC)
    if last is not None and last["decision"] == "approved":
        if now - datetime.fromisoformat(last["time"]) <= ttl:
            ctx.store.update_release(
                ctx.run_id,
                approvals={
                    ctx.stage.name: {
                        "by": last["actor"],
                        "auto": False,
                        "time": last["time"],
                        "comment": last["comment"],
                    }
                },
            )
            return {
                "decision": "approved",
                "by": last["actor"],
                "time": last["time"],
                "comment": last["comment"],
            }
        ctx.store.add_approval(
            ctx.run_id, ctx.stage.name, "expired", "vintage", "approval older than the ttl"
        )
        last = None
    if last is not None and last["decision"] == "rejected":
        raise PipelineError(
            f"{ctx.stage.name} was rejected by {last['actor']}: {last['comment'] or 'no comment'}"
        )
    if (
        last is not None
        and last["decision"] == "requested"
        and now - datetime.fromisoformat(last["time"]) > ttl
    ):
        # Nobody decided in time: this run can no longer be approved (a newer run carries newer evidence).
        ctx.store.add_approval(ctx.run_id, ctx.stage.name, "expired", "vintage", "request older than the ttl")
        audit.record(
            ctx.state_dir,
            "approval.expired",
            f"{ctx.run_id}/{ctx.stage.name}",
            "expired",
            environment=env_name,
            reader=f"run:{ctx.run_id}",
        )
        raise PipelineError(
            f"the approval request of run {ctx.run_id} ({ctx.stage.name}) expired after "
            f"{env.approval_ttl_hours:g} h without a decision",
            hint="start a new run: `vintage run`",
        )
    if last is None or last["decision"] == "expired":
        ctx.store.add_approval(ctx.run_id, ctx.stage.name, "requested", audit.current_actor(), "", evidence)
    raise WaitingApproval(
        f"run {ctx.run_id} waits for approval of stage {ctx.stage.name} ({env_name})",
        hint=f"vintage approve {ctx.run_id} {ctx.stage.name} --comment '...'; "
        f"then vintage resume {ctx.run_id}",
        details=[f"{k}: {v}" for k, v in evidence.items()],
    )


def _evidence(ctx: StepContext) -> dict[str, Any]:
    rec = ctx.store.release(ctx.run_id) or {}
    champ = rec.get("champion") or {}
    return {
        "candidate": f"{rec.get('model_name')} v{rec.get('version')}",
        "metrics": rec.get("metrics"),
        "champion": champ.get("champion"),
        "candidate_score": champ.get("candidate_score"),
        "champion_score": champ.get("champion_score"),
        "champion_verdict": champ.get("verdict"),
    }


def promote(ctx: StepContext) -> dict[str, Any]:
    """Point the environment's alias (``staging``, ``production``) at the candidate; recorded."""
    from vintage.registry import move_alias

    name, version = ctx.candidate()
    alias = str(ctx.stage.environment)
    previous = move_alias(
        ctx.session().client, name, alias, version, actor=audit.current_actor(), reason=f"run {ctx.run_id}"
    )
    audit.record(
        ctx.state_dir,
        "alias.move",
        f"{name}@{alias}",
        "ok",
        environment=alias,
        reader=f"run:{ctx.run_id}",
        detail=f"v{previous} -> v{version}" if previous else f"-> v{version}",
    )
    ctx.store.update_release(
        ctx.run_id, promotions={alias: {"version": version, "previous": previous, "time": st.now()}}
    )
    if previous == version:
        ctx.say(f"alias {alias} already points at {name} v{version}")
    else:
        ctx.say(f"alias {alias} -> {name} v{version}" + (f" (was v{previous})" if previous else ""))
    return {"alias": alias, "version": version, "previous": previous}


STEPS: dict[str, Callable[[StepContext], dict[str, Any]]] = {
    "validate": validate,
    "train": train,
    "register": register,
    "release": release,
    "deploy": deploy,
    "smoke_test": smoke_test,
    "champion_gate": champion_gate,
    "approval": approval,
    "promote": promote,
}
