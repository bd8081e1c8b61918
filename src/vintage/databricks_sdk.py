"""What vintage's two databricks-sdk users (the secret provider and the job runner) share.

Imports the SDK only when called.
"""

from __future__ import annotations

import time
from typing import Any


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
