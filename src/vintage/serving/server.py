"""Run the scoring app on uvicorn (httptools + uvloop), bound to 127.0.0.1 unless told otherwise.

One worker: the app runs in this process, and so does its admin channel (a Unix socket, see
:mod:`vintage.serving.admin`). Several workers: uvicorn's supervisor forks them on one shared socket; each
builds its app from environment variables (``worker_app``); the supervisor owns the admin channel, verifies
and validates a swap itself, and publishes it to a control file that every worker follows.

Signals: SIGTERM/SIGINT drain (``/ready`` turns 503, in-flight requests finish, idle keep-alive
connections close cleanly, exit 0). SIGHUP reloads the API keys (one worker) or replaces the workers one by
one, each new one ready before the old one stops (several workers: uvicorn's rolling restart; new workers
read the key source and the control file). Every reload and swap is in the audit trail.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import orjson
import uvicorn
from uvicorn.supervisors.multiprocess import Multiprocess

from vintage.errors import ServingError, VintageError
from vintage.model import digest as model_digest
from vintage.model.load import load_model_dir
from vintage.serving.admin import AdminServer, Auditor
from vintage.serving.app import ScoringApp, ServeConfig
from vintage.serving.auth import ApiKeys, ScopeKeys
from vintage.serving.control import ControlFile
from vintage.serving.inference_log import InferenceLogSettings
from vintage.serving.protocol import ConnectionLimits, GuardedHttpToolsProtocol

log = logging.getLogger(__name__)

_ENV_MODEL = "VINTAGE_SERVE_MODEL_DIR"
_ENV_KEYS = "VINTAGE_SERVE_KEY_FILE"
_ENV_KEY_SCOPE = "VINTAGE_SERVE_KEY_SCOPE"
_ENV_CONFIG = "VINTAGE_SERVE_CONFIG"
_ENV_CONTROL = "VINTAGE_SERVE_CONTROL"
_ENV_DIGEST = "VINTAGE_SERVE_MODEL_DIGEST"
FOLLOW_TIMEOUT_S = 30.0


@dataclasses.dataclass(frozen=True)
class AdminSpec:
    """The admin channel of a server and where its events are recorded.

    Attributes:
        socket: The Unix socket (``None``: no admin channel; keys still reload on SIGHUP).
        model_store: Swapped-in models must lie below this directory.
        state_dir: The project's state directory (the audit trail); ``None``: not recorded.
        environment: The environment served, for the audit trail.
    """

    socket: Path | None = None
    model_store: Path | None = None
    state_dir: Path | None = None
    environment: str | None = None

    def auditor(self) -> Auditor:
        """Appends to the audit trail (a failure to append is logged, never fatal to serving)."""
        state_dir, env = self.state_dir, self.environment

        def record(action: str, outcome: str, detail: str, actor: str) -> None:
            if state_dir is None:
                return
            from vintage import audit

            try:
                audit.record(
                    state_dir,
                    action,
                    env or "-",
                    outcome,
                    environment=env,
                    detail=detail,
                    actor=actor,
                    reader=f"serve:{env or '-'}",
                )
            except VintageError as exc:
                log.error("could not append to the audit trail: %s", exc.headline)

        return record


def build_app(
    model_dir: Path,
    keys: ApiKeys,
    config: ServeConfig,
    control: ControlFile | None = None,
    expected_digest: str | None = None,
) -> ScoringApp:
    """Load, validate and warm the model; the app is ready when this returns.

    With ``expected_digest`` the directory's files are checked against it (and against the manifest
    recorded at materialisation) before anything is loaded.
    """
    digest = _digest(model_dir, expected_digest)
    model = load_model_dir(model_dir)
    app = ScoringApp(model, keys, config, control=control, model_dir=model_dir, digest=digest)
    app.warm()
    return app


def _digest(model_dir: Path, expected: str | None) -> str | None:
    if expected is not None:
        return model_digest.verify(model_dir, expected)
    if model_digest.recorded(model_dir) is not None:
        return model_digest.verify(model_dir)
    try:  # a plain directory (vintage serve --model DIR): report what it holds
        return model_digest.compute(model_dir)
    except ServingError:
        return None


def worker_app() -> ScoringApp:
    """uvicorn factory for one worker of a multi-worker server (configured by environment variables)."""
    control = ControlFile(Path(os.environ[_ENV_CONTROL]))
    state = control.read()
    model_dir = Path(state.get("model") or os.environ[_ENV_MODEL])
    expected = state.get("digest") if state.get("model") else os.environ.get(_ENV_DIGEST) or None
    key_file, key_scope = os.environ.get(_ENV_KEYS), os.environ.get(_ENV_KEY_SCOPE)
    keys = _keys(Path(key_file) if key_file else None, ScopeKeys.from_json(key_scope) if key_scope else None)
    raw = orjson.loads(os.environ[_ENV_CONFIG])
    if raw.get("inference_log") is not None:
        raw["inference_log"] = InferenceLogSettings.from_mapping(raw["inference_log"])
    config = ServeConfig(**raw)
    return build_app(model_dir, keys, config, control, expected)


class Fleet:
    """The admin controller of a multi-worker server (runs in the supervisor)."""

    def __init__(self, app: ScoringApp, control: ControlFile, supervisor: Multiprocess) -> None:
        self.app = app  # the supervisor's validated copy: the columns every swap must keep
        self.control = control
        self.supervisor = supervisor

    def status(self) -> dict[str, Any]:
        """What the workers serve: the common model, or ``digest: null`` while they disagree."""
        pids = [p.pid for p in self.supervisor.processes if p.pid is not None]
        reports = self.control.reports(pids)
        digests = {pid: r.get("digest") for pid, r in reports.items()}
        first = next(iter(reports.values()), {}) or self.app.slot.describe()
        agreed = len(set(digests.values())) == 1 and all(reports.values())
        return {
            **first,
            "digest": first.get("digest") if agreed else None,
            "pid": os.getpid(),
            "workers": len(pids),
            "worker_digests": {str(pid): d for pid, d in digests.items()},
            "ready": agreed and all(r.get("ready") for r in reports.values()),
        }

    def swap(self, path: Path, digest: str) -> dict[str, Any]:
        """Validate here, publish, then wait until every worker serves ``digest``."""
        self.app.swap(path, digest)
        self.control.publish(model=str(path), digest=digest)
        deadline = time.monotonic() + FOLLOW_TIMEOUT_S
        while time.monotonic() < deadline:
            status = self.status()
            if status["digest"] == digest:
                return status
            time.sleep(0.05)
        raise ServingError(
            f"the workers did not all follow the swap within {FOLLOW_TIMEOUT_S:.0f} s",
            hint="see the server log",
        )

    def reload_keys(self) -> int:
        """Check the key source here, then have every worker re-read it."""
        n = self.app.keys.reload()
        self.control.publish(reload_keys=True)
        return n


class GracefulServer(uvicorn.Server):
    """A uvicorn.Server that exits 0 after a graceful drain (uvicorn re-raises the exit signal by default,
    ending the process with -15). The app marks itself draining on the same signal."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._captured_signals.clear()


