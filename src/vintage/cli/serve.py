"""``vintage serve``: score a model over HTTP on 127.0.0.1."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from vintage.cli import complete, state
from vintage.cli.models_ref import local_model_dir


def serve(
    model: Annotated[
        str,
        typer.Option(
            "--model",
            "-m",
            help="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/model, a version number of "
            "model_name, or a local MLflow model directory.",
        ),
    ] = "candidate",
    host: Annotated[str, typer.Option(help="Interface to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8080,
    api_key_file: Annotated[
        Path | None, typer.Option(help="File with the primary (and secondary) API key, mode 0600.")
    ] = None,
    api_key_scope: Annotated[
        str | None,
        typer.Option(
            help="Secret scope holding the API keys `primary` (and `secondary`), e.g. production/serving."
        ),
    ] = None,
    environment: Annotated[
        str | None,
        typer.Option(
            "--environment",
            "-e",
            help="Environment this server is (reads only its own secret scopes). production always requires "
            "API keys: by default from the scope production/serving.",
            autocompletion=complete.environments,
        ),
    ] = None,
    max_body_mb: Annotated[float, typer.Option(min=0.001, help="Largest request body in MiB.")] = 10.0,
    max_rows: Annotated[int, typer.Option(min=1, help="Most rows in one request.")] = 100_000,
    timeout: Annotated[
        float, typer.Option(min=0.01, help="Prediction timeout in seconds (504 after).")
    ] = 10.0,
    workers: Annotated[int, typer.Option(min=1, help="Server processes sharing the port.")] = 1,
    public_metadata: Annotated[
        bool,
        typer.Option(
            help="Serve /version, /metrics and /openapi.json without the API key (probes always are)."
        ),
    ] = False,
    allow_unauthenticated_network_access: Annotated[
        bool,
        typer.Option(
            "--allow-unauthenticated-network-access",
            help="Let a keyless server listen on a non-loopback --host: anyone reaching it can score.",
        ),
    ] = False,
) -> None:
    """Serve a model: MLflow-compatible /invocations plus /health, /ready, /version, /metrics, /openapi.json.

    A registry model is first materialised into the state directory (once per version); the server then
    runs as a lean process that does not import MLflow. With --environment it records sampled requests in
    that environment's inference log (environments.<env>.inference_log; read by `vintage monitor`).
    """
    from vintage.errors import ConfigError

    if api_key_file is not None and api_key_scope is not None:
        raise ConfigError("give --api-key-file or --api-key-scope, not both")
    inference: dict[str, object] | None = None
    if environment is not None:  # a typo ("prodution") would otherwise serve without production's keys
        from vintage.pipeline.ops import check_environment
        from vintage.serving.inference_log import log_dir

        spec = state.load()
        check_environment(spec, environment)
        inference = spec.environments[environment].inference_log.server_settings(
            log_dir(spec.state_dir.resolve(), environment)
        )
    if environment == "production" and api_key_file is None and api_key_scope is None:
        api_key_scope = "production/serving"
    from vintage.serving.auth import check_exposure

    check_exposure(
        host, api_key_file is not None or api_key_scope is not None, allow_unauthenticated_network_access
    )
    from vintage.serving.launch import ServerCommand

    settings = state.settings()
    if api_key_scope is not None:  # refused before anything is materialised
        from vintage.secrets.names import check_scope

        check_scope(api_key_scope)
    model_dir = local_model_dir(model, reader="cli:serve")
    argv = ServerCommand(
        model_dir,
        host=host,
        port=port,
        max_body_bytes=int(max_body_mb * 1024 * 1024),
        max_rows=max_rows,
        timeout_s=timeout,
        workers=workers,
        environment=environment,
        state_dir=settings.state_dir.resolve(),  # the audit trail of key reloads
        api_key_file=api_key_file,
        api_key_scope=api_key_scope,
        secrets=settings.secrets.model_dump(mode="json") if api_key_scope else None,
        public_metadata=public_metadata,
        open_network=allow_unauthenticated_network_access,
        inference_log=inference,
    ).argv(sys.executable)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)  # drop MLflow and typer: the server process starts lean
