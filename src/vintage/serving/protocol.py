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


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol plus header size and read deadlines (see the module docstring)."""

    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.limits: ConnectionLimits = getattr(config, "vintage_limits", None) or ConnectionLimits()
        self._in_headers = False  # from a request's first byte to the end of its headers
        self._header_bytes = 0
        self._deadline: asyncio.TimerHandle | None = None
        self._draining = False

    # -- connection -------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.limits.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_headers:
            self._header_bytes += len(data)
        super().data_received(data)
        if self._in_headers and self._header_bytes > self.limits.max_header_bytes:
            self._refuse(431, _431)

    # -- parser callbacks -------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        # counting starts with the next read: the one that began this request is bounded by the read size
        super().on_message_begin()
        self._in_headers = True
        self._header_bytes = 0
        if self._deadline is None:
            self._arm(self.limits.header_timeout_s)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._header_bytes = 0
        self._arm(self.limits.body_timeout_s)
        super().on_headers_complete()
        if self._draining and self.cycle is not None:
            self.cycle.keep_alive = False

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    # -- shutdown -------------------------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Drain: a busy connection closes after its response; an idle one stays open briefly, so a
        request already on its way is answered (with ``Connection: close``) instead of reset."""
        self._draining = True
        if self.cycle is None or self.cycle.response_complete:
            if self._in_headers:  # a request is arriving: its response will close the connection
                return
            self._disarm()
            self._deadline = self.loop.call_later(self.limits.drain_idle_s, self._close_idle)
        else:
            self.cycle.keep_alive = False

    def _close_idle(self) -> None:
        self._deadline = None
        idle = (self.cycle is None or self.cycle.response_complete) and not self._in_headers
        if idle and not self.transport.is_closing():
            self.transport.close()

    # -- deadlines --------------------------------------------------------------------------------------

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.cycle is not None and not self.cycle.response_complete and not self._in_headers:
            if self.cycle.response_started:
                self.transport.close()  # the app is answering already: nothing more can be said
                return
            self.cycle.disconnected = True  # the app sees http.disconnect and answers nothing
            self.cycle.message_event.set()
        self._refuse(408, _408)

    def _refuse(self, status: int, reason: bytes) -> None:
        self._disarm()
        if self.transport.is_closing():
            return
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, reason.title(), len(reason), reason)
        )
        self.transport.close()
        self.parser = None  # type: ignore[assignment]
