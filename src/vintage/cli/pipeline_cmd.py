"""``vintage run / resume / stage / approve / reject / status / stop / rollback``, ``vintage runs
list|show|grid`` and ``vintage release show``: the pipeline from data to a guarded production endpoint."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from vintage.cli import complete, state
from vintage.cli.signals import stop_on_signals

if TYPE_CHECKING:
    from vintage.pipeline.state import RunState

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
AutoApprove = Annotated[
    bool,
    typer.Option(
        "--auto-approve", help="Approve every approval gate of this run without a human (demos only)."
    ),
]


def _say(line: str) -> None:
    state.err().print(line, markup=False, highlight=False)


def _runner() -> Any:
    return state.project().runner(say=_say)


def _finish(run: RunState, json_out: bool) -> None:
    if json_out:
        state.print_json(_run_json(run))
        return
    _timeline(run)
    if run.status == "succeeded":
        _endpoints()


def _execute(runner: Any, run_id: str, only: str | None, json_out: bool, resume: bool = False) -> None:
    from vintage.errors import VintageError

    with stop_on_signals() as stop:
        runner.stop = stop
        try:
            run = runner.resume(run_id) if resume else runner.execute(run_id, only)
        except VintageError:
            if json_out:
                state.print_json(_run_json(runner.store.run(run_id)))
            raise
    _finish(run, json_out)


def run(
    auto_approve: AutoApprove = False,
    force_promote: Annotated[
        bool, typer.Option("--force-promote", help="Pass the champion gate even if the candidate is worse.")
    ] = False,
    reason: Annotated[str | None, typer.Option("--reason", help="Why --force-promote (recorded).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Run the whole pipeline: build -> staging -> (approval) -> production.

    Checks first that every environment served behind API keys has its key (else exit 1, nothing started).
    Exit codes: 0 done; 1 a step failed or a gate refused; 2 bad config; 3 waiting for approval.
    """
    from vintage.errors import ConfigError

    if force_promote and not (reason and reason.strip()):
        raise ConfigError(
            "--force-promote needs --reason '...' (it is recorded in the release and audit trail)"
        )
    from vintage.pipeline.ops import check_serving_keys

    runner = _runner()
    check_serving_keys(runner.spec)  # a missing production key fails now, not after training and staging
    if auto_approve:
        state.err().print(
            "[bold yellow]WARNING: --auto-approve: approval gates pass without a human review (recorded).[/]"
        )
    options: dict[str, Any] = {"auto_approve": auto_approve}
    if force_promote:
        options["force_promote_reason"] = reason
    run_id = runner.create(**options)
    _say(f"run {run_id}")
    _execute(runner, run_id, None, json_out)


def resume(
    run_id: Annotated[str, typer.Argument(help="The run to continue.")],
    auto_approve: AutoApprove = False,
    json_out: JsonOpt = False,
) -> None:
    """Re-run the unfinished or failed stages of a run (succeeded steps are not repeated)."""
    runner = _runner()
    if auto_approve:
        runner.store.set_option(run_id, "auto_approve", True)
    _execute(runner, run_id, None, json_out, resume=True)


def stage(
    name: Annotated[
        str,
        typer.Argument(
            help="Stage to run (e.g. build, staging, production).", autocompletion=complete.stages
        ),
    ],
    run_id: Annotated[
        str, typer.Option("--run-id", help="Run to attach to (created if new, e.g. a CI build id).")
    ],
    auto_approve: AutoApprove = False,
    json_out: JsonOpt = False,
) -> None:
    """Run one stage of a run: what a CI job calls (`vintage stage build --run-id $BUILD_ID`)."""
    runner = _runner()
    state.project().attach_run(runner, name, run_id, auto_approve=auto_approve)
    _execute(runner, run_id, name, json_out)


