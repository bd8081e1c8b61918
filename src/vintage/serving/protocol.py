"""uvicorn's httptools protocol with the limits a server on a shared network needs.

uvicorn (with httptools) puts no bound on the size of a request's header section and no deadline on
receiving it or the body: ten connections sending an endless header grew the server by half a gigabyte,
and sockets that send nothing were never closed. This protocol adds, per connection:

* **header size**: more than ``max_header_bytes`` before the end of the headers -> ``431`` and close
  (counted from the read after the one that began the request, so the bound is that plus one read);
* **header deadline**: the headers of a request must arrive within ``header_timeout_s`` of its first
  byte (or of the connection opening) -> ``408`` and close;
* **body deadline**: the body must arrive within ``body_timeout_s`` of the headers -> ``408`` and close
  (the app sees a disconnect and answers nothing);
* **graceful drain with keep-alive**: on shutdown an idle keep-alive connection is not cut at once (a
  request the client is sending at that moment would be reset): it stays open for ``drain_idle_s``, and a
  request that arrives meanwhile is answered with ``Connection: close``.

The limits travel on the uvicorn ``Config`` (attribute ``vintage_limits``), so every worker process of a
multi-worker server applies the same ones.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


@dataclass(frozen=True)
class ConnectionLimits:
    """Per-connection limits (see the module docstring)."""

    max_header_bytes: int = 32 * 1024
    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    drain_idle_s: float = 1.0


_431 = b"request header fields too large"
_408 = b"request timeout"


# what a connection is waiting for: _OPEN a first byte, _HEADERS the rest of a begun request's headers
_IDLE, _OPEN, _HEADERS, _BODY, _APP = 0, 1, 2, 3, 4


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol plus header size and read deadlines (see the module docstring).

    Deadlines cost no timer per request: a connection notes when its current phase began (one float), and one
    sweeper per event loop checks every connection a few times a second (at most a quarter of the shortest
    deadline late).
    """

    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.limits: ConnectionLimits = getattr(config, "vintage_limits", None) or ConnectionLimits()
        self._phase = _HEADERS
        self._since = 0.0
        self._header_bytes = 0
        self._idle_close: asyncio.TimerHandle | None = None
        self._draining = False

    # -- connection -------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._phase, self._since = _OPEN, self.loop.time()
        _ensure_sweeper(self.loop, self.connections, self.limits)

    def connection_lost(self, exc: Exception | None) -> None:
        self._phase = _IDLE
        if self._idle_close is not None:
            self._idle_close.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._phase == _HEADERS:
            self._header_bytes += len(data)
        super().data_received(data)
        if self._phase == _HEADERS and self._header_bytes > self.limits.max_header_bytes:
            self._refuse(431, _431)

    # -- parser callbacks -------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        # counting starts with the next read: the one that began this request is bounded by the read size
        super().on_message_begin()
        self._phase, self._since, self._header_bytes = _HEADERS, self.loop.time(), 0

    def on_headers_complete(self) -> None:
        self._phase, self._since = _BODY, self.loop.time()
        super().on_headers_complete()
        if self._draining and self.cycle is not None:
            self.cycle.keep_alive = False

    def on_message_complete(self) -> None:
        self._phase = _APP  # no deadline while the app works (it has its own timeout) or the socket idles
        super().on_message_complete()

    # -- shutdown -------------------------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Drain: a busy connection closes after its response; an idle one stays open briefly, so a
        request already on its way is answered (with ``Connection: close``) instead of reset."""
        self._draining = True
        if self.cycle is None or self.cycle.response_complete:
            if self._phase == _HEADERS:  # a request is arriving (its header deadline still holds)
                return
            self._idle_close = self.loop.call_later(self.limits.drain_idle_s, self._close_idle)
        else:
            self.cycle.keep_alive = False

    def _close_idle(self) -> None:
        self._idle_close = None
        idle = self.cycle is None or self.cycle.response_complete
        if idle and self._phase != _HEADERS and not self.transport.is_closing():
            self.transport.close()

    # -- deadlines --------------------------------------------------------------------------------------

    def check_deadline(self, now: float) -> None:
        """Called by the sweeper: answer 408 and close when the current phase took too long."""
        if self._phase in (_OPEN, _HEADERS):
            limit = self.limits.header_timeout_s
        elif self._phase == _BODY:
            limit = self.limits.body_timeout_s
        else:
            return
        if now - self._since > limit:
            self._expired()

    def _expired(self) -> None:
        if self._phase == _BODY and self.cycle is not None and not self.cycle.response_complete:
            if self.cycle.response_started:
                self.transport.close()  # the app is answering already: nothing more can be said
                return
            self.cycle.disconnected = True  # the app sees http.disconnect and answers nothing
            self.cycle.message_event.set()
        self._refuse(408, _408)

    def _refuse(self, status: int, reason: bytes) -> None:
        self._phase = _IDLE
        if self.transport.is_closing():
            return
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, reason.title(), len(reason), reason)
        )
        self.transport.close()


_SWEEPERS: dict[int, asyncio.Task[None]] = {}


def _ensure_sweeper(loop: asyncio.AbstractEventLoop, connections: set[Any], limits: ConnectionLimits) -> None:
    """One sweeper task per event loop (per server process)."""
    key = id(connections)
    task = _SWEEPERS.get(key)
    if task is None or task.done():
        every = max(0.05, min(1.0, min(limits.header_timeout_s, limits.body_timeout_s) / 4))
        _SWEEPERS[key] = loop.create_task(_sweep(loop, connections, every))


async def _sweep(loop: asyncio.AbstractEventLoop, connections: set[Any], every: float) -> None:
    while True:
        await asyncio.sleep(every)
        now = loop.time()
        for conn in list(connections):
            if isinstance(conn, GuardedHttpToolsProtocol):
                conn.check_deadline(now)
