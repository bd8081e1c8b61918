"""Run the scoring app on uvicorn (httptools + uvloop), bound to 127.0.0.1 unless told otherwise.

Signals: SIGTERM/SIGINT drain (``/ready`` turns 503, in-flight requests finish, exit 0); SIGHUP reloads the
API keys.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from types import FrameType
from typing import Any

from vintage.errors import VintageError
from vintage.serving.app import ScoringApp, ServeConfig
from vintage.serving.auth import ApiKeys
from vintage.serving.model import load_model_dir

log = logging.getLogger(__name__)


def build_app(model_dir: Path, keys: ApiKeys, config: ServeConfig) -> ScoringApp:
    """Load, validate and warm the model; the app is ready when this returns."""
    app = ScoringApp(load_model_dir(model_dir), keys, config)
    app.warm()
    return app


def serve(
    model_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    keys: ApiKeys | None = None,
    config: ServeConfig | None = None,
    graceful_s: float = 30.0,
) -> None:
    """Serve until SIGTERM/SIGINT. Blocks.

    Raises:
        ServingError: the model cannot be loaded or fails validation (nothing is served then).
    """
    import uvicorn

    app = build_app(model_dir, keys or ApiKeys(), config or ServeConfig())
    config_ = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
        server_header=False,
        timeout_graceful_shutdown=int(graceful_s),
    )
    server = _draining_server(config_, app)
    signal.signal(signal.SIGHUP, lambda signum, frame: _reload_keys(app))
    log.warning(
        "serving %s v%s on http://%s:%d", app.slot.model.info.name, app.slot.model.info.version, host, port
    )
    server.run()


def _draining_server(config: Any, app: ScoringApp) -> Any:
    """A uvicorn.Server whose exit signal first marks the app draining (``/ready`` -> 503), and which
    exits 0 after a graceful drain (uvicorn re-raises the signal by default, ending the process with -15)."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            app.draining = True
            super().handle_exit(sig, frame)
            self._captured_signals.clear()

    return Server(config)


def _reload_keys(app: ScoringApp) -> None:
    try:
        n = app.keys.reload()
        log.warning("API keys reloaded (%d)", n)
    except VintageError as exc:
        log.error("API keys not reloaded: %s", exc.headline)