def serve(
    model_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    workers: int = 1,
    key_file: Path | None = None,
    key_scope: ScopeKeys | None = None,
    config: ServeConfig | None = None,
    admin: AdminSpec | None = None,
    model_digest_expected: str | None = None,
    limits: ConnectionLimits | None = None,
    graceful_s: float = 30.0,
) -> None:
    """Serve until SIGTERM/SIGINT. Blocks.

    Raises:
        ServingError: the model or the key file cannot be loaded, the model fails validation or does not
            match ``model_digest_expected``, or the admin socket cannot be created (nothing is served then).
    """
    config = config or ServeConfig()
    admin = admin or AdminSpec()
    keys = _keys(key_file, key_scope)
    _prepare_inference_dir(config)
    common: dict[str, Any] = {
        "host": host,
        "port": port,
        "loop": "uvloop",
        "http": GuardedHttpToolsProtocol,
        "access_log": False,
        "log_level": "warning",
        "server_header": False,
        "proxy_headers": False,
        "timeout_graceful_shutdown": int(graceful_s),
    }
    audit = admin.auditor()
    if workers <= 1:
        app = build_app(model_dir, keys, config, expected_digest=model_digest_expected)
        signal.signal(signal.SIGHUP, lambda signum, frame: _reload_keys(app.reload_keys, audit))
        uv = uvicorn.Config(app, lifespan="on", **common)
        uv.vintage_limits = limits  # type: ignore[attr-defined]
        with _admin_channel(admin, app, audit):
            _announce(app, host, port, 1)
            GracefulServer(uv).run()
        return
    # fail here, once, with a clear error, before forking
    validate = build_app(model_dir, keys, config, expected_digest=model_digest_expected)
    with tempfile.TemporaryDirectory(prefix="vintage-serve-") as runtime:
        os.environ.update(
            {
                _ENV_MODEL: str(model_dir),
                _ENV_DIGEST: model_digest_expected or "",
                _ENV_KEYS: str(key_file or ""),
                _ENV_KEY_SCOPE: key_scope.to_json() if key_scope else "",
                _ENV_CONFIG: orjson.dumps(dataclasses.asdict(config)).decode(),
                _ENV_CONTROL: str(Path(runtime) / "control.json"),
            }
        )
        uv_config = uvicorn.Config(
            "vintage.serving.server:worker_app", factory=True, workers=workers, lifespan="on", **common
        )
        uv_config.vintage_limits = limits  # type: ignore[attr-defined]
        sock = uv_config.bind_socket()
        supervisor = _Supervisor(uv_config, sockets=[sock])
        supervisor.audit = audit
        fleet = Fleet(validate, ControlFile(Path(os.environ[_ENV_CONTROL])), supervisor)
        with _admin_channel(admin, fleet, audit):
            _announce(validate, host, port, workers)
            supervisor.run()


