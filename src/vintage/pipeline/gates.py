"""The gates of the pipeline: smoke test (with automatic rollback), champion gate (fail-closed) and
approval (with expiry). Each refuses with :class:`GateRefused` or stops with ``WaitingApproval``."""

from __future__ import annotations

import json
import math
from typing import Any, Final

from vintage import audit
from vintage.errors import ApprovalRejected, PipelineError, WaitingApproval
from vintage.evaluation.metrics import (
    ACCURACY_EPS,
    ACCURACY_METRICS,
    ACCURACY_TOLERANCES,
    CLASSIFIER_METRICS,
    classification_metrics,
    evaluation_metrics,
)
from vintage.metrics import from_sums
from vintage.pipeline import state as st
from vintage.pipeline.context import StepContext, here, materialize_version
from vintage.pipeline.outputs import ApprovalOutput, ChampionOutput, SmokeTestOutput

CHAMPION_ALIAS: Final = "production"
"""The alias (and environment) whose model the champion gate compares the candidate with."""


class GateRefused(PipelineError):  # noqa: N818 - reads as what happened
    """A gate (champion, smoke test) refused the candidate; the reason is recorded."""


def _api_key(ctx: StepContext) -> str | None:
    scope = ctx.spec.key_scope(ctx.stage.environment or "")
    return ctx.secrets.get(f"{scope}/primary") if scope else None


def smoke_test(ctx: StepContext) -> SmokeTestOutput:
    """POST the first rows of the data set as split JSON (as the original notebooks did); expect finite
    predictions equal to the registry model's own. A failure rolls the environment back."""
    name, version = ctx.candidate()
    try:
        result = _smoke(ctx, name, version)
    except GateRefused as exc:
        deployed = here(ctx, "deploy")
        _roll_back(ctx, deployed, exc.headline)
        raise
    ctx.say(
        f"{ctx.stage.environment}: smoke test passed "
        f"({result['rows']} rows, max diff {result['max_diff']:.2e})"
    )
    return SmokeTestOutput.model_validate(result)


def _predict(model: Any, frame: Any) -> Any:
    """Predict with a served-model loader: columns in the model's order, as float64."""
    return model.predict(frame[list(model.info.columns)].to_numpy(dtype="float64"))


def _smoke(ctx: StepContext, name: str, version: int) -> dict[str, Any]:
    import numpy as np

    from vintage.data import load_dataset
    from vintage.errors import ServingError
    from vintage.model.load import load_model_dir
    from vintage.serving.client import ServerClient, ServerUnavailableError

    status = ctx.target().status()
    if status is None:
        raise GateRefused(f"smoke test: nothing serves in {ctx.stage.environment}")
    # The first rows kept by the validating pass: the whole data set is never loaded (smoke_rows is at
    # most HEAD_ROWS, checked in the config).
    rows = load_dataset(ctx.spec.data).head(ctx.spec.pipeline.smoke_rows)[list(ctx.spec.data.features)]
    body = json.dumps({"dataframe_split": json.loads(rows.to_json(orient="split", index=False))})
    try:
        resp = ServerClient(status.url, api_key=_api_key(ctx)).predict(body, timeout=30)
    except ServerUnavailableError as exc:
        raise GateRefused(f"smoke test: {status.url} did not answer ({exc.cause})") from exc
    except ServingError as exc:  # not a server URL
        raise GateRefused(f"smoke test: {exc.headline}") from exc
    payload = resp.body
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
    expected = _predict(load_model_dir(materialize_version(ctx, name, version)), rows)
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


def champion_gate(ctx: StepContext) -> ChampionOutput:
    """Fail-closed: the candidate must not be worse than the current ``production`` model on the same
    holdout by more than ``pipeline.champion_tolerance`` (on the selection metric)."""
    name, version = ctx.candidate()
    champion = ctx.registry.alias_version(name, CHAMPION_ALIAS)
    sel = ctx.spec.selection
    holdout = _SparkHoldout(ctx) if _mllib_run(ctx) else None
    cand_score = _holdout_score(ctx, name, version, holdout)
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
        champ_score = _holdout_score(ctx, name, champion, holdout)
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
                refused = ChampionOutput.model_validate(result | {"verdict": "refused"})
                ctx.store.update_release(ctx.run_id, champion=refused.to_json())
                if here(ctx, "deploy"):  # the refused candidate must not keep serving this environment
                    _roll_back(ctx, here(ctx, "deploy"), reason)
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
    output = ChampionOutput.model_validate(result)
    ctx.store.update_release(ctx.run_id, champion=output.to_json())
    ctx.say(
        f"champion gate: {result['verdict']} (candidate v{version} {sel.metric} {cand_score:.4f}"
        + (
            f", champion v{champion} {result['champion_score']:.4f})"
            if result["champion_score"] is not None
            else ")"
        )
    )
    return output


