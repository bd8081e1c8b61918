"""The UCI wine-quality data set shipped inside the package (see wine_quality/README.md for the citation)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

PACKAGED = {"red": "winequality-red.csv", "white": "winequality-white.csv"}


def packaged_path(name: str) -> Path:
    """Path of a packaged data file (``red`` or ``white``)."""
    ref = resources.files("vintage.data") / "wine_quality" / PACKAGED[name]
    return Path(str(ref))