def approve(
    run_id: Annotated[str, typer.Argument(help="Run waiting for approval.")],
    stage_name: Annotated[
        str,
        typer.Argument(
            metavar="STAGE", help="The stage to approve (e.g. production).", autocompletion=complete.stages
        ),
    ],
    comment: Annotated[str, typer.Option("--comment", "-m", help="Why (recorded).")] = "",
    as_user: Annotated[
        str | None, typer.Option("--as", help="Approve as this user (default: OS user).")
    ] = None,
) -> None:
    """Approve a stage waiting at its approval gate; then `vintage resume RUN_ID` deploys it."""
    _decide(run_id, stage_name, "approved", comment, as_user)


def reject(
    run_id: Annotated[str, typer.Argument(help="Run waiting for approval.")],
    stage_name: Annotated[
        str, typer.Argument(metavar="STAGE", help="The stage to reject.", autocompletion=complete.stages)
    ],
    comment: Annotated[str, typer.Option("--comment", "-m", help="Why (recorded).")] = "",
    as_user: Annotated[str | None, typer.Option("--as", help="Reject as this user.")] = None,
) -> None:
    """Reject a stage waiting at its approval gate: the run ends, nothing is deployed."""
    _decide(run_id, stage_name, "rejected", comment, as_user)


def _decide(run_id: str, stage_name: str, decision: str, comment: str, as_user: str | None) -> None:
    from vintage.pipeline.ops import decide

    evidence = decide(state.load(), run_id, stage_name, decision, actor=as_user, comment=comment)
    console = state.err()
    for key, value in evidence.items():
        console.print(f"  {key}: {value}", markup=False)
    console.print(f"{stage_name} of run {run_id} {decision}")
    if decision == "approved":
        console.print(f"next: vintage resume {run_id}")


def status(json_out: JsonOpt = False) -> None:
    """What each environment serves: version, digest, URL, pid (or container and image), health, since.

    An environment whose server died without being stopped shows as `crashed` (start it again with
    `vintage start ENV`). Exits 1 when one has crashed, or serves another model than the one deployed to it
    (its digest differs).
    """
    from dataclasses import asdict

    from rich.markup import escape
    from rich.table import Table

    from vintage.errors import VintageError
    from vintage.model.digest import short
    from vintage.pipeline.ops import status as env_status

    failed: dict[str, VintageError] = {}
    crashed: dict[str, str] = {}
    found = env_status(state.load(), errors=failed, crashed=crashed)
    tampered = [name for name, dep in found.items() if dep is not None and dep.tampered]
    if json_out:
        state.print_json(
            {
                k: {**asdict(v), "tampered": v.tampered}
                if v
                else ({"crashed": crashed[k]} if k in crashed else None)
                for k, v in found.items()
            }
        )
    else:
        table = Table(title="Environments", title_justify="left")
        for col in ("environment", "model", "digest", "url", "pid / container", "health", "since"):
            table.add_column(col)
        for name, dep in found.items():
            if dep is None:
                health = (
                    "[red]unknown[/]"
                    if name in failed
                    else "[bold red]crashed[/]"
                    if name in crashed
                    else "stopped"
                )
                table.add_row(name, "-", "-", "-", "-", health, "-")
                continue
            health = "[green]ready[/]" if dep.healthy else "[red]not answering[/]"
            digest = short(dep.digest)
            if dep.tampered:
                health = "[bold red]SERVES ANOTHER MODEL[/]"
                digest = f"[bold red]{short(dep.served_digest)}[/] (deployed {digest})"
            process = str(dep.pid or "-")
            if dep.replicas is not None:
                image = short(dep.image_digest) if dep.image_digest else dep.image
                process = f"{dep.ready_replicas}/{dep.replicas} pods ready (image {image})"
            elif dep.container:
                process = (
                    f"{dep.container} (image {short(dep.image_digest) if dep.image_digest else dep.image})"
                )
            table.add_row(
                name,
                f"{dep.model_name} v{dep.version}",
                digest,
                dep.url,
                process,
                health,
                dep.since,
            )
        state.out().print(table)
    for name in tampered:
        dep = found[name]
        assert dep is not None
        state.err().print(
            f"[bold red]error:[/] {name} serves {short(dep.served_digest)}, not the deployed "
            f"{dep.model_name} v{dep.version} ({short(dep.digest)}); redeploy it: vintage run (or vintage "
            f"rollback {name}), and check the audit trail: vintage audit --action serve."
        )
    for name, reason in crashed.items():
        state.err().print(f"[bold red]error:[/] {escape(f'{name} has crashed: {reason}')}", highlight=False)
        state.err().print(f"  hint: serve it again: vintage start {name}", markup=False)
    for name, exc in failed.items():
        state.err().print(f"[bold red]error:[/] {escape(f'{name}: {exc.headline}')}", highlight=False)
        if exc.hint:
            state.err().print(f"  hint: {exc.hint}", markup=False)
    if tampered or failed or crashed:
        raise typer.Exit(1)


