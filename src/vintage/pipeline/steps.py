"""The step library of ``vintage run``. Every step is idempotent: running it again after a crash (or on
resume) does not register a second version, deploy twice or move an alias twice.

A step returns its output (a JSON-able dict, stored in the run state); later steps read earlier outputs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vintage import audit
from vintage.errors import PipelineError
from vintage.pipeline import gates
from vintage.pipeline import state as st
from vintage.pipeline.context import StepContext, config_digest, materialize_version
from vintage.pipeline.gates import GateRefused

if TYPE_CHECKING:
    from vintage.deploy.base import Deployment

__all__ = ["STEPS", "GateRefused", "StepContext", "config_digest"]

log = logging.getLogger(__name__)


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
        "reused" if version.reused else "ok",
        reader=f"run:{ctx.run_id}",
        detail=f"run_id={chosen.run_id} alias={CANDIDATE}",
    )
    if version.reused:
        ctx.say(f"{version.name} version {version.version} already holds this model (alias {CANDIDATE})")
    else:
        ctx.say(f"registered {version.name} version {version.version} (alias {CANDIDATE})")
    from vintage.pipeline.build import registered_output

    return registered_output(version, chosen.run_id)


def release(ctx: StepContext) -> dict[str, Any]:
    """Write the release record (the original pipeline's image.json, with much more in it)."""
    trained, reg = ctx.output("train"), ctx.output("register")
    name, version = ctx.candidate()
    # The run that produced the registered version: when this run's chosen run only reproduced an
    # existing version, that version's own run (the reproducing run is listed as such).
    chosen = trained.get("selected", {}).get("run_id")
    source = reg.get("run_id") or chosen
    reproduced = {"reproduced_by_run_id": chosen} if chosen and chosen != source else {}
    record = ctx.store.update_release(
        ctx.run_id,
        model_name=name,
        version=version,
        mlflow_run_id=source,
        **reproduced,
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


def deploy(ctx: StepContext) -> dict[str, Any]:
    """Serve the candidate in the stage's environment (start, or hot-swap with zero downtime)."""
    name, version = ctx.candidate()
    model_dir = materialize_version(ctx, name, version)
    outcome = ctx.target().deploy(model_dir, name, version)
    env = ctx.stage.environment
    ctx.say(f"{env}: {outcome.action} {name} v{version} at {outcome.current.url}")
    ctx.store.update_release(
        ctx.run_id,
        deployments={
            str(env): {
                "version": version,
                "digest": outcome.current.digest,
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
    "smoke_test": gates.smoke_test,
    "champion_gate": gates.champion_gate,
    "approval": gates.approval,
    "promote": promote,
}
