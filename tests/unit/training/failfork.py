"""A test-only estimator module whose import makes the *first* ``fork()`` after the first one fail once
(EAGAIN, as when the machine is out of processes) in the process that imports it.

Never import it in the pytest process. Preloaded by the forkserver (the executor preloads estimator
modules), it makes the forkserver die the way a real failed ``fork()`` does: it raises in its accept loop
and exits. ``FAILFORK_FLAG`` names a file
created when the failure has happened, so a replacement forkserver works.
"""

from __future__ import annotations

import os
from pathlib import Path

from sklearn.linear_model import ElasticNet

_real_fork = os.fork
_forks = 0


def _fork() -> int:
    global _forks
    _forks += 1
    flag = os.environ.get("FAILFORK_FLAG")
    if _forks == 2 and flag and not Path(flag).exists():
        Path(flag).touch()
        raise BlockingIOError(11, "Resource temporarily unavailable")
    return _real_fork()


os.fork = _fork


class ElasticNetOnce(ElasticNet):
    """ElasticNet, importable from this module (so the forkserver preloads it)."""