def start(
    environment: Annotated[
        str, typer.Argument(help="Environment to start.", autocompletion=complete.environments)
    ],
) -> None:
    """Serve again what an environment served last (after a crash, `vintage stop` or a restart of the
    machine): the same model directory, checked unchanged, recorded in the audit trail like any deploy.

    Exit codes: 0 serving (or already was); 1 nothing was ever deployed there, or the model or server
    failed; 2 unknown environment.
    """
    from vintage.model.digest import short
    from vintage.pipeline.ops import start as start_env

    outcome, now = start_env(state.load(), environment)
    said = f"{environment}: {now.model_name} v{now.version} ({short(now.digest)}) at {now.url}"
    state.err().print(said + (" was already serving" if outcome is None else " started"), markup=False)


def stop(
    environment: Annotated[
        str, typer.Argument(help="Environment to stop.", autocompletion=complete.environments)
    ],
) -> None:
    """Stop an environment's server (graceful drain)."""
    from vintage.pipeline.ops import stop as stop_env

    stopped = stop_env(state.load(), environment)
    state.err().print(f"{environment}: " + ("stopped" if stopped else "was not running"))


def rollback(
    environment: Annotated[
        str, typer.Argument(help="Environment to roll back.", autocompletion=complete.environments)
    ],
) -> None:
    """Serve the environment's previous version again and move its alias back (recorded)."""
    from vintage.pipeline.ops import rollback as do_rollback

    current, previous = do_rollback(state.load(), environment)
    state.err().print(f"{environment}: rolled back from v{current} to v{previous}")


# ---------------------------------------------------------------------------------------- runs group

runs_app = typer.Typer(help="Pipeline runs (list, show) and MLflow grid runs (grid).", no_args_is_help=True)


@runs_app.command("list")
def runs_list(
    limit: Annotated[int, typer.Option("--limit", "-n", min=1)] = 20, json_out: JsonOpt = False
) -> None:
    """Pipeline runs, newest first."""
    from rich.table import Table

    from vintage.pipeline.state import StateStore

    found = StateStore(state.settings().state_dir.resolve()).runs(limit)
    if json_out:
        state.print_json([_run_json(r) for r in found])
        return
    if not found:
        state.out().print("no pipeline runs yet (`vintage run`)")
        return
    table = Table(title="Pipeline runs", title_justify="left")
    for col in ("run", "created", "actor", "status", "stages", "reason"):
        table.add_column(col)
    for r in found:
        stages = " ".join(f"{s.name}:{s.status}" for s in r.stages)
        table.add_row(r.id, r.created[:19], r.actor, r.shown_status, stages, r.reason[:60])
    state.out().print(table)


@runs_app.command("show")
def runs_show(run_id: Annotated[str, typer.Argument(help="Run id.")], json_out: JsonOpt = False) -> None:
    """One run as a readable timeline: stages, steps, times, outcomes, logs."""
    from vintage.pipeline.state import StateStore

    found = StateStore(state.settings().state_dir.resolve()).run(run_id)
    if json_out:
        state.print_json(_run_json(found))
        return
    _timeline(found, logs=True)


