"""``vintage monitor``'s report: an environment's recent traffic against the data its model was trained on.

The reference is the training part of vintage.yaml's data, split exactly as training splits it
(``data.split.test_size`` and ``seed``): the rows the served version learnt from, as long as the data set
has not changed since (the report names the data set's digest, comparable with the training run's). The
predictions are compared with the model's own predictions on those rows; the model is the newest version
in the window, loaded from the directory the server recorded in the log (its digest checked first).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vintage.errors import ConfigError, MonitoringError, VintageError
from vintage.monitoring.logfiles import LogWindow, read_window
from vintage.monitoring.stats import ColumnDrift, Thresholds, compare
from vintage.serving.inference_log import log_dir

if TYPE_CHECKING:
    import pandas as pd

    from vintage.config import Spec

PREDICTION = "prediction"
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(w|d|h|m|s)", re.IGNORECASE)
_UNIT_S = {"w": 604_800, "d": 86_400, "h": 3_600, "m": 60, "s": 1}


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``2h``, ``7d``, ``1w``, or sums of them (``1h30m``).

    Raises:
        ConfigError: anything else, or a zero duration.
    """
    compact = text.strip().replace(" ", "")
    parts = _DURATION.findall(compact)
    if not compact or "".join(f"{n}{u}" for n, u in parts).lower() != compact.lower():
        raise ConfigError(
            f"--since {text!r} is not a duration",
            hint="write a number and a unit: 90s, 15m, 2h, 7d, 1w (or 1h30m)",
        )
    seconds = sum(float(n) * _UNIT_S[u.lower()] for n, u in parts)
    if seconds <= 0:
        raise ConfigError(f"--since {text!r} is not a positive duration", hint="for example --since 1h")
    return timedelta(seconds=seconds)


@dataclass
class MonitorReport:
    """What ``vintage monitor ENV`` reports (:meth:`to_dict` is the ``--json`` shape).

    Attributes:
        environment: The environment.
        since: Start of the window asked for (``None``: the whole log).
        rows: Rows the environment scored in the window (estimated from the sample).
        sampled_rows: Rows of the log in the window (those compared).
        model_versions: Model versions in the window.
        window: First and last logged row's time.
        latency_ms: Percentiles p50, p95, p99 of the logged requests' latency.
        features: Drift of each feature.
        prediction: Drift of the predictions.
        thresholds: The thresholds judged against.
        dataset: The reference data set and its digest (not in the JSON: shown to people).
        min_rows: Fewest rows for PSI and KS to be judged (not in the JSON).
    """

    environment: str
    since: datetime | None
    rows: int
    sampled_rows: int
    model_versions: list[int]
    window: tuple[datetime, datetime]
    latency_ms: dict[str, float]
    features: dict[str, ColumnDrift]
    prediction: ColumnDrift
    thresholds: Thresholds
    dataset: str = ""
    latency_sample: list[float] = field(default_factory=list, repr=False)
    times: list[float] = field(default_factory=list, repr=False)

    @property
    def flagged(self) -> bool:
        """Whether any feature or the predictions crossed a threshold."""
        return self.prediction.flagged or any(f.flagged for f in self.features.values())

    @property
    def judged(self) -> bool:
        """Whether there were enough rows to judge PSI and KS."""
        return self.sampled_rows >= self.thresholds.min_rows

    def worst(self) -> tuple[str, ColumnDrift] | None:
        """The flagged column furthest past its thresholds (``None`` when nothing is flagged)."""
        flagged = [(n, d) for n, d in self.columns().items() if d.flagged]
        return max(flagged, key=lambda item: item[1].severity, default=None)

    def columns(self) -> dict[str, ColumnDrift]:
        """Every feature, then the predictions."""
        return {**self.features, PREDICTION: self.prediction}

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape (``vintage monitor ENV --json``)."""
        t = self.thresholds
        return {
            "environment": self.environment,
            "since": iso_utc(self.since) if self.since else None,
            "rows": self.rows,
            "sampled_rows": self.sampled_rows,
            "model_versions": list(self.model_versions),
            "window": {"start": iso_utc(self.window[0]), "end": iso_utc(self.window[1])},
            "latency_ms": dict(self.latency_ms),
            "features": {name: drift.to_dict() for name, drift in self.features.items()},
            "prediction": self.prediction.to_dict(),
            "thresholds": {
                "psi": t.psi,
                "ks_p": t.ks_p,
                "missing_rate": t.missing_rate,
                "out_of_range_rate": t.out_of_range_rate,
            },
            "flagged": self.flagged,
        }

    def to_json(self) -> str:
        """:meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict(), indent=2)


