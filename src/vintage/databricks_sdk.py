"""What vintage's two databricks-sdk users (the secret provider and the job runner) share.

Imports the SDK only when called.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from databricks.sdk import WorkspaceClient


def capped_clock(max_pause_s: float) -> Any:
    """A databricks-sdk ``Clock`` on real time whose pauses between retries never exceed ``max_pause_s``
    (the SDK otherwise waits up to 10 s per retry for up to 5 minutes)."""
    from databricks.sdk.clock import Clock

    class CappedClock(Clock):
        def time(self) -> float:
            return time.time()

        def sleep(self, seconds: float) -> None:
            time.sleep(min(seconds, max_pause_s))

    return CappedClock()


def workspace_client(
    *, http_timeout_s: float, retry_budget_s: int, max_pause_s: float, **auth: Any
) -> WorkspaceClient:
    """A databricks-sdk ``WorkspaceClient`` tagged as vintage, with a request timeout and capped retries.

    ``auth``: the SDK ``Config`` fields that say where and who (``host``, ``token``, ``auth_type``,
    ``profile``, ...).

    Raises:
        ImportError: databricks-sdk is not installed (the caller names what needed it).
        ValueError: the SDK rejected the configuration.
    """
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.config import Config

    from vintage import __version__

    config = Config(
        http_timeout_seconds=http_timeout_s,
        retry_timeout_seconds=retry_budget_s,
        clock=capped_clock(max_pause_s),
        product="vintage",
        product_version=__version__,
        **auth,
    )
    return WorkspaceClient(config=config)
