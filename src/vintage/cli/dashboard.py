"""``vintage dashboard``: the web dashboard on 127.0.0.1 (environments, runs, releases, approvals, audit
trail, drift), until Ctrl-C."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Annotated

import typer

from vintage.cli import state

if TYPE_CHECKING:
    from vintage.config import Spec

DEFAULT_PORT = 8090
MLFLOW_UI = "http://127.0.0.1:5000"  # `vintage ui`'s default address
NETWORK_FLAG = "--allow-network-access"


def dashboard(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = DEFAULT_PORT,
    host: Annotated[str, typer.Option(help="Interface to bind (loopback by default).")] = "127.0.0.1",
    mlflow_url: Annotated[
        str | None,
        typer.Option(
            help="Base URL of the MLflow UI the pages link to (default: the tracking server's when it is "
            f"one, else `vintage ui`'s {MLFLOW_UI}).",
        ),
    ] = None,
    allow_network_access: Annotated[
        bool,
        typer.Option(
            NETWORK_FLAG,
            help="Let the dashboard listen on a non-loopback --host: anyone reaching it can read every page "
            "(decisions still need the operator token).",
        ),
    ] = False,
) -> None:
    """Serve the dashboard. Approve/reject in its pages needs the operator token it writes at start
    (0600, under the state directory; removed when it stops)."""
    from vintage.audit import current_actor
    from vintage.dashboard.guard import is_loopback, issue, revoke
    from vintage.errors import ConfigError
    from vintage.extras import require

    require("dashboard", "vintage dashboard")
    if not is_loopback(host) and not allow_network_access:
        raise ConfigError(
            f"refusing to serve the dashboard on {host}: anyone who can reach that address could read the "
            "pipeline state and the audit trail",
            hint=f"bind 127.0.0.1 (and tunnel to it), or pass {NETWORK_FLAG} if this is meant",
        )
    spec = state.load()
    base = (mlflow_url or _tracking_ui(spec) or MLFLOW_UI).rstrip("/")
    import uvicorn

    from vintage.dashboard.app import Lookup, create_app
    from vintage.fsutil import shown_path

    token = issue(spec.state_dir.resolve(), current_actor())
    app = create_app(
        spec,
        token,
        host=host,
        port=port,
        mlflow_base=base,
        experiment_id=Lookup(lambda: _experiment_id(spec)),
    )
    console = state.err()
    shown = f"[{host}]" if ":" in host else host
    console.print(f"dashboard on http://{shown}:{port} (Ctrl-C to stop)", markup=False)
    assert token.path is not None
    console.print(
        f"operator token for approve/reject: cat {shown_path(token.path)} (valid until the dashboard stops)",
        markup=False,
        soft_wrap=True,
    )
    try:
        uvicorn.run(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            proxy_headers=False,  # no X-Forwarded-* rewriting of who asked
            server_header=False,
            timeout_graceful_shutdown=5,
        )
    finally:
        revoke(token)


def _tracking_ui(spec: Spec) -> str | None:
    """The tracking server's own address when the tracking URI is an HTTP server (it serves the UI)."""
    from vintage.tracking import redact_uri

    uri = os.environ.get("MLFLOW_TRACKING_URI") or spec.tracking_uri or ""
    if uri.startswith(("http://", "https://")) and "${secret:" not in uri:
        return redact_uri(uri)
    return None


def _experiment_id(spec: Spec) -> str | None:
    """The experiment's MLflow id, ``None`` while it does not exist. The embedded store is read directly,
    read-only (the dashboard never creates or migrates a tracking store); a server is asked through
    MLflow."""
    from vintage.tracking import open_session, resolve_target

    reader = state.secret_reader("cli:dashboard", spec=spec)
    target = resolve_target(spec, resolve=reader.resolve)
    if target.store_path is not None:
        if not target.store_path.exists():
            return None
        from vintage.fsutil import connect_readonly

        conn = connect_readonly(target.store_path, timeout_s=5)
        try:
            row = conn.execute(
                "SELECT experiment_id FROM experiments WHERE name = ? AND lifecycle_stage = 'active'",
                (spec.experiment,),
            ).fetchone()
        finally:
            conn.close()
        return str(row[0]) if row else None
    return open_session(spec, create_experiment=False, resolve=reader.resolve).experiment_id