def _run_json(r: RunState) -> dict[str, Any]:
    from dataclasses import asdict

    data = asdict(r)
    data["status"] = r.shown_status
    return data


def _timeline(r: RunState, logs: bool = False) -> None:
    console = state.out()
    console.print(
        f"run {r.id}  {r.shown_status}  started {r.created[:19]} by {r.actor}"
        + (f"  ({r.reason})" if r.reason else ""),
        markup=False,
    )
    for s in r.stages:
        where = f" [{s.environment}]" if s.environment else ""
        console.print(f"  {s.name}{where}: {s.status}" + (f" - {s.reason}" if s.reason else ""), markup=False)
        for stp in s.steps:
            secs = stp.output.get("seconds")
            took = f" {secs:.2f}s" if isinstance(secs, int | float) else ""
            console.print(f"    {stp.name:<14} {stp.status}{took}", markup=False)
            if logs and stp.log:
                for line in stp.log.splitlines():
                    console.print(f"      | {line}", markup=False)


def _endpoints() -> None:
    import json

    from vintage.data import load_dataset
    from vintage.pipeline.ops import status as env_status

    spec = state.load()
    console = state.out()
    row = load_dataset(spec.data).head(1)[list(spec.data.features)]  # never the whole data set
    body = json.dumps({"dataframe_split": json.loads(row.to_json(orient="split", index=False))})
    for name, dep in env_status(spec, errors={}).items():
        if dep is None:
            continue
        console.print(f"{name}: {dep.model_name} v{dep.version} at {dep.url}", markup=False)
        scope = spec.key_scope(name)
        auth = ""
        if scope:
            get_key = shlex.join([*vintage_command(), "secrets", "get", "-s", scope, "-k", "primary"])
            auth = f' -H "Authorization: Bearer $({get_key})"'
        console.print(
            f"  curl -s {shlex.quote(dep.url + '/invocations')} -H 'Content-Type: application/json'{auth}"
            f" -d {shlex.quote(body)}",
            markup=False,
            soft_wrap=True,
        )


def vintage_command() -> list[str]:
    """This very vintage as a command that works without an activated venv: the console script next to
    the running interpreter (absolute), else ``python -m vintage``; with ``--config`` when one was given."""
    script = Path(sys.executable).with_name("vintage")  # not resolved: a venv's python is a symlink
    argv = [str(script)] if os.access(script, os.X_OK) else [sys.executable, "-m", "vintage"]
    if state.STATE.config is not None:
        argv += ["--config", str(state.STATE.config.resolve())]
    return argv


# -------------------------------------------------------------------------------------- release group

release_app = typer.Typer(
    help="Release records: what a run released, with its evidence.", no_args_is_help=True
)


@release_app.command("show")
def release_show(
    run_id: Annotated[
        str | None, typer.Argument(help="Run id (default: the newest run with a release).")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """The release record: model, version, metrics, champion comparison, digests, approvals, deployments
    (--json: the record as JSON)."""
    from vintage.errors import PipelineError
    from vintage.pipeline.state import StateStore

    state_dir = state.settings().state_dir.resolve()
    store = StateStore(state_dir)
    record = None
    if run_id is None:
        for r in store.runs(200):
            record = store.release(r.id)
            if record:
                break
    else:
        record = store.release(run_id)
    if not record:
        raise PipelineError(
            "no release record" + (f" for run {run_id}" if run_id else " yet"),
            hint="the build stage's release step writes it (`vintage run`)",
        )
    if json_out:
        state.print_json(record)
        return
    from vintage.cli.render import release_lines

    console = state.out()
    for line in release_lines(record, state_dir):
        console.print(line, markup=False, soft_wrap=True)
