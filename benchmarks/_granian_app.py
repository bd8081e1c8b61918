"""Granian factory for ``benchmarks/serving.py``: the vintage scoring app, built as ``python -m
vintage.serving`` builds it, from the model directory in ``$VINTAGE_MODEL_DIR``, without API keys.

``granian --interface asgi --factory --working-dir benchmarks _granian_app:build``
"""

from __future__ import annotations

import os
from pathlib import Path

from vintage.serving.app import ScoringApp, ServeConfig
from vintage.serving.auth import ApiKeys
from vintage.serving.server import build_app


def build() -> ScoringApp:
    """Load, validate and warm the model (ready when this returns), as ``vintage.serving.server.serve``."""
    return build_app(Path(os.environ["VINTAGE_MODEL_DIR"]), ApiKeys(), ServeConfig())
