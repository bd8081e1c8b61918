"""The framework-free ceiling for ``benchmarks/serving.py``: a trivial ASGI callable that reads the request
body and answers every path with the same small JSON, no parsing and no model.

Whatever req/s a server reaches with this app is the most any app can reach on that HTTP stack on this
machine; the scoring app's distance to it is the cost of its own Python (parse, predict, encode, metrics).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

Message = dict[str, Any]

_BODY = b'{"predictions":[5.224716933810145]}'
_START: Message = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"application/json")],
}
_END: Message = {"type": "http.response.body", "body": _BODY}


async def app(
    scope: dict[str, Any],
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    """ASGI entry point: drain the body, send the constant answer; complete lifespan events."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = bool(message.get("more_body", False))
    await send(_START)
    await send(_END)