def _holdout_score(ctx: StepContext, name: str, version: int, holdout: _SparkHoldout | None = None) -> float:
    if holdout is not None:
        return holdout.score(name, version)
    from vintage.data import load_dataset

    ds = load_dataset(ctx.spec.data)
    split = ctx.spec.data.split
    _, test = ds.split(split.test_size, split.seed, group_duplicates=split.group_duplicates)
    model = ctx.registry.load_model(name, version, ctx.state_dir / "models")
    import numpy as np

    pred = np.asarray(_predict(model, test), dtype="float64").reshape(-1)
    metric = ctx.spec.selection.metric
    if metric in CLASSIFIER_METRICS:
        return classification_metrics(test[ds.target].to_numpy(dtype="float64"), pred)[metric]
    return evaluation_metrics(test[ds.target], pred)[metric]


def _mllib_run(ctx: StepContext) -> bool:
    """True when the build trained Spark MLlib estimators (the trainer refuses a grid mixing them with
    scikit-learn ones): the gate then scores on the MLlib trainer's holdout, with Spark."""
    from vintage.config.models import is_mllib

    return any(is_mllib(e.class_path) for e in ctx.spec.estimators)


class _SparkHoldout:
    """The Spark MLlib trainer's holdout (same read, same ``randomSplit`` weights and seed:
    :func:`vintage.training.mllib.holdout_frame`), models scored and the metric aggregated by Spark.

    The driver holds one model and one row of sums: the data set never comes to it. Built once per gate,
    so the candidate and the champion are scored on the very same rows.
    """

    def __init__(self, ctx: StepContext) -> None:
        self._ctx = ctx
        self._frame: Any = None

    def _holdout(self) -> Any:
        if self._frame is None:
            from vintage.compute.spark import session
            from vintage.training.mllib import holdout_frame, read_frame

            data = self._ctx.spec.data
            spark = session(self._ctx.spec.compute.spark, app_name="vintage-mllib")
            self._frame = holdout_frame(
                read_frame(spark, data), data.features, data.target, data.split.test_size, data.split.seed
            )
        return self._frame

    def score(self, name: str, version: int) -> float:
        """``name`` v``version``'s selection metric on the holdout (``rmse``, ``mae``, ``r2``, ``acc_0.5``,
        ``acc_1.0`` as in the pandas path).

        Raises:
            DataError: Spark cannot read the data.
            SparkError: the Spark job failed, or the holdout is empty.
            GateRefused: the metric is not finite (the model predicts NaN/infinity).
        """
        from vintage.errors import SparkError, VintageError, first_line
        from vintage.model.load import load_model_dir
        from vintage.scoring import PREDICTION
        from vintage.scoring.spark_scorers import choose_scorer, score_frame

        ctx = self._ctx
        model_dir = materialize_version(ctx, name, version)
        model = load_model_dir(model_dir)
        target = ctx.spec.data.target
        metric = ctx.spec.selection.metric
        try:
            from pyspark.sql import functions as sf

            scored = score_frame(self._holdout(), model, model_dir, choose_scorer("auto", model))
            err = sf.col(f"`{target}`") - sf.col(PREDICTION)
            row = scored.agg(
                sf.count(sf.lit(1)).alias("n"),
                sf.sum(err * err).alias("sse"),
                sf.sum(sf.abs(err)).alias("sae"),
                sf.var_pop(sf.col(f"`{target}`")).alias("var"),
                *(  # rows within T of the truth (acc_T), the same tolerance as the pandas path
                    sf.sum((sf.abs(err) <= sf.lit(t + ACCURACY_EPS)).cast("double")).alias(key)
                    for t, key in zip(ACCURACY_TOLERANCES, ACCURACY_METRICS, strict=True)
                ),
            ).collect()[0]
        except VintageError:
            raise
        except Exception as exc:
            raise SparkError(
                f"champion gate: scoring {name} v{version} on the Spark holdout failed: "
                f"{first_line(exc, 200)}",
                hint="--verbose shows the Spark error",
            ) from exc
        if not row["n"]:
            raise SparkError(
                "champion gate: the Spark holdout is empty",
                hint="raise data.split.test_size or use more data",
            )
        n = int(row["n"])
        scores = from_sums(n, float(row["sse"]), float(row["sae"]), float(row["var"]) * n)
        scores.update({key: float(row[key]) / n for key in ACCURACY_METRICS})
        score = scores[metric]
        if not math.isfinite(score):
            raise GateRefused(f"champion gate: {name} v{version}'s holdout {metric} is not finite ({score})")
        return score


def approval(ctx: StepContext) -> ApprovalOutput:
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
        return ApprovalOutput(decision="approved", by=actor, auto=True)
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
            return ApprovalOutput(
                decision="approved", by=last["actor"], time=last["time"], comment=last["comment"]
            )
        ctx.store.add_approval(
            ctx.run_id, ctx.stage.name, "expired", "vintage", "approval older than the ttl"
        )
        last = None
    if last is not None and last["decision"] == "rejected":
        raise ApprovalRejected(
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
