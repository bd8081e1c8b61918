"""Run the scoring app on uvicorn (httptools + uvloop), bound to 127.0.0.1 unless told otherwise.

One worker: the app runs in this process. Several workers: uvicorn's supervisor forks them on one shared
socket; each builds its app from environment variables (``worker_app``) and follows a control file so an
admin call that reaches one worker (model swap, key reload) reaches them all.

Signals: SIGTERM/SIGINT drain (``/ready`` turns 503, in-flight requests finish, exit 0). SIGHUP reloads
the API keys (one worker) or replaces the workers one by one, each new one ready before the old one stops
(several workers: uvicorn's rolling restart; new workers read the key file and the control file).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import tempfile
from pathlib import Path
from types import FrameType
from typing import Any

import orjson
import uvicorn
from uvicorn.supervisors.multiprocess import Multiprocess

from vintage.errors import ServingError, VintageError
from vintage.serving.app import ScoringApp, ServeConfig
from vintage.serving.auth import ApiKeys, ScopeKeys
from vintage.serving.control import ControlFile
from vintage.serving.model import load_model_dir

log = logging.getLogger(__name__)

_ENV_MODEL = "VINTAGE_SERVE_MODEL_DIR"
_ENV_KEYS = "VINTAGE_SERVE_KEY_FILE"
_ENV_KEY_SCOPE = "VINTAGE_SERVE_KEY_SCOPE"
_ENV_CONFIG = "VINTAGE_SERVE_CONFIG"
_ENV_CONTROL = "VINTAGE_SERVE_CONTROL"


def build_app(
    model_dir: Path, keys: ApiKeys, config: ServeConfig, control: ControlFile | None = None
) -> ScoringApp:
    """Load, validate and warm the model; the app is ready when this returns."""
    app = ScoringApp(load_model_dir(model_dir), keys, config, control=control, model_dir=model_dir)
    app.warm()
    return app


def worker_app() -> ScoringApp:
    """uvicorn factory for one worker of a multi-worker server (configured by environment variables)."""
    control = ControlFile(Path(os.environ[_ENV_CONTROL]))
    model_dir = Path(control.read().get("model") or os.environ[_ENV_MODEL])
    key_file, key_scope = os.environ.get(_ENV_KEYS), os.environ.get(_ENV_KEY_SCOPE)
    keys = _keys(Path(key_file) if key_file else None, ScopeKeys.from_json(key_scope) if key_scope else None)
    config = ServeConfig(**orjson.loads(os.environ[_ENV_CONFIG]))
    return build_app(model_dir, keys, config, control)


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
    graceful_s: float = 30.0,
) -> None:
    """Serve until SIGTERM/SIGINT. Blocks.

    Raises:
        ServingError: the model or the key file cannot be loaded, or the model fails validation (nothing is
            served then).
    """
    config = config or ServeConfig()
    keys = _keys(key_file, key_scope)
    common: dict[str, Any] = {
        "host": host,
        "port": port,
        "loop": "uvloop",
        "http": "httptools",
        "access_log": False,
        "log_level": "warning",
        "server_header": False,
        "proxy_headers": False,
        "timeout_graceful_shutdown": int(graceful_s),
    }
    if workers <= 1:
        app = build_app(model_dir, keys, config)
        signal.signal(signal.SIGHUP, lambda signum, frame: _reload_keys(app))
        _announce(app, host, port, 1)
        GracefulServer(uvicorn.Config(app, lifespan="on", **common)).run()
        return
    validate = build_app(model_dir, keys, config)  # fail here, once, with a clear error, before forking
    _announce(validate, host, port, workers)
    with tempfile.TemporaryDirectory(prefix="vintage-serve-") as runtime:
        os.environ.update(
            {
                _ENV_MODEL: str(model_dir),
                _ENV_KEYS: str(key_file or ""),
                _ENV_KEY_SCOPE: key_scope.to_json() if key_scope else "",
                _ENV_CONFIG: orjson.dumps(dataclasses.asdict(config)).decode(),
                _ENV_CONTROL: str(Path(runtime) / "control.json"),
            }
        )
        uv_config = uvicorn.Config(
            "vintage.serving.server:worker_app", factory=True, workers=workers, lifespan="on", **common
        )
        sock = uv_config.bind_socket()
        Multiprocess(uv_config, sockets=[sock]).run()


def _keys(key_file: Path | None, key_scope: ScopeKeys | None) -> ApiKeys:
    if key_file is not None and key_scope is not None:
        raise ServingError("give an API key file or an API key scope, not both")
    if key_scope is not None:
        return ApiKeys.from_scope(key_scope)
    return ApiKeys.from_file(key_file) if key_file else ApiKeys()


def _announce(app: ScoringApp, host: str, port: int, workers: int) -> None:
    info = app.slot.model.info
    log.warning("serving %s v%s on http://%s:%d (%d worker(s))", info.name, info.version, host, port, workers)


def _reload_keys(app: ScoringApp) -> None:
    try:
        n = app.keys.reload()
        log.warning("API keys reloaded (%d)", n)
    except VintageError as exc:
        log.error("API keys not reloaded: %s", exc.headline)
