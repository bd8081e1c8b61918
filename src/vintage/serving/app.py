"""The scoring server as a bare ASGI callable.

No framework: the hot path (``POST /invocations``) reads headers once, checks the key in constant time,
enforces the body limit before reading the body, parses with orjson + numpy, predicts, and answers — a few
microseconds of Python around the model. Small requests are handled on the event loop; large ones are
parsed and predicted on a worker thread with a timeout, so ``/health`` keeps answering meanwhile.

The model is one reference (:class:`ModelSlot`): a swap replaces it atomically and a request in flight keeps
the model it started with.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from vintage.errors import VintageError
from vintage.model.digest import verify
from vintage.model.load import LoadedModel, load_model_dir
from vintage.serving.auth import ApiKeys
from vintage.serving.control import ControlFile
from vintage.serving.inference_log import InferenceLog, InferenceLogSettings
from vintage.serving.metrics import Metrics
from vintage.serving.openapi import openapi_document
from vintage.serving.payload import Matrix, PayloadError, Rows, encode_predictions, parse_batch

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_JSON = [(b"content-type", b"application/json")]
_TEXT = [(b"content-type", b"text/plain; charset=utf-8")]
_PROM = [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")]
_UNAUTHORIZED = orjson.dumps({"error": {"code": "unauthorized", "message": "missing or invalid API key"}})
_NOT_FOUND = orjson.dumps({"error": {"code": "not_found", "message": "no such endpoint"}})
_NOT_ALLOWED = orjson.dumps({"error": {"code": "method_not_allowed", "message": "method not allowed"}})
_TIMEOUT = orjson.dumps({"error": {"code": "timeout", "message": "prediction took longer than the timeout"}})


@dataclass(frozen=True)
class ServeConfig:
    """Limits of one server."""

    max_body_bytes: int = 10 * 1024 * 1024
    max_rows: int = 100_000
    timeout_s: float = 10.0
    inline_bytes: int = 64 * 1024  # bodies up to this size are parsed and predicted on the event loop
    warmup_predictions: int = 50
    public_metadata: bool = False  # /version, /metrics, /openapi.json without the API key
    inference_log: InferenceLogSettings | None = None  # record sampled rows (see inference_log.py)


class ModelSlot:
    """The model being served; replaced as a whole on swap."""

    def __init__(self, model: LoadedModel, path: Path | None = None, digest: str | None = None) -> None:
        self.model = model
        self.path = path
        self.digest = digest
        self.since = time.time()
        self.version_json = b""
        self.openapi_json = b""
        self._render()

    def replace(self, model: LoadedModel, path: Path | None = None, digest: str | None = None) -> None:
        """Swap in ``model`` (a single reference assignment: requests in flight keep the old one)."""
        self.model, self.path, self.digest, self.since = model, path, digest, time.time()
        self._render()

    def describe(self) -> dict[str, Any]:
        """What ``/version`` and the admin channel report."""
        info = self.model.info
        return {
            "name": info.name,
            "version": info.version,
            "run_id": info.run_id,
            "model_uri": info.model_uri,
            "digest": self.digest,
            "flavor": info.flavor,
            "columns": list(info.columns),
            "signature": info.signature,
            "served_since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.since)),
        }

    def _render(self) -> None:
        self.version_json = orjson.dumps(self.describe())
        self.openapi_json = orjson.dumps(openapi_document(self.model.info))


def validate_and_warm(model: LoadedModel, rounds: int) -> None:
    """Predict the model's input example (must give finite numbers, one per row), then warm it up.

    Raises:
        VintageError: the model has no usable example or predicts non-finite values.
    """
    import numpy as np

    example = model.example()
    if example is None or len(example) == 0:
        example = np.zeros((1, len(model.info.columns)))
    pred = np.asarray(model.predict(example), dtype="float64")
    if pred.shape != (len(example),) or not np.isfinite(pred).all():
        raise VintageError("the model's predictions on its input example are not one finite number per row")
    for _ in range(rounds):
        model.predict(example[:1])


class ScoringApp:
    """ASGI application: ``/invocations``, ``/health``, ``/ready``, ``/version``, ``/metrics``,
    ``/openapi.json``. Nothing on this port changes what the server runs: swaps and key reloads come over
    the admin channel (:mod:`vintage.serving.admin`), which calls :meth:`swap` and :meth:`reload_keys`."""

    def __init__(
        self,
        model: LoadedModel,
        keys: ApiKeys,
        config: ServeConfig | None = None,
        control: ControlFile | None = None,
        model_dir: Path | None = None,
        digest: str | None = None,
    ) -> None:
        self.config = config or ServeConfig()
        self.control = control
        self._control_seen = (0, int((control.read() if control else {}).get("keys_generation", 0)))
        self._watcher: asyncio.Task[None] | None = None
        self.keys = keys
        self.metrics = Metrics()
        self.slot = ModelSlot(model, model_dir, digest)
        self.ready = False
        self.draining = False
        self.inference: InferenceLog | None = None  # started with the server (lifespan), not before
        self._swap_lock = threading.Lock()
        self.metrics.serving(model.info.name, model.info.version, model.info.run_id)
        self._routes: dict[str, Callable[[Scope, Receive, Send], Awaitable[None]]] = {
            "/invocations": self._invocations,
            "/health": self._health,
            "/ping": self._health,
            "/ready": self._ready,
            "/version": self._version,
            "/metrics": self._metrics,
            "/openapi.json": self._openapi,
        }

    def warm(self) -> None:
        """Validate and warm the current model, then report ready."""
        validate_and_warm(self.slot.model, self.config.warmup_predictions)
        self.ready = True
        self._report()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            handler = self._routes.get(scope["path"])
            if handler is None:
                await _respond(send, 404, _NOT_FOUND)
            else:
                await handler(scope, receive, send)
        elif scope["type"] == "lifespan":
            await _lifespan(receive, send, self._on_startup, self._on_shutdown)

    # -- the hot path ------------------------------------------------------------------------------------

    async def _invocations(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = await self._score(scope, receive, send, started)
        self.metrics.observe(status, time.perf_counter() - started)

    async def _score(self, scope: Scope, receive: Receive, send: Send, started: float) -> int:
        if scope["method"] != "POST":
            return await _respond(send, 405, _NOT_ALLOWED)
        auth = ctype = length = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                auth = value
            elif name == b"content-type":
                ctype = value
            elif name == b"content-length":
                length = value
        if not self.keys.check(auth):
            return await _respond(send, 401, _UNAUTHORIZED)
        limit = self.config.max_body_bytes
        if length is not None and length.isdigit() and int(length) > limit:
            return await _respond(send, 413, _too_large(limit).to_json())
        body = await _read_body(receive, limit)
        if body is None:
            return await _respond(send, 413, _too_large(limit).to_json())
        if body is _DISCONNECTED:
            return 499  # the client went away (or its body timed out): nobody to answer
        model = self.slot.model  # requests keep the model they started with, whatever swaps meanwhile
        content_type = ctype.decode("latin-1") if ctype else None
        try:
            if len(body) <= self.config.inline_bytes:
                out, x, pred = _predict(model, body, content_type, self.config.max_rows)
            else:
                out, x, pred = await asyncio.wait_for(
                    asyncio.to_thread(_predict, model, body, content_type, self.config.max_rows),
                    self.config.timeout_s,
                )
        except PayloadError as exc:
            return await _respond(send, exc.status, exc.to_json())
        except TimeoutError:
            return await _respond(send, 504, _TIMEOUT)
        self.metrics.scored(len(x))
        if self.inference is not None:  # sampling, a deque append at most: never waits
            self.inference.offer(model, x, pred, started)
        return await _respond(send, 200, out)

    # -- probes and metadata -------------------------------------------------------------------------------

    async def _health(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _respond(send, 200, b"OK", _TEXT)

    async def _ready(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.ready and not self.draining:
            await _respond(send, 200, b"ready", _TEXT)
        else:
            await _respond(send, 503, b"draining" if self.draining else b"loading", _TEXT)

    async def _version(self, scope: Scope, receive: Receive, send: Send) -> None:
        if await self._metadata_allowed(scope, send):
            await _respond(send, 200, self.slot.version_json)

    async def _metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        if await self._metadata_allowed(scope, send):
            await _respond(send, 200, self.metrics.render(), _PROM)

    async def _openapi(self, scope: Scope, receive: Receive, send: Send) -> None:
        if await self._metadata_allowed(scope, send):
            await _respond(send, 200, self.slot.openapi_json)

    async def _metadata_allowed(self, scope: Scope, send: Send) -> bool:
        """Metadata needs the API key when the server has keys, unless it was made public."""
        if scope["method"] not in ("GET", "HEAD"):
            await _respond(send, 405, _NOT_ALLOWED)
            return False
        if self.config.public_metadata or not self.keys.required:
            return True
        auth = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        if self.keys.check(auth):
            return True
        await _respond(send, 401, _UNAUTHORIZED)
        return False

    # -- admin (called by the admin channel, on its thread) ----------------------------------------------

    def status(self) -> dict[str, Any]:
        """What this process serves (the admin channel's ``status``)."""
        return {**self.slot.describe(), "pid": os.getpid(), "ready": self.ready, "workers": 1}

    def swap(self, path: Path, digest: str) -> dict[str, Any]:
        """Verify ``path`` against ``digest``, load, validate and warm it, then serve it; the old model
        keeps serving until the swap, and for good if the new one fails.

        Raises:
            VintageError: the files do not match the digest, or the model fails to load or validate.
        """
        with self._swap_lock:
            try:
                model = self._load_checked(path, digest)
            except VintageError:
                self.metrics.swaps.labels("rejected").inc()
                raise
            self._swap(model, path, digest)
        return self.status()

    def reload_keys(self) -> int:
        """Re-read the API keys (a bad source keeps the old keys and raises)."""
        return self.keys.reload()

    def _swap(self, model: LoadedModel, path: Path, digest: str) -> None:
        self.slot.replace(model, path, digest)
        if self.inference is not None:
            self.inference.note_model(model.info.version, path, digest)
        self.metrics.serving(model.info.name, model.info.version, model.info.run_id)
        self.metrics.swaps.labels("swapped").inc()
        self._report()

    def _load_checked(self, path: Path, digest: str) -> LoadedModel:
        verify(path, digest)  # before anything in the directory is unpickled
        model = load_model_dir(path)
        current = self.slot.model.info.columns
        if model.info.columns != current:
            raise VintageError(f"the new model expects other columns than the one being served ({current})")
        validate_and_warm(model, self.config.warmup_predictions)
        return model

    def _report(self) -> None:
        """Several workers: tell the supervisor what this worker serves (its admin ``status``)."""
        if self.control is not None:
            self.control.report(os.getpid(), {**self.slot.describe(), "ready": self.ready})

    # -- the inference log and the server's life cycle -----------------------------------------------------

    def start_inference_log(self) -> None:
        """Start recording scored rows when the config asks for it (a serving process, not a supervisor).

        Raises:
            OSError: the log directory cannot be created.
        """
        settings = self.config.inference_log
        if settings is None or self.inference is not None:
            return
        inference = InferenceLog(settings, self.slot.model.info.columns)
        inference.note_model(self.slot.model.info.version, self.slot.path, self.slot.digest)
        inference.start()
        self.metrics.watch_inference(inference)
        self.inference = inference

    def close_inference_log(self) -> None:
        """Write what the inference log still holds and stop its writer (idempotent)."""
        if self.inference is not None:
            self.inference.close()

    def _on_shutdown(self) -> None:
        """Runs after uvicorn stopped serving (in-flight requests finished): the last rows reach disk."""
        self.close_inference_log()

    def _on_startup(self) -> None:
        """Runs inside the server's event loop, after uvicorn installed its exit-signal handlers."""
        self.start_inference_log()
        if self.control is not None and self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch(self.control))
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous = signal.getsignal(sig)
                if callable(previous):  # drain: /ready turns 503 before uvicorn stops accepting
                    signal.signal(sig, functools.partial(self._on_exit_signal, previous))

    def _on_exit_signal(self, previous: Callable[[int, Any], Any], signum: int, frame: Any) -> None:
        self.draining = True
        previous(signum, frame)

    # -- multi-worker: follow the control file ------------------------------------------------------------

    async def _watch(self, control: ControlFile, every_s: float = 0.5) -> None:
        while True:
            await asyncio.sleep(every_s)
            stamp = control.stamp()
            if stamp != self._control_seen[0]:
                await self._follow(control, stamp)

    async def _follow(self, control: ControlFile, stamp: int) -> None:
        state = control.read()
        keys_gen = int(state.get("keys_generation", 0))
        if keys_gen != self._control_seen[1]:
            try:
                await asyncio.to_thread(self.keys.reload)
            except VintageError as exc:
                log.error("API keys not reloaded: %s", exc.headline)
        model, digest = state.get("model"), state.get("digest")
        if model and digest and digest != self.slot.digest:
            try:
                loaded = await asyncio.to_thread(self._load_checked, Path(model), str(digest))
            except VintageError as exc:
                self.metrics.swaps.labels("rejected").inc()
                log.error("model not swapped in: %s", exc.headline)
            else:
                with self._swap_lock:
                    self._swap(loaded, Path(model), str(digest))
                log.info("followed the swap to %s v%s", loaded.info.name, loaded.info.version)
        self._control_seen = (stamp, keys_gen)


