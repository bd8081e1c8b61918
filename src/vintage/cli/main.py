"""Entry point: the typer app, global options and the one place that turns errors into exit codes."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from vintage import __version__
from vintage.cli import (
    audit_cmd,
    ci_cmd,
    config_cmd,
    dashboard,
    databricks_cmd,
    deploy_cmd,
    image_cmd,
    init_cmd,
    listing,
    monitor,
    pipeline_cmd,
    score,
    secrets_cmd,
    serve,
    train,
    ui,
)
from vintage.cli.state import STATE
from vintage.errors import EXIT_RUNTIME, VintageError, first_line

app = typer.Typer(
    name="vintage",
    help="From a training grid to a guarded production endpoint, on MLflow.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command("init")(init_cmd.init)
app.command("train")(train.train)
app.command("run")(pipeline_cmd.run)
app.command("resume")(pipeline_cmd.resume)
app.command("stage")(pipeline_cmd.stage)
app.command("approve")(pipeline_cmd.approve)
app.command("reject")(pipeline_cmd.reject)
app.command("status")(pipeline_cmd.status)
app.command("start")(pipeline_cmd.start)
app.command("stop")(pipeline_cmd.stop)
app.command("rollback")(pipeline_cmd.rollback)
pipeline_cmd.runs_app.command("grid")(listing.runs)
app.add_typer(pipeline_cmd.runs_app, name="runs")
app.add_typer(pipeline_cmd.release_app, name="release")
app.command("models")(listing.models)
app.command("ui")(ui.ui)
app.command("dashboard")(dashboard.dashboard)
app.command("serve")(serve.serve)
app.command("score")(score.score)
app.command("audit")(audit_cmd.audit)
app.command("monitor")(monitor.monitor)
app.add_typer(config_cmd.app, name="config")
app.add_typer(secrets_cmd.app, name="secrets")
app.add_typer(databricks_cmd.app, name="databricks")
app.add_typer(image_cmd.app, name="image")
app.add_typer(deploy_cmd.app, name="deploy")
app.add_typer(ci_cmd.app, name="ci")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"vintage {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Workload spec (default: $VINTAGE_CONFIG or ./vintage.yaml)."),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks and debug logs.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """vintage: train a grid, pick the best run, register it; stage, approve and serve it."""
    STATE.config = config
    STATE.verbose = verbose
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if verbose:
        logging.getLogger("vintage").setLevel(logging.DEBUG)
    # databricks-sdk warns on stderr when its host-metadata probe fails; our own error says more.
    logging.getLogger("databricks.sdk").setLevel(logging.DEBUG if verbose else logging.ERROR)
    logging.getLogger("filelock").setLevel(logging.WARNING)  # lock chatter drowns --verbose output
    from vintage.redact import install_logging_filter

    install_logging_filter()


def run(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app, render VintageError as headline + hint, exit with its code.

    Always ends with ``SystemExit`` (tests catch it to read the exit code); from the command line
    (``argv`` None) the process then ends without tearing its interpreter down (:func:`_exit_now`).
    """
    try:
        _run(argv)
    except SystemExit as done:
        if argv is None:
            _exit_now(done.code)
        raise


def _exit_now(code: object) -> None:
    """End the process as Python would after ``SystemExit(code)``, minus the teardown of every imported
    module (with MLflow, scikit-learn and pandas loaded, 0.6-1.2 s of CPU after the command is done, on
    every command). ``atexit`` handlers run (logging's flush, temporary directories, the training
    forkserver), stdout and stderr are flushed, then ``os._exit``. Returns without doing anything while
    another non-daemon thread runs: Python's own exit waits for it."""
    import atexit
    import os
    import threading

    if any(t is not threading.main_thread() and not t.daemon for t in threading.enumerate()):
        return
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # SystemExit("text"): Python prints the text and exits 1
        sys.stderr.write(f"{code}\n")
        status = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (vintage ... | head): Python exits 120 then
            status = status or 120
    os._exit(status)


def _run(argv: list[str] | None) -> None:
    try:
        app(args=argv, prog_name="vintage")
    except VintageError as exc:
        _render_error(exc)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("vintage: interrupted\n")
        sys.exit(130)
    except ModuleNotFoundError as exc:
        # An optional part imported where no require() foresaw it: the extra to install, not a traceback.
        from vintage.extras import missing_extra

        missing = missing_extra(exc, _command(argv))
        if missing is None:
            _unexpected(exc, argv)
        else:
            _render_error(missing)
            sys.exit(missing.exit_code)
    except Exception as exc:
        _unexpected(exc, argv)


