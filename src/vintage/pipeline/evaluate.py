"""The release's evaluation report: the candidate against the production champion on the same holdout.

The release step calls :func:`evaluation_report`. It scores both registered versions on the holdout rows
training used (same split and seed), renders the report (:mod:`vintage.evaluation.report`), writes it
under ``<state_dir>/reports/``, logs it as an artifact of the candidate's MLflow run and tags the
registered version with where it is. The release record gets the ``evaluation`` entry it returns.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from vintage.errors import PipelineError, VintageError, first_line

if TYPE_CHECKING:
    from vintage.pipeline.context import StepContext

REPORTS_DIR: Final = "reports"
"""Where the reports go, under the state directory."""
ARTIFACT_DIR: Final = "evaluation"
"""Where the report goes among the candidate run's artifacts."""
TAG_REPORT: Final = "vintage.evaluation_report"
"""The registered version's tag holding the report's artifact URI."""


def evaluation_report(ctx: StepContext, name: str, version: int, run_id: str | None) -> dict[str, Any] | None:
    """Make, store and link the report of ``name`` v``version`` (from MLflow run ``run_id``).

    Returns:
        The release record's ``evaluation`` entry: ``report`` (path relative to the state directory),
        ``artifact_uri``, ``rows``, ``candidate`` and ``champion`` metrics (``None``: no champion, or the
        candidate is the champion) and ``champion_version``; ``None`` for a Spark MLlib grid, whose
        holdout is Spark's (the champion gate scores it there).

    Raises:
        PipelineError: the models could not be scored or the report not drawn.
        RegistryError: a version could not be loaded, or the registry refused the artifact or the tag.
    """
    from vintage.config.models import is_mllib

    if any(is_mllib(e.class_path) for e in ctx.spec.estimators):
        ctx.say("evaluation report: not made for Spark MLlib grids (the champion gate scores with Spark)")
        return None
    try:
        report, champion = _render(ctx, name, version)
    except VintageError:
        raise
    except Exception as exc:
        raise PipelineError(
            f"the evaluation report of {name} v{version} failed: {exc.__class__.__name__}: {first_line(exc)}",
            hint="--verbose shows the error; `vintage resume` retries the release step",
        ) from exc
    relative = f"{REPORTS_DIR}/{ctx.run_id}.html"
    path = ctx.state_dir / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report.html, encoding="utf-8")
    artifact_uri = None
    if run_id:
        ctx.registry.log_artifact(run_id, path, ARTIFACT_DIR)
        artifact_uri = f"runs:/{run_id}/{ARTIFACT_DIR}/{path.name}"
        ctx.registry.tag_version(name, version, TAG_REPORT, artifact_uri)
    ctx.say(f"evaluation report: {path}" + (f" (vs production v{champion})" if champion else ""))
    return {
        "report": relative,
        "artifact_uri": artifact_uri,
        "rows": report.rows,
        "candidate": report.candidate,
        "champion": report.champion,
        "champion_version": champion,
    }


def _render(ctx: StepContext, name: str, version: int) -> tuple[Any, int | None]:
    from vintage.config.models import CLASSIFIER_METRICS
    from vintage.data import load_dataset
    from vintage.evaluation.report import Context, build_report

    spec = ctx.spec
    ds = load_dataset(spec.data)
    split = spec.data.split
    _, test = ds.split(split.test_size, split.seed, group_duplicates=split.group_duplicates)
    from vintage.pipeline.gates import CHAMPION_ALIAS

    champion = ctx.registry.alias_version(name, CHAMPION_ALIAS)
    if champion == version:
        champion = None  # the candidate serves production already: nothing to compare with
    candidate = _evaluated(ctx, name, version, test, f"candidate v{version}")
    champ = _evaluated(ctx, name, champion, test, f"champion v{champion}") if champion else None
    context = Context(
        f"{name} v{version}: evaluation report",
        {
            "pipeline run": ctx.run_id,
            "candidate": f"{name} v{version}",
            "champion (alias production)": f"{name} v{champion}" if champion else "none",
            "data": f"{ds.source} (digest {ds.digest})",
            "holdout": f"test_size {split.test_size}, seed {split.seed}, "
            + ("exact duplicates kept on one side" if split.group_duplicates else "rows split one by one")
            + (" (the candidate was refit on all rows, these included)" if _refit(ctx) else ""),
            "selection metric": spec.selection.selection_key,
        },
    )
    classifier = spec.selection.metric in CLASSIFIER_METRICS  # the spec refuses a grid that mixes them
    report = build_report(test[ds.target].to_numpy(), candidate, champ, context, classifier=classifier)
    return report, champion


def _refit(ctx: StepContext) -> bool:
    """True when this run's candidate is the chosen point refit on every row (``training.refit``)."""
    from vintage.pipeline.outputs import TrainOutput

    trained = ctx.result(TrainOutput)
    return trained is not None and trained.refit is not None


def _evaluated(ctx: StepContext, name: str, version: int, test: Any, label: str) -> Any:
    """A registered version's holdout predictions, with its coefficients when it is a plain linear
    model (a tree's importances are in its training run's ``evaluation/`` artifacts)."""
    from vintage.evaluation.plots import Importance
    from vintage.evaluation.report import Evaluated

    model = ctx.registry.load_model(name, version, ctx.state_dir / "models")
    columns = list(model.info.columns)
    pred = model.predict(test[columns].to_numpy(dtype="float64"))
    linear = getattr(model, "linear", None)
    importance = None
    if linear is not None and len(linear.coef) == len(columns):
        importance = Importance("coefficients", tuple(columns), tuple(float(c) for c in linear.coef))
    return Evaluated(label, pred, importance)
