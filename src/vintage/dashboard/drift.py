"""The drift page's data: the monitor's report of an environment (``vintage monitor ENV --json``'s shape),
read through :mod:`vintage.monitoring` when this build has it."""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from vintage.errors import ConfigError

if TYPE_CHECKING:
    from vintage.config import Spec

Monitor = Callable[[str, "timedelta | None"], "dict[str, Any] | None"]
"""Reads an environment's monitor report as JSON data (``None``: no monitoring in this build)."""

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str) -> timedelta | None:
    """``30m``, ``24h``, ``7d`` (or combined: ``1d12h``) as a duration; empty: ``None`` (all the log).

    Raises:
        ConfigError: not a duration.
    """
    text = text.strip().lower()
    if not text:
        return None
    parts = _DURATION.findall(text)
    if not parts or _DURATION.sub("", text).strip():
        raise ConfigError(f"not a duration: {text!r}", hint="write e.g. 30m, 24h or 7d")
    return timedelta(seconds=sum(float(n) * _UNIT_S[u] for n, u in parts))


def monitor_for(spec: Spec) -> Monitor:
    """The report reader of this build: :func:`vintage.monitoring.report` when the package exists (its
    report's ``to_json()``), else a reader that always answers ``None``."""

    def read(environment: str, since: timedelta | None) -> dict[str, Any] | None:
        try:
            monitoring = importlib.import_module("vintage.monitoring")
        except ImportError:
            return None
        report = monitoring.report(spec, environment, since)
        data = report.to_json()
        found: dict[str, Any] = json.loads(data) if isinstance(data, str | bytes) else dict(data)
        return found

    return read


def flagged_features(report: dict[str, Any]) -> list[str]:
    """The names of the flagged features (and ``prediction`` when the predictions drifted)."""
    names = [n for n, f in (report.get("features") or {}).items() if f.get("flagged")]
    if (report.get("prediction") or {}).get("flagged"):
        names.append("prediction")
    return names
