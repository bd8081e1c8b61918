"""A minimal in-process HTTP client for an ASGI app (the lock has no httpx for Starlette's TestClient):
one request, the whole response."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Answer:
    """A response: status, headers (lower-case names), body text."""

    status: int
    headers: dict[str, str]
    text: str


def call(
    app: Any,
    method: str,
    url: str,
    *,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    host: str = "127.0.0.1:8090",
) -> Answer:
    """Send one request to ``app`` (Host ``host`` unless ``headers`` names one) and return the answer."""
    parts = urlsplit(url)
    sent = {"host": host, **{k.lower(): v for k, v in (headers or {}).items()}}
    if body:
        sent.setdefault("content-length", str(len(body)))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": parts.path,
        "raw_path": parts.path.encode(),
        "query_string": parts.query.encode(),
        "root_path": "",
        "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in sent.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8090),
    }
    status = 0
    got_headers: dict[str, str] = {}
    chunks: list[bytes] = []

    async def run() -> None:
        nonlocal status
        pending = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            if pending:
                return pending.pop()
            await asyncio.sleep(3600)  # never: the app reads the body once
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                for k, v in message.get("headers", []):
                    got_headers[k.decode("latin-1").lower()] = v.decode("latin-1")
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await app(scope, receive, send)

    asyncio.run(run())
    return Answer(status, got_headers, b"".join(chunks).decode("utf-8", "replace"))
