"""``vintage train``: the build stage (validate data -> train grid -> select -> register)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from vintage.cli import render, state
from vintage.cli.signals import stop_on_signals

if TYPE_CHECKING:
    from vintage.config import Spec
    from vintage.pipeline import BuildResult
    from vintage.pipeline.backends import StageBackend
    from vintage.training import PointRun, TrainingReport


def train(
    n_jobs: Annotated[int | None, typer.Option("--n-jobs", "-j", min=1, help="Parallel processes.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the outcome as JSON.")] = False,
    engine: Annotated[
        str | None,
        typer.Option("--engine", help="local | spark | databricks (overrides compute.engine)."),
    ] = None,
    master: Annotated[
        str | None,
        typer.Option("--master", help="Spark master: local[N], spark://host:port or sc://host:port."),
    ] = None,
) -> None:
    """Train the grid (one MLflow run per point), pick the best run under the threshold, register it
    as a new version with alias `candidate`.

    With compute.engine databricks (or --engine databricks) the pipeline's training stage runs as a
    one-time Databricks job run on a job cluster (docs/databricks.md).

    Exit codes: 0 registered; 1 runtime failure (bad data, no run meets the threshold, all points
    failed, tracking store unreachable, the Databricks run failed); 2 bad config or options; 130
    interrupted.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from vintage.errors import SelectionError
    from vintage.pipeline.backends import for_training
    from vintage.training import executor

    early = n_jobs != 1 and engine in (None, "local") and master is None
    if early:
        executor.start_forkserver_early()  # its imports overlap the config's loading (~1.3 s each)
    project = state.project().with_compute(engine, master)
    spec = project.spec
    if early and spec.compute.engine != "local":
        executor.end_forkserver()  # the grid trains on Spark or Databricks: no worker of ours will need it
    backend = for_training(spec)
    if not backend.runs_here:
        _train_elsewhere(spec, backend, n_jobs, json_out)
        return
    console, errc = state.out(), state.err()
    trained: list[TrainingReport] = []
    progress = Progress(
        TextColumn("training grid"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=errc,
        transient=True,
        disable=json_out or not errc.is_terminal,  # in CI logs a progress bar is only noise
    )
    with progress:
        task = progress.add_task("", total=spec.grid_size())

        def on_point(run: PointRun) -> None:
            progress.advance(task)
            progress.update(task, description=f"{run.name}: {run.status.lower()}")

        try:
            with stop_on_signals() as stop:
                result = project.train(
                    n_jobs=n_jobs,
                    on_point=on_point,
                    on_trained=trained.append,
                    stop=stop,
                )
        except SelectionError:
            if trained and not json_out:
                console.print(render.runs_table(trained[0].runs, spec.selection.selection_key))
            elif trained:
                state.print_json({"training": render.report_json(trained[0]), "registered": None})
            raise
    if json_out:
        state.print_json(_json(result))
    else:
        _show(result)


def _json(result: BuildResult) -> dict[str, object]:
    return {
        "training": render.report_json(result.report),
        "tracking_uri": result.tracking_uri,
        "selection_metric": result.selection_key,
        "selected_run_id": result.selected.run_id,
        "refit_run_id": result.refit.run_id if result.refit else None,
        "registered": render.version_json(result.version),
    }


def _show(result: BuildResult) -> None:
    console = state.out()
    rep, sel, ver = result.report, result.selected, result.version
    console.print(
        f"data: {rep.data_source} (digest {rep.data_digest}); tracking: {result.tracking_uri}; "
        f"{len(rep.runs)} runs in {rep.n_jobs} process{'es' if rep.n_jobs > 1 else ''}"
    )
    console.print(render.runs_table(rep.runs, result.selection_key, sel.run_id))
    if rep.failed:
        names = ", ".join(f"{r.name} ({r.error})" for r in rep.failed)
        console.print(f"[yellow]warning:[/] {len(rep.failed)} run(s) failed: {names}")
    key = result.selection_key
    metric = key.removeprefix("cv_")
    holdout = f", holdout {metric} = {sel.metrics[metric]:.4f}" if key != metric else ""
    console.print(f"chosen: {sel.name} (run {sel.run_id}), {key} = {sel.metrics[key]:.4f}{holdout}")
    if result.refit:
        console.print(
            f"refit on all rows: run {result.refit.run_id} (its model is the one registered; "
            "the figures above are the chosen run's)"
        )
    if ver.reused:
        console.print(
            f"registered: {ver.name} version {ver.version} already holds this model (same run or same "
            f"estimator, params and data); no new version. alias: {', '.join(ver.aliases)}"
        )
    else:
        console.print(f"registered: {ver.name} version {ver.version}, alias: {', '.join(ver.aliases)}")


def _train_elsewhere(spec: Spec, backend: StageBackend, n_jobs: int | None, json_out: bool) -> None:
    """Submit the training stage to its stage backend (a Databricks job run); show what it registered."""
    import secrets as pyrandom
    from datetime import UTC, datetime

    from vintage.config import resolve_config_path
    from vintage.pipeline.backends import RemoteBackend

    errc = state.err()

    def say(line: str) -> None:
        errc.print(line, markup=False, highlight=False)

    run_id = f"train-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}-{pyrandom.token_hex(3)}"
    reader = state.secret_reader(f"cli:{backend.NAME}", spec=spec)
    config_text = resolve_config_path(state.STATE.config).read_text(encoding="utf-8")
    assert isinstance(backend, RemoteBackend), backend.NAME
    with stop_on_signals() as stop:
        outcome = backend.submit_build(
            spec, run_id=run_id, config_text=config_text, secrets=reader, say=say, stop=stop, n_jobs=n_jobs
        )
    job = outcome.job
    if json_out:
        state.print_json(
            {
                "engine": backend.NAME,
                backend.NAME: job,
                "pipeline_run_id": run_id,
                "tracking_uri": outcome.tracking_uri,
                "selection_metric": outcome.selection_key,
                "selected_run_id": outcome.selected["run_id"],
                "selected": outcome.selected,
                "runs": outcome.runs,
                "failed": outcome.failed,
                "registered": render.version_json(outcome.version),
            }
        )
        return
    console = state.out()
    sel, ver, key = outcome.selected, outcome.version, outcome.selection_key
    console.print(
        f"{outcome.where} trained {outcome.runs} run(s) ({outcome.failed} failed) with engine "
        f"{outcome.engine or '?'}; tracking: {outcome.tracking_uri}",
        markup=False,
    )
    value = sel["metrics"].get(key, float("nan"))
    console.print(f"chosen: {sel['name']} (run {sel['run_id']}), {key} = {value:.4f}", markup=False)
    if ver.reused:
        console.print(
            f"registered: {ver.name} version {ver.version} already holds this model; no new version. "
            f"alias: {', '.join(ver.aliases)}"
        )
    else:
        console.print(f"registered: {ver.name} version {ver.version}, alias: {', '.join(ver.aliases)}")