def _command(argv: list[str] | None) -> str:
    """``vintage COMMAND`` for a headline: the first argument that is neither an option nor the value of
    the global ``-c/--config``."""
    args = iter(sys.argv[1:] if argv is None else argv)
    for arg in args:
        if arg in ("-c", "--config"):
            next(args, None)
        elif not arg.startswith("-"):
            return f"vintage {arg}"
    return "vintage"


def _unexpected(exc: BaseException, argv: list[str] | None) -> NoReturn:
    """A bug or an untranslated library error: one line + the traceback log, exit 1."""
    import traceback

    from vintage.redact import redact

    text = redact("".join(traceback.format_exception(exc)))
    log = _log_traceback(text, sys.argv[1:] if argv is None else argv)
    if STATE.verbose:
        sys.stderr.write(text)
    headline = f"error: unexpected {exc.__class__.__name__}: {first_line(exc)}"
    if log is not None:
        sys.stderr.write(f"{headline} (full traceback: {log})\n")
    else:
        sys.stderr.write(f"{headline}\n")
        if not STATE.verbose:
            sys.stderr.write("Run with --verbose to see the full traceback.\n")
    sys.exit(EXIT_RUNTIME)


ERROR_LOG = Path("logs") / "errors.log"
_LOG_LIMIT = 1_000_000  # bytes; a bigger log is moved to errors.log.1 (one old generation kept)
_SECRET_OPTIONS = ("token", "password", "secret", "value")  # option names ending in one of these


def _log_traceback(text: str, argv: list[str]) -> Path | None:
    """Append ``text`` (a redacted traceback) with the time and the command line to
    ``<state_dir>/logs/errors.log`` (0600). Returns the path to show (relative when the state directory
    is), or None when the state directory is unknown or cannot be written.
    """
    import os
    from datetime import UTC, datetime

    try:
        from vintage.config import load_settings

        path = load_settings(STATE.config).state_dir / ERROR_LOG
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if path.exists() and path.stat().st_size > _LOG_LIMIT:
            path.replace(path.with_name(path.name + ".1"))
        entry = (
            f"--- {datetime.now(UTC).isoformat(timespec='seconds')} vintage {__version__} pid {os.getpid()}\n"
            f"command: vintage {' '.join(_safe_args(argv))}\n{text.rstrip()}\n\n"
        )
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, entry.encode("utf-8", "replace"))
        finally:
            os.close(fd)
    except Exception:  # the log is a help, never a second error
        return None
    return path


def _safe_args(argv: list[str]) -> list[str]:
    """The command line for the log: registered secrets redacted, URI credentials dropped, and the value
    of any ``--*token``/``--*password``/``--*secret``/``--*value`` option replaced."""
    from vintage.redact import REDACTED, redact
    from vintage.tracking import redact_uri

    safe: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            safe.append(REDACTED)
            hide_next = False
            continue
        name, eq, _ = arg.partition("=")
        if arg.startswith("--") and name.lower().endswith(_SECRET_OPTIONS):
            if eq:
                safe.append(f"{name}={REDACTED}")
            else:
                safe.append(arg)
                hide_next = True
            continue
        safe.append(redact(redact_uri(arg)) if "://" in arg else redact(arg))
    return safe


def _render_error(exc: VintageError) -> None:
    from rich.markup import escape

    from vintage.cli.state import err

    console = err()
    from vintage.errors import EXIT_DRIFT, EXIT_WAITING_APPROVAL

    labels = {EXIT_WAITING_APPROVAL: "[bold yellow]waiting:[/]", EXIT_DRIFT: "[bold yellow]drift:[/]"}
    label = labels.get(exc.exit_code, "[bold red]error:[/]")
    console.print(f"{label} {escape(exc.headline)}")
    for line in exc.details[:20]:
        console.print(f"  - {escape(line)}")
    if exc.hint:
        console.print(f"[dim]hint: {escape(exc.hint)}[/]")
    if STATE.verbose:
        import traceback

        from vintage.redact import redact

        console.print(escape(redact("".join(traceback.format_exception(exc)))))
    elif exc.__cause__ is not None:
        console.print("[dim]Run with --verbose to see the full exception.[/]")
