"""The operator token and the request checks that guard the dashboard's only writing action (a decision
on an approval gate).

The token is issued when ``vintage dashboard`` starts: 32 random bytes (URL-safe text) written to
``<state_dir>/dashboard/operator-token`` (0600, in a 0700 directory) and removed again when the dashboard
stops, so it is valid only while that dashboard runs. It is no scoring API key and never leaves this
machine's loopback by default. Reading it needs the deploying user's file permissions, as the state
directory does.
"""

from __future__ import annotations

import contextlib
import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from vintage.fsutil import write_private

TOKEN_FILE = Path("dashboard") / "operator-token"
TOKEN_BYTES = 32
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})


@dataclass(frozen=True)
class OperatorToken:
    """The token a decision form must carry.

    Attributes:
        value: the token text.
        holder: who was given it (the OS user or ``VINTAGE_ACTOR`` that started the dashboard): the actor
            of a decision whose form names none.
        path: the file it was written to (``None``: held only in memory, e.g. in tests).
    """

    value: str
    holder: str
    path: Path | None = None

    def matches(self, given: str | None) -> bool:
        """True when ``given`` is the token; compared in constant time."""
        if not given:
            return False
        return hmac.compare_digest(self.value.encode(), given.encode())


def issue(state_dir: Path, holder: str) -> OperatorToken:
    """A new token, written to ``<state_dir>/dashboard/operator-token`` (0600) over any earlier one."""
    from vintage.redact import register

    path = state_dir / TOKEN_FILE
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    value = secrets.token_urlsafe(TOKEN_BYTES)
    register(value)  # never shown in a log line or message of this process
    write_private(path, (value + "\n").encode())
    return OperatorToken(value, holder, path)


def revoke(token: OperatorToken) -> None:
    """Remove the token file, unless another dashboard has written its own token there since."""
    if token.path is None:
        return
    with contextlib.suppress(OSError):
        if token.path.read_text().strip() == token.value:
            token.path.unlink()


def is_loopback(host: str) -> bool:
    """True for a loopback interface name or address (``127.x.y.z``, ``::1``, ``localhost``)."""
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def allowed_hosts(host: str, port: int) -> frozenset[str] | None:
    """The ``Host`` header values the dashboard answers: its own address, and the loopback names when it
    listens on loopback (a DNS-rebinding page names another host and is refused). ``None`` (any) when it
    listens on every interface (``0.0.0.0``, ``::``): then it is reached by names it cannot know, and
    every reader was allowed in with ``--allow-network-access`` anyway."""
    if host in WILDCARD_HOSTS:
        return None
    names = {host} | (set(LOOPBACK_HOSTS) if is_loopback(host) else set())
    return frozenset(f"[{n}]:{port}" if ":" in n else f"{n}:{port}" for n in names)


def cross_origin(host_header: str, origin: str | None, fetch_site: str | None) -> str | None:
    """Why a state-changing request comes from another site (``None``: it does not).

    Browsers send ``Origin`` with every form POST, and ``Sec-Fetch-Site``; a client without them (a
    script with the token) is not a browser that another site could drive.
    """
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return f"Sec-Fetch-Site is {fetch_site}"
    if origin is None:
        return None
    parts = urlsplit(origin)
    if origin == "null" or parts.scheme != "http" or parts.netloc != host_header:
        return f"Origin {origin} is not this dashboard"
    return None
