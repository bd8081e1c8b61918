"""The monitor report from log files: the time window, the JSON shape, the HTML page, durations."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vintage.errors import ConfigError, MonitoringError
from vintage.model.load import LoadedModel, ModelInfo
from vintage.monitoring import parse_duration
from vintage.monitoring.html import render
from vintage.monitoring.logfiles import read_window
from vintage.monitoring.report import build_report
from vintage.monitoring.stats import Thresholds
from vintage.serving.inference_log import InferenceLog, InferenceLogSettings

COLUMNS = ("alcohol", "pH")
FEATURE_KEYS = {
    "psi", "ks_stat", "ks_p", "missing_rate", "out_of_range_rate", "flagged", "reasons", "bins",
    "train_share", "recent_share",
}  # fmt: skip


def _model(version: str) -> LoadedModel:
    info = ModelInfo("wine", version, "r", "m", "sklearn", "cloudpickle", COLUMNS, ("double",) * 2, None)
    return LoadedModel(info, lambda x: x[:, 0] * 0.5, None, None)


def _write(directory: Path, rows: np.ndarray, at: float, version: str = "2", sample: float = 1.0) -> None:
    """Log ``rows`` as requests of one row each, at wall time ``at``, into one file."""
    log = InferenceLog(
        InferenceLogSettings(str(directory), sample=1.0, max_queue_rows=10**6, rotate_rows=10**6),
        COLUMNS,
        clock=lambda: at,
    )
    log.sample = sample  # what the file records ...
    log._random = lambda: 0.0  # ... while every offered row is kept
    log.directory.mkdir(parents=True, exist_ok=True)
    model = _model(version)
    for row in rows:
        log.offer(model, row.reshape(1, -1), model.predict(row.reshape(1, -1)), time.perf_counter())
    log.drain(final=True)


def _train(rng: np.random.Generator) -> pd.DataFrame:
    return pd.DataFrame({"alcohol": rng.normal(10.4, 1.0, 1200), "pH": rng.normal(3.3, 0.15, 1200)})


def test_the_window_reads_only_recent_rows_and_estimates_volume(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    now = time.time()
    _write(tmp_path, np.column_stack([rng.normal(10.4, 1, 50), rng.normal(3.3, 0.15, 50)]), now - 7200)
    old = sorted(tmp_path.glob("*.parquet"))[0]
    os.utime(old, (now - 7200, now - 7200))
    _write(
        tmp_path, np.column_stack([rng.normal(10.4, 1, 30), rng.normal(3.3, 0.15, 30)]), now - 60, sample=0.1
    )
    whole = read_window(tmp_path, None)
    assert len(whole.frame) == 80 and whole.files == 2
    assert whole.estimated_rows == 50 + 300  # each row of the 0.1 sample stands for ten
    recent = read_window(tmp_path, datetime.now(UTC) - timedelta(hours=1))
    assert len(recent.frame) == 30 and recent.estimated_rows == 300
    assert recent.features == COLUMNS
    with pytest.raises(MonitoringError, match="no rows since"):
        read_window(tmp_path, datetime.now(UTC) + timedelta(hours=1))


def test_no_log_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MonitoringError, match="no inference log") as info:
        read_window(tmp_path / "envs" / "staging" / "inference", None)
    assert info.value.exit_code == 1 and info.value.hint


def test_a_shifted_feature_is_the_worst_and_the_json_has_the_shared_shape(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    train = _train(rng)
    shifted = np.column_stack([rng.normal(13.4, 1.0, 400), rng.normal(3.3, 0.15, 400)])  # alcohol + 3
    _write(tmp_path, shifted, time.time() - 5)
    logged = read_window(tmp_path, None)
    reference = train["alcohol"].to_numpy() * 0.5
    result = build_report("staging", None, logged, train, reference, Thresholds(), dataset="wine (abc)")
    assert result.flagged
    worst = result.worst()
    assert worst is not None and worst[0] == "alcohol"
    assert not result.features["pH"].flagged
    assert result.prediction.flagged  # the model's prediction follows alcohol
    doc = json.loads(result.to_json())
    assert set(doc) == {
        "environment", "since", "rows", "sampled_rows", "model_versions", "window", "latency_ms", "features",
        "prediction", "thresholds", "flagged",
    }  # fmt: skip
    assert doc["environment"] == "staging" and doc["since"] is None
    assert doc["rows"] == doc["sampled_rows"] == 400
    assert doc["model_versions"] == [2]
    assert set(doc["window"]) == {"start", "end"} and doc["window"]["start"].endswith("Z")
    assert set(doc["latency_ms"]) == {"p50", "p95", "p99"}
    assert doc["latency_ms"]["p50"] <= doc["latency_ms"]["p95"] <= doc["latency_ms"]["p99"]
    assert list(doc["features"]) == list(COLUMNS)
    assert all(set(f) == FEATURE_KEYS for f in [*doc["features"].values(), doc["prediction"]])
    assert set(doc["thresholds"]) == {"psi", "ks_p", "missing_rate", "out_of_range_rate"}
    assert doc["flagged"] is True


def test_an_unshifted_sample_is_not_flagged(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    train = _train(rng)
    same = np.column_stack([rng.normal(10.4, 1.0, 400), rng.normal(3.3, 0.15, 400)])
    _write(tmp_path, same, time.time() - 5)
    result = build_report(
        "staging", None, read_window(tmp_path, None), train, train["alcohol"].to_numpy() * 0.5, Thresholds()
    )
    assert not result.flagged and result.worst() is None


def test_the_html_page_is_self_contained(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    train = _train(rng)
    _write(tmp_path, np.column_stack([rng.normal(13.4, 1, 200), rng.normal(3.3, 0.15, 200)]), time.time())
    result = build_report(
        "production",
        None,
        read_window(tmp_path, None),
        train,
        train["alcohol"].to_numpy() * 0.5,
        Thresholds(),
    )
    page = render(result)
    assert page.count('src="data:image/png;base64,') == len(COLUMNS) + 1 + 2  # columns, prediction, traffic
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert "drift: alcohol" in page


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("2h", 7200), ("7d", 604_800), ("1w", 604_800), ("1h30m", 5400)],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "10", "h", "1x", "-1h", "0s", "1h 2"])
def test_bad_durations_are_usage_errors(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_duration(text)
    assert info.value.exit_code == 2
