"""The scoring server's command line, built in one place: ``python -m vintage.serving --model-dir DIR ...``.

``vintage serve`` execs it, the local deploy target starts it as a detached process, and an OCI image runs it
inside a container. :class:`ServerCommand` holds the options; :meth:`ServerCommand.argv` renders them for any
Python executable (a parameter: inside a container it is the image's interpreter, not this one), and
:func:`start` runs it as a child process. This module imports no server code: it is cheap for the CLI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

from vintage.serving.auth import OPEN_FLAG

MODULE: Final = "vintage.serving"
_INFERENCE_FLAGS: Final = {
    "sample": "--inference-sample",
    "max_queue_rows": "--inference-queue-rows",
    "rotate_rows": "--inference-rotate-rows",
    "rotate_seconds": "--inference-rotate-seconds",
}


def inference_log_args(settings: Mapping[str, Any]) -> list[str]:
    """The server's options for an inference log (``InferenceLogSpec.server_settings``)."""
    args = ["--inference-log", str(settings["directory"])]
    for key, flag in _INFERENCE_FLAGS.items():
        if settings.get(key) is not None:
            args += [flag, str(settings[key])]
    return args


@dataclass(frozen=True)
class ServerCommand:
    """The options of one scoring server process (``None``/``False`` = the server's default, not passed).

    Args:
        model_dir: The materialised model directory to serve.
        host: The address to bind.
        port: The port to listen on.
        workers: Server worker processes sharing the port.
        model_digest: ``sha256:...`` the model directory must hold (checked before loading).
        admin_socket: The admin channel's Unix socket (swap, key reload, status).
        model_store: The directory that swapped-in models must lie in.
        environment: The environment served (the server reads only its own secret scopes).
        state_dir: The project's state directory (audit trail, local secret store).
        api_key_file: A file with the API keys (mode 0600).
        api_key_scope: A secret scope holding the keys ``primary`` (and ``secondary``).
        secrets: The ``secrets`` settings of vintage.yaml (providers, no values); passed with a key scope.
        public_metadata: Serve ``/version``, ``/metrics``, ``/openapi.json`` without the key.
        open_network: Let a keyless server listen on a non-loopback host.
        max_body_bytes: Largest request body.
        max_rows: Most rows in one request.
        timeout_s: Prediction timeout (504 after).
        inference_log: Record sampled rows: ``directory`` and the keys of ``environments.<env>.inference_log``
            (``sample``, ``max_queue_rows``, ``rotate_rows``, ``rotate_seconds``); ``None``: off.
        extra: Further options, passed verbatim after the others.
    """

    model_dir: Path | str
    host: str | None = None
    port: int | None = None
    workers: int | None = None
    model_digest: str | None = None
    admin_socket: Path | str | None = None
    model_store: Path | str | None = None
    environment: str | None = None
    state_dir: Path | str | None = None
    api_key_file: Path | str | None = None
    api_key_scope: str | None = None
    secrets: Mapping[str, Any] | None = None
    public_metadata: bool = False
    open_network: bool = False
    max_body_bytes: int | None = None
    max_rows: int | None = None
    timeout_s: float | None = None
    inference_log: Mapping[str, Any] | None = None
    extra: Sequence[str] = field(default_factory=tuple)

    def options(self) -> list[str]:
        """The server's options, without the interpreter and module."""
        opts = ["--model-dir", str(self.model_dir)]
        valued: list[tuple[str, object | None]] = [
            ("--host", self.host),
            ("--port", self.port),
            ("--max-body-bytes", self.max_body_bytes),
            ("--max-rows", self.max_rows),
            ("--timeout", self.timeout_s),
            ("--workers", self.workers),
            ("--model-digest", self.model_digest),
            ("--admin-socket", self.admin_socket),
            ("--model-store", self.model_store),
            ("--environment", self.environment),
            ("--state-dir", self.state_dir),
            ("--api-key-file", self.api_key_file),
        ]
        for flag, value in valued:
            if value is not None:
                opts += [flag, str(value)]
        if self.api_key_scope:
            opts += [
                "--api-key-scope",
                self.api_key_scope,
                "--secrets-json",
                json.dumps(dict(self.secrets or {})),
            ]
        if self.inference_log is not None:
            opts += inference_log_args(self.inference_log)
        if self.public_metadata:
            opts.append("--public-metadata")
        if self.open_network:
            opts.append(OPEN_FLAG)
        return [*opts, *self.extra]

    def argv(self, python: str | None = None) -> list[str]:
        """``[python, "-m", "vintage.serving", *options]``; ``python`` defaults to this interpreter."""
        return [python or sys.executable, "-m", MODULE, *self.options()]


def start(
    command: ServerCommand,
    *,
    stdout: IO[bytes] | int,
    python: str | None = None,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    new_session: bool = False,
) -> subprocess.Popen[bytes]:
    """Start the server as a child process (stdin closed, stderr into ``stdout``); returns at once.

    Args:
        command: What to run.
        stdout: Where its output goes (a file opened for binary writing, or ``subprocess.DEVNULL``).
        python: The interpreter (default: this one).
        cwd: Its working directory.
        env: Variables added to this process's environment.
        new_session: Lead its own session (it then outlives this process and its terminal).
    """
    return subprocess.Popen(
        command.argv(python),
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.STDOUT,
        start_new_session=new_session,
        close_fds=True,
        cwd=cwd,
        env={**os.environ, **env} if env else None,
    )
