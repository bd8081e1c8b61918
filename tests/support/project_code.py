"""A throwaway project package holding a custom estimator, for the tests of code shipped with a model.

:func:`write_package` writes ``<root>/<name>/`` with ``models.py`` (``ClippedRidge``: a Ridge whose
predictions are shifted by ``OFFSET`` and clipped) and ``fns.py`` (a function for a FunctionTransformer).
A test that imports it calls :func:`forget` afterwards so no other test sees the module.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

MODELS = '''
import numpy as np
from sklearn.linear_model import Ridge

from {name}.fns import OFFSET


class ClippedRidge(Ridge):
    """Ridge, predictions shifted by OFFSET and clipped to [lo, hi]."""

    def __init__(self, alpha=1.0, lo=3.0, hi=8.0):
        super().__init__(alpha=alpha)
        self.lo = lo
        self.hi = hi

    def predict(self, X):
        return np.clip(super().predict(X) + OFFSET, self.lo, self.hi)
'''

FNS = """
import numpy as np

OFFSET = {offset!r}


def log1p_abs(x):
    return np.log1p(np.abs(x))
"""


def write_package(root: Path, name: str, offset: float = 0.25) -> Path:
    """Write the package ``name`` under ``root``; returns its directory."""
    pkg = root / name
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text('"""A project package."""\n')
    (pkg / "models.py").write_text(textwrap.dedent(MODELS.format(name=name)))
    (pkg / "fns.py").write_text(textwrap.dedent(FNS.format(offset=offset)))
    return pkg


def forget(name: str, root: Path | None = None) -> None:
    """Drop the package's modules from this process (and ``root`` from ``sys.path``)."""
    for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[module]
    if root is not None:
        while str(root) in sys.path:
            sys.path.remove(str(root))
