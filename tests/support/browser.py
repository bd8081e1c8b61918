"""The system's headless chromium driven by Playwright, kept on loopback.

Playwright never downloads a browser here: it launches the executable Debian installs (``apt-get install
chromium``, done by ``scripts/install-system-deps.sh``). Every request a page makes is checked: one to
anything but 127.0.0.1 is aborted and remembered, so a test can assert that a page needs nothing else.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Route

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")

CANDIDATES = ("/usr/lib/chromium/chromium", "chromium", "chromium-browser")
# The browser's own name lookups go nowhere: only loopback is reachable, whatever a page asks for.
ARGS = [
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-domain-reliability",
    "--no-first-run",
    "--disable-dev-shm-usage",
]


class BrowserMissingError(RuntimeError):
    """No system chromium."""


def chromium_executable() -> str:
    """The system chromium's executable (the binary itself when Debian's wrapper script is there)."""
    for name in CANDIDATES:
        found = name if Path(name).is_absolute() and os.access(name, os.X_OK) else shutil.which(name)
        if found:
            return found
    raise BrowserMissingError(
        "no chromium on this machine: `make system-deps` installs it (apt-get install chromium)"
    )


@dataclass
class Session:
    """One browser context: its page, and the requests it tried to send off the machine."""

    page: Page
    offsite: list[str] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless system chromium (closed afterwards)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_executable(), headless=True, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def session(browser: Browser, width: int = 1280, height: int = 860) -> Iterator[Session]:
    """A fresh context whose page may reach 127.0.0.1 only (other requests are aborted and listed)."""
    context = browser.new_context(viewport={"width": width, "height": height}, service_workers="block")
    page = context.new_page()
    found = Session(page)

    def guard(route: Route) -> None:
        url = route.request.url
        parts = urlsplit(url)
        if parts.scheme in ("data", "about", "blob") or parts.hostname == "127.0.0.1":
            route.continue_()
            return
        found.offsite.append(url)
        route.abort()

    def answered(response: Any) -> None:
        found.statuses[response.url] = response.status

    context.route("**/*", guard)
    page.on("response", answered)
    try:
        yield found
    finally:
        context.close()