def _predict(
    model: LoadedModel, body: bytes, content_type: str | None, max_rows: int
) -> tuple[bytes, Matrix | Rows, Any]:
    x = parse_batch(body, content_type, model.info.columns, max_rows)
    # a small JSON request's rows stay Python numbers (parse_batch): no NumPy call on the way
    pred = model.predict_rows(x) if isinstance(x, list) else model.predict(x)
    return encode_predictions(pred), x, pred


def _too_large(limit: int) -> PayloadError:
    return PayloadError(413, "body_too_large", f"request body is larger than the limit of {limit} bytes")


_DISCONNECTED = b"\x00disconnected"  # a sentinel object, compared by identity


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body; ``None`` as soon as it exceeds ``limit`` (the rest is never read);
    ``_DISCONNECTED`` when the client went away before sending all of it."""
    message = await receive()
    if message["type"] == "http.disconnect":
        return _DISCONNECTED
    body = message.get("body", b"")
    if not message.get("more_body", False):
        return body if len(body) <= limit else None
    chunks, size = [body], len(body)
    while message.get("more_body", False):
        message = await receive()
        if message["type"] == "http.disconnect":
            return _DISCONNECTED
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def _respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] = _JSON) -> int:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
    return status


async def _lifespan(
    receive: Receive, send: Send, on_startup: Callable[[], None], on_shutdown: Callable[[], None]
) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            on_startup()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await asyncio.to_thread(on_shutdown)
            await send({"type": "lifespan.shutdown.complete"})
            return
