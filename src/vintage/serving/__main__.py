"""``python -m vintage.serving --model-dir DIR``: the lean server process (no MLflow, no typer).

``vintage serve`` materialises a registry model into a local directory, then execs this; the local deploy
target starts it with an admin socket, a model store and the digest the model must have.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from vintage.errors import VintageError
from vintage.serving.auth import OPEN_FLAG, check_exposure


def main(argv: list[str] | None = None) -> int:
    """Parse options, serve, return the exit code."""
    p = argparse.ArgumentParser(prog="python -m vintage.serving")
    p.add_argument("--model-dir", type=Path, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--api-key-file", type=Path)
    p.add_argument("--api-key-scope", help="secret scope holding the keys primary (and secondary)")
    p.add_argument("--environment", help="the served environment (reads only its own secret scopes)")
    p.add_argument("--state-dir", type=Path, default=Path(".vintage"))
    p.add_argument("--secrets-json", default="{}", help="the secrets settings of vintage.yaml, as JSON")
    p.add_argument("--max-body-bytes", type=int, default=10 * 1024 * 1024)
    p.add_argument("--max-rows", type=int, default=100_000)
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--model-digest", help="sha256:... the model directory must hold (checked before loading)")
    p.add_argument("--admin-socket", type=Path, help="Unix socket of the admin channel (swap, key reload)")
    p.add_argument("--model-store", type=Path, help="directory that swapped-in models must lie in")
    p.add_argument("--public-metadata", action="store_true", help="metadata without a key")
    p.add_argument(OPEN_FLAG, dest="open_network", action="store_true")
    p.add_argument("--inference-log", type=Path, help="directory of the inference log (off when not given)")
    p.add_argument("--inference-sample", type=float, default=0.1, help="share of requests recorded")
    p.add_argument("--inference-queue-rows", type=int, default=10_000, help="rows queued before dropping")
    p.add_argument("--inference-rotate-rows", type=int, default=100_000, help="rows per file")
    p.add_argument("--inference-rotate-seconds", type=float, default=60.0, help="seconds per file")
    p.add_argument("--max-header-kb", type=int, default=32)
    p.add_argument("--header-timeout", type=float, default=10.0)
    p.add_argument("--body-timeout", type=float, default=60.0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from vintage.redact import install_logging_filter, redact

    install_logging_filter()

    from vintage.errors import ConfigError
    from vintage.serving.app import ServeConfig
    from vintage.serving.auth import ScopeKeys
    from vintage.serving.inference_log import InferenceLogSettings
    from vintage.serving.protocol import ConnectionLimits
    from vintage.serving.server import AdminSpec, serve

    try:
        check_exposure(args.host, bool(args.api_key_file or args.api_key_scope), args.open_network)
        try:
            inference = (
                InferenceLogSettings(
                    directory=str(args.inference_log.resolve()),
                    sample=args.inference_sample,
                    max_queue_rows=args.inference_queue_rows,
                    rotate_rows=args.inference_rotate_rows,
                    rotate_seconds=args.inference_rotate_seconds,
                )
                if args.inference_log is not None
                else None
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        config = ServeConfig(
            max_body_bytes=args.max_body_bytes,
            max_rows=args.max_rows,
            timeout_s=args.timeout,
            public_metadata=args.public_metadata,
            inference_log=inference,
        )
        serve(
            args.model_dir,
            host=args.host,
            port=args.port,
            workers=args.workers,
            key_file=args.api_key_file,
            key_scope=ScopeKeys(
                args.api_key_scope,
                args.environment,
                str(args.state_dir.resolve()),
                json.loads(args.secrets_json),
            )
            if args.api_key_scope
            else None,
            config=config,
            admin=AdminSpec(
                socket=args.admin_socket.resolve() if args.admin_socket else None,
                model_store=args.model_store.resolve() if args.model_store else None,
                state_dir=args.state_dir.resolve(),
                environment=args.environment,
            ),
            model_digest_expected=args.model_digest,
            limits=ConnectionLimits(
                max_header_bytes=args.max_header_kb * 1024,
                header_timeout_s=args.header_timeout,
                body_timeout_s=args.body_timeout,
            ),
        )
    except VintageError as exc:
        sys.stderr.write(f"error: {redact(exc.headline)}\n")
        if exc.hint:
            sys.stderr.write(f"hint: {redact(exc.hint)}\n")
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