class _Supervisor(Multiprocess):
    """uvicorn's supervisor; its SIGHUP (a rolling restart: keys and model re-read) is audited."""

    audit: Auditor | None = None

    def handle_hup(self) -> None:
        from vintage.audit import current_actor

        super().handle_hup()
        log.warning("workers replaced on SIGHUP (API keys and model re-read)")
        if self.audit is not None:
            self.audit("serve.reload_keys", "ok", "SIGHUP: workers replaced one by one", current_actor())


class _admin_channel:  # noqa: N801 - used as a context manager
    """Open the admin socket (when configured) for the life of the server."""

    def __init__(self, spec: AdminSpec, controller: Any, audit: Auditor) -> None:
        self.server = (
            AdminServer(spec.socket, controller, spec.model_store, audit) if spec.socket is not None else None
        )

    def __enter__(self) -> None:
        if self.server is not None:
            self.server.start()

    def __exit__(self, *exc: object) -> None:
        if self.server is not None:
            self.server.close()


def _prepare_inference_dir(config: ServeConfig) -> None:
    """Create the inference log's directory (0700) before serving, so a bad path fails here, once."""
    if config.inference_log is None:
        return
    directory = Path(config.inference_log.directory)
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        directory.chmod(0o700)
    except OSError as exc:
        raise ServingError(
            f"cannot create the inference log directory {directory}: {exc.strerror or exc}",
            hint="check the state directory's permissions, or turn the log off (inference_log: {sample: 0})",
        ) from exc


def _keys(key_file: Path | None, key_scope: ScopeKeys | None) -> ApiKeys:
    if key_file is not None and key_scope is not None:
        raise ServingError("give an API key file or an API key scope, not both")
    if key_scope is not None:
        return ApiKeys.from_scope(key_scope)
    return ApiKeys.from_file(key_file) if key_file else ApiKeys()


def _announce(app: ScoringApp, host: str, port: int, workers: int) -> None:
    info = app.slot.model.info
    log.warning(
        "serving %s v%s (%s) on http://%s:%d (%d worker(s))",
        info.name,
        info.version,
        model_digest.short(app.slot.digest),
        host,
        port,
        workers,
    )


def _reload_keys(reload: Callable[[], int], audit: Auditor) -> None:
    from vintage.audit import current_actor

    try:
        n = reload()
    except VintageError as exc:
        log.error("API keys not reloaded (SIGHUP): %s", exc.headline)
        audit("serve.reload_keys", "failed", f"SIGHUP: {exc.headline}", current_actor())
        return
    log.warning("API keys reloaded (%d), on SIGHUP", n)
    audit("serve.reload_keys", "ok", f"SIGHUP: {n} key(s)", current_actor())
