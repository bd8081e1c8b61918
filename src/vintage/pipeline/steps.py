"""The step library of ``vintage run``. Every step is idempotent: running it again after a crash (or on
resume) does not register a second version, deploy twice or move an alias twice.

A step returns its output (a typed :class:`~vintage.pipeline.outputs.StepOutput`, stored in the run state
as JSON); later steps read earlier outputs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vintage import audit
from vintage.errors import PipelineError, VintageError
from vintage.pipeline import gates
from vintage.pipeline import state as st
from vintage.pipeline.context import StepContext, config_digest, materialize_version
from vintage.pipeline.gates import GateRefused
from vintage.pipeline.outputs import (
    ChampionOutput,
    DeployOutput,
    PromoteOutput,
    RegisterOutput,
    ReleaseOutput,
    Selected,
    StepOutput,
    TrainOutput,
    ValidateOutput,
)

if TYPE_CHECKING:
    from vintage.training import PointRun

__all__ = ["STEPS", "GateRefused", "StepContext", "config_digest"]

log = logging.getLogger(__name__)


def validate(ctx: StepContext) -> ValidateOutput:
    """Load and validate the data set."""
    from vintage.data import load_dataset

    ds = load_dataset(ctx.spec.data)
    ctx.say(f"data {ds.source}: {ds.n_rows} rows, digest {ds.digest}")
    return ValidateOutput(source=ds.source, rows=ds.n_rows, digest=ds.digest)


def train(ctx: StepContext) -> TrainOutput:
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
        + _holdout_note(ctx.spec.selection.metric, key, selected.metrics)
        + (f"; refit on all rows: run {trained.refit.run_id}" if trained.refit else "")
    )
    return TrainOutput(
        parent_run_id=report.parent_run_id,
        data_digest=report.data_digest,
        selection_key=key,
        runs=len(report.runs),
        failed=len(report.failed),
        selected=Selected(
            run_id=selected.run_id,
            name=selected.name,
            estimator=selected.estimator,
            metrics=selected.metrics,
            model_uri=selected.model_uri,
            training_key=selected.training_key,
        ),
        refit=_selected(trained.refit) if trained.refit else None,
    )


def _selected(run: PointRun) -> Selected:
    return Selected(
        run_id=run.run_id,
        name=run.name,
        estimator=run.estimator,
        metrics=run.metrics,
        model_uri=run.model_uri,
        training_key=run.training_key,
    )


def _holdout_note(metric: str, key: str, metrics: dict[str, float]) -> str:
    """``, holdout rmse = 0.6612`` when selection used another figure (CV) than the holdout one."""
    return f", holdout {metric} = {metrics[metric]:.4f}" if key != metric and metric in metrics else ""


def register(ctx: StepContext) -> RegisterOutput:
    """Register the chosen run (alias ``candidate``); idempotent by run and training key."""
    from vintage.registry import CANDIDATE

    trained = ctx.result(TrainOutput)
    if trained is None:
        raise PipelineError("nothing to register: the train step has not succeeded in this run")
    chosen = trained.to_register
    version = ctx.registry.register_run(ctx.spec.model_name, chosen, trained.data_digest, alias=CANDIDATE)
    ctx.registry.tag_run(trained.parent_run_id, "vintage.registered_version", str(version.version))
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
    return RegisterOutput.of(version, chosen.run_id)


def release(ctx: StepContext) -> ReleaseOutput:
    """Write the release record (the original pipeline's image.json, with much more in it)."""
    trained, reg = ctx.result(TrainOutput), ctx.result(RegisterOutput)
    name, version = ctx.candidate()
    # The run that produced the registered version: when this run's chosen run only reproduced an
    # existing version, that version's own run (the reproducing run is listed as such).
    chosen = trained.to_register.run_id if trained else None
    source = (reg.run_id if reg else None) or chosen
    reproduced = {"reproduced_by_run_id": chosen} if chosen and chosen != source else {}
    from vintage.pipeline.evaluate import evaluation_report

    evaluation = evaluation_report(ctx, name, version, source)
    record = ctx.store.update_release(
        ctx.run_id,
        model_name=name,
        version=version,
        mlflow_run_id=source,
        **reproduced,
        metrics=trained.selected.metrics if trained else {},
        selection_metric=trained.selection_key if trained else None,
        data_digest=trained.data_digest if trained else None,
        config_digest=config_digest(ctx.spec),
        created=st.now(),
        **({"evaluation": evaluation} if evaluation else {}),
    )
    out_dir = ctx.state_dir / "releases"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{ctx.run_id}.json").write_text(json.dumps(record, indent=2, default=str))
    ctx.say(f"release record written: {name} v{version} (run {reg.run_id if reg else None})")
    return ReleaseOutput(
        path=f"releases/{ctx.run_id}.json", report=evaluation["report"] if evaluation else None
    )


# ------------------------------------------------------------------------------------- environments


def deploy(ctx: StepContext) -> DeployOutput:
    """Serve the candidate in the stage's environment (start, or hot-swap with zero downtime)."""
    name, version = ctx.candidate()
    model_dir = materialize_version(ctx, name, version)
    from vintage.pipeline.ops import check_target_switch

    check_target_switch(ctx.spec, str(ctx.stage.environment))
    env = ctx.stage.environment
    _champion_still_current(ctx, name, version)
    try:
        outcome = ctx.target().deploy(model_dir, name, version)
    except VintageError as exc:
        # A failed deploy (a Kubernetes rollout rolled back, a container that did not start) is part of the
        # release's story: the record says what was tried, when, and what happened.
        failed = {"version": version, "action": "failed", "error": exc.headline, "time": st.now()}
        ctx.store.update_release(ctx.run_id, deployments={str(env): failed})
        raise
    ctx.say(f"{env}: {outcome.action} {name} v{version} at {outcome.current.url}")
    served: dict[str, Any] = {
        "version": version,
        "digest": outcome.current.digest,
        "action": outcome.action,
        "url": outcome.current.url,
        "time": st.now(),
    }
    if outcome.current.image:
        # What the original pipeline passed on as image.json: the image an environment runs.
        served["image"] = {"reference": outcome.current.image, "digest": outcome.current.image_digest}
    ctx.store.update_release(ctx.run_id, deployments={str(env): served})
    return DeployOutput.of(outcome.action, outcome.current, outcome.previous)


def _champion_still_current(ctx: StepContext, name: str, version: int) -> None:
    """Before production is changed: judge the candidate again if production changed since the champion
    gate compared the two.

    The gate runs in an earlier stage (staging by default). Two runs can both pass it while production
    still serves the same model, and the better one may reach production first: the other would then
    replace it unchecked. The environment lock is held from here to the promote step, so what production
    serves cannot change again before this run's candidate is promoted or refused.

    Raises:
        GateRefused: the candidate is worse than the model that now serves production.
    """
    if ctx.stage.environment != gates.CHAMPION_ALIAS:
        return
    judged = ctx.result(ChampionOutput)
    if judged is None:
        return
    now = ctx.registry.alias_version(name, gates.CHAMPION_ALIAS)
    if now is None or now in (judged.champion, version):
        return
    was = f"v{judged.champion}" if judged.champion is not None else "nothing"
    ctx.say(f"production now serves v{now} (the champion gate compared with {was}): judging again")
    gates.champion_gate(ctx)


def promote(ctx: StepContext) -> PromoteOutput:
    """Point the environment's alias (``staging``, ``production``) at the candidate; recorded."""
    name, version = ctx.candidate()
    alias = str(ctx.stage.environment)
    previous = ctx.registry.move_alias(
        name, alias, version, actor=audit.current_actor(), reason=f"run {ctx.run_id}"
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
    return PromoteOutput(alias=alias, version=version, previous=previous)


STEPS: dict[str, Callable[[StepContext], StepOutput]] = {
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