def report(spec: Spec, environment: str, since: timedelta | None = None) -> MonitorReport:
    """Compare the environment's logged traffic of the last ``since`` (all of it when ``None``) with the
    training data.

    Raises:
        ConfigError: vintage.yaml has no such environment.
        MonitoringError: no log (or no row in the window) yet, the environment's target writes no log,
            or the model recorded in the log cannot be loaded.
        DataError: the training data cannot be read.
    """
    if environment not in spec.environments:
        raise ConfigError(
            f"no environment {environment!r}; environments: {', '.join(spec.environments)}",
            hint="environments come from `environments` in vintage.yaml (`vintage config show`)",
        )
    env = spec.environments[environment]
    directory = log_dir(spec.state_dir.resolve(), environment)
    if env.target not in ("local", "container") and not directory.is_dir():
        raise MonitoringError(
            f"{environment} is served by the {env.target} target, which writes no inference log yet",
            hint="the local and container targets and `vintage serve -e ENV` record requests so far",
        )
    start = datetime.now(UTC) - since if since is not None else None
    logged = read_window(directory, start)
    train, digest = _training_frame(spec, logged.features)
    reference_pred = _reference_predictions(logged, train, spec.state_dir.resolve() / "models")
    thresholds = Thresholds(
        psi=spec.monitoring.psi,
        ks_p=spec.monitoring.ks_p,
        missing_rate=spec.monitoring.missing_rate,
        out_of_range_rate=spec.monitoring.out_of_range_rate,
        min_rows=spec.monitoring.min_rows,
    )
    return build_report(
        environment, start, logged, train, reference_pred, thresholds, spec.monitoring.bins, digest
    )


def build_report(
    environment: str,
    since: datetime | None,
    logged: LogWindow,
    train: pd.DataFrame,
    reference_pred: np.ndarray[Any, np.dtype[np.float64]],
    thresholds: Thresholds,
    bins: int = 10,
    dataset: str = "",
) -> MonitorReport:
    """The report of ``logged`` rows against ``train`` (features) and ``reference_pred`` (predictions)."""
    frame = logged.frame
    features = {
        name: compare(
            train[name].to_numpy(np.float64),
            frame[name].to_numpy(np.float64, na_value=np.nan),
            thresholds,
            bins,
        )
        for name in logged.features
    }
    prediction = compare(
        reference_pred, frame[PREDICTION].to_numpy(np.float64, na_value=np.nan), thresholds, bins
    )
    latency = frame["latency_ms"].to_numpy(np.float64)
    p50, p95, p99 = (float(v) for v in np.percentile(latency, [50, 95, 99]))
    versions = sorted({int(v) for v in frame["model_version"].dropna()})
    times = frame["time"]
    return MonitorReport(
        environment=environment,
        since=since,
        rows=logged.estimated_rows,
        sampled_rows=len(frame),
        model_versions=versions,
        window=(times.iloc[0].to_pydatetime(), times.iloc[-1].to_pydatetime()),
        latency_ms={"p50": p50, "p95": p95, "p99": p99},
        features=features,
        prediction=prediction,
        thresholds=thresholds,
        dataset=dataset,
        latency_sample=latency.tolist(),
        times=[t.timestamp() for t in times],
    )


def _training_frame(spec: Spec, features: tuple[str, ...]) -> tuple[pd.DataFrame, str]:
    """The training part of vintage.yaml's data, split as training splits it, and the data's name+digest."""
    from vintage.data.load import load_dataset

    dataset = load_dataset(spec.data)
    missing = [f for f in features if f not in dataset.features]
    if missing:
        raise MonitoringError(
            f"the inference log's feature {missing[0]!r} is not a feature of the data in vintage.yaml",
            hint="monitor with the vintage.yaml the environment's model was trained from",
        )
    split = spec.data.split
    train, _ = dataset.split(split.test_size, split.seed, group_duplicates=split.group_duplicates)
    return train, f"{dataset.source} ({dataset.digest})"


def _reference_predictions(
    logged: LogWindow, train: pd.DataFrame, store: Path
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """The newest logged model version's predictions on the training rows."""
    from vintage.model import digest as model_digest
    from vintage.model.load import load_model_dir

    versions = logged.frame["model_version"].dropna()
    key = str(int(versions.max())) if len(versions) else "None"
    where = logged.models.get(key) or {}
    path = where.get("dir")
    if (not path or not Path(path).is_dir()) and where.get("digest"):
        # a path in a container's file system: the same files, materialised here, by their digest
        path = _materialised(store, str(where["digest"])) or path
    if not path or not Path(path).is_dir():
        raise MonitoringError(
            f"the directory of model version {key} (recorded in the inference log) is gone: {path or 'none'}",
            hint="the predictions are compared with that model's predictions on the training data; "
            "re-deploy it, or monitor a window (--since) in which a model still present served",
        )
    try:
        if where.get("digest"):
            model_digest.verify(Path(path), str(where["digest"]))
        model = load_model_dir(Path(path))
        x = train[list(model.info.columns)].to_numpy(np.float64)
        return np.asarray(model.predict(x), dtype=np.float64)
    except (VintageError, KeyError, ValueError) as exc:
        raise MonitoringError(
            f"cannot predict the training data with model version {key}: {exc}",
            hint="the model's directory changed since it was served; re-deploy it",
        ) from exc


def _materialised(store: Path, digest: str) -> str | None:
    """A model directory of the state's model store whose manifest records ``digest`` (checked again, from
    the files, before use)."""
    from vintage.model.digest import MANIFEST, recorded

    if not store.is_dir():
        return None
    for manifest in sorted(store.glob(f"*/{MANIFEST}")):
        if recorded(manifest.parent) == digest:
            return str(manifest.parent)
    return None


def iso_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
