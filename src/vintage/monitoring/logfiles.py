"""Read an environment's inference log (the Parquet files :mod:`vintage.serving.inference_log` writes, or
the ``.npz`` files of a server without pyarrow: the container targets' lean image)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vintage.errors import MonitoringError
from vintage.extras import require
from vintage.serving.inference_log import FIXED_COLUMNS, META_KEY, NPZ_SUFFIX, SUFFIXES

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


@dataclass
class LogWindow:
    """The logged rows of a time window, and what the files say about them.

    Attributes:
        frame: One row per logged row: ``time`` (UTC), ``model_version``, ``latency_ms``, ``prediction``,
            then the features.
        features: The feature columns, in the model's order.
        estimated_rows: Rows scored in the window, estimated from the sampled rows (each counts
            ``1 / sample``) and the rows the server dropped (counted for files inside the window).
        models: Each model version's directory and digest, as the newest file naming it recorded them.
        files: Files read.
    """

    frame: pd.DataFrame
    features: tuple[str, ...]
    estimated_rows: int
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: int = 0


def log_files(directory: Path) -> list[Path]:
    """The finished log files, oldest first (temp files of a writer at work are not listed)."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.name.endswith(SUFFIXES) and not p.name.startswith("."))


def read_window(directory: Path, since: datetime | None) -> LogWindow:
    """Read the rows logged at or after ``since`` (all rows when ``None``).

    A file that cannot be read is skipped with a warning (the others still count).

    Raises:
        MonitoringError: no log file, no row in the window, or files whose feature columns disagree.
    """
    import pandas as pd

    files = log_files(directory)
    if not files:
        raise MonitoringError(
            f"no inference log in {directory} yet",
            hint="deploy the environment (the local or container target) or `vintage serve -e ENV`, with "
            "environments.<env>.inference_log.sample above 0, and send it requests; files appear after "
            "rotate_seconds (or when the server stops)",
        )
    cutoff = since.timestamp() if since is not None else None
    frames: list[pd.DataFrame] = []
    features: tuple[str, ...] | None = None
    estimate = 0.0
    models: dict[str, dict[str, Any]] = {}
    read = 0
    for path in files:
        try:
            if cutoff is not None and path.stat().st_mtime < cutoff:
                continue  # written before the window opened: every row in it is older
            frame, meta = _read(path)
        except (OSError, ValueError, KeyError) as exc:  # pyarrow's errors are ValueError or OSError
            log.warning("skipped unreadable inference log file %s: %s", path.name, exc)
            continue
        columns = tuple(c for c in frame.columns if c not in FIXED_COLUMNS)
        if features is None:
            features = columns
        elif columns != features:
            raise MonitoringError(
                f"the inference log's files have different feature columns "
                f"({path.name}: {', '.join(columns)})",
                hint="the environment served models with other inputs; move the older files away",
            )
        total = len(frame)
        if cutoff is not None:
            frame = frame[frame["time"] >= pd.Timestamp(cutoff, unit="s", tz="UTC")]
        read += 1
        if frame.empty:
            continue
        sample = float(meta.get("sample") or 1.0)
        dropped = int(meta.get("dropped") or 0) if len(frame) == total else 0
        estimate += (len(frame) + dropped) / sample
        models.update(meta.get("models") or {})
        frames.append(frame)
    if not frames or features is None:
        when = f" since {since.isoformat(timespec='seconds')}" if since else ""
        raise MonitoringError(
            f"the inference log in {directory} has no rows{when}",
            hint="widen --since, or send the environment requests",
        )
    frame = pd.concat(frames, ignore_index=True).sort_values("time", kind="stable", ignore_index=True)
    return LogWindow(frame, features, round(estimate), models, read)


def _read(path: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One file's rows and its metadata."""
    if path.name.endswith(NPZ_SUFFIX):
        return _read_npz(path)
    require("scoring", f"reading the Parquet inference log {path.name}")
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    return table.to_pandas(), _meta(table.schema.metadata)


def _read_npz(path: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """An ``.npz`` file as the frame its Parquet twin would give (no pickled objects are loaded)."""
    import numpy as np
    import pandas as pd

    with np.load(path, allow_pickle=False) as z:
        versions = z["model_version"]
        frame = pd.DataFrame(
            {
                "time": pd.to_datetime(z["time_us"], unit="us", utc=True).as_unit("us"),
                "model_version": versions if np.isnan(versions).any() else versions.astype(np.int64),
                "latency_ms": z["latency_ms"],
                "prediction": z["prediction"],
            }
        )
        x = z["x"]
        names = [str(c) for c in z["columns"]]
        if x.ndim != 2 or x.shape != (len(frame), len(names)):
            raise ValueError(
                f"feature matrix of shape {x.shape} for {len(frame)} rows of {len(names)} columns"
            )
        features = pd.DataFrame(x, columns=names)
        meta = _meta({META_KEY: str(z["meta"]).encode()})
    return pd.concat([frame, features], axis=1), meta


def _meta(raw: dict[bytes, bytes] | None) -> dict[str, Any]:
    if not raw or META_KEY not in raw:
        return {}
    try:
        value = json.loads(raw[META_KEY])
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
