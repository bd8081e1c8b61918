"""The inference log: the hot path never waits (drops and counts instead), rotation, shutdown, failures."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from vintage.model.load import LoadedModel, ModelInfo
from vintage.serving.app import ScoringApp, ServeConfig
from vintage.serving.auth import ApiKeys
from vintage.serving.inference_log import META_KEY, InferenceLog, InferenceLogSettings

COLUMNS = ("a", "b")


def _model(version: str | None = "3") -> LoadedModel:
    info = ModelInfo(
        "wine", version, "run1", "models:/wine/3", "sklearn", "cloudpickle", COLUMNS, ("double",) * 2, None
    )
    return LoadedModel(info, lambda x: x[:, 0] * 10 + x[:, 1], np.array([[1.0, 2.0]]), None)


def _settings(directory: Path, **kw: Any) -> InferenceLogSettings:
    return InferenceLogSettings(directory=str(directory), **{"sample": 1.0, **kw})


def _files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.parquet"))


def test_a_full_queue_drops_and_counts_without_waiting(tmp_path: Path) -> None:
    log = InferenceLog(_settings(tmp_path, max_queue_rows=5), COLUMNS)  # writer never started: stalled
    model = _model()
    slowest = 0.0
    for i in range(12):
        t0 = time.perf_counter()
        log.offer(model, np.array([[float(i), 1.0]]), np.array([float(i)]), t0)
        slowest = max(slowest, time.perf_counter() - t0)
    assert log.queued_rows == 5
    assert log.dropped_queue_full == 7
    assert slowest < 0.01  # a deque append or a counter increment, never a wait
    # a request of more rows than there is room for is dropped whole
    log.drain(final=True)
    log.offer(model, np.ones((6, 2)), np.ones(6), time.perf_counter())
    assert (log.queued_rows, log.dropped_queue_full) == (0, 13)


def test_sampling_keeps_about_the_share_asked_for(tmp_path: Path) -> None:
    log = InferenceLog(_settings(tmp_path, sample=0.25, max_queue_rows=100_000), COLUMNS)
    model, row, pred = _model(), np.ones((1, 2)), np.ones(1)
    for _ in range(20_000):
        log.offer(model, row, pred, time.perf_counter())
    assert 4_500 < log.queued_rows < 5_500  # 5,000 expected; the bounds are > 10 standard deviations


def test_rows_rotate_into_files_with_the_contract_columns(tmp_path: Path) -> None:
    directory = tmp_path / "envs" / "staging" / "inference"
    now = [1_800_000_000.0]
    log = InferenceLog(_settings(directory, rotate_rows=3, rotate_seconds=60), COLUMNS, clock=lambda: now[0])
    log.start()
    log.close()  # the thread is not needed: drain() is driven by hand below
    model = _model()
    log.note_model("3", tmp_path / "model", "sha256:" + "0" * 64)
    for i in range(7):
        log.offer(model, np.array([[float(i), 2.0]]), np.array([i * 10 + 2.0]), time.perf_counter())
    log.drain()
    files = _files(directory)
    assert [pq.read_metadata(f).num_rows for f in files] == [3, 3]  # the 7th waits for its file to be due
    now[0] += 61
    log.drain()
    files = _files(directory)
    assert [pq.read_metadata(f).num_rows for f in files] == [3, 3, 1]
    assert all(f"-{os.getpid()}-" in f.name for f in files)  # each worker process has its own names
    table = pq.read_table(files[0])
    assert table.column_names == ["time", "model_version", "latency_ms", "prediction", "a", "b"]
    assert table.column("a").to_pylist() == [0.0, 1.0, 2.0]
    assert table.column("prediction").to_pylist() == [2.0, 12.0, 22.0]
    assert table.column("model_version").to_pylist() == [3, 3, 3]
    assert str(table.schema.field("time").type) == "timestamp[us, tz=UTC]"
    assert table.column("time")[0].as_py().timestamp() == pytest.approx(1_800_000_000.0)
    meta = json.loads(table.schema.metadata[META_KEY])
    assert meta["sample"] == 1.0
    assert meta["models"]["3"]["digest"] == "sha256:" + "0" * 64
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert {stat.S_IMODE(f.stat().st_mode) for f in files} == {0o600}
    assert log.rows_written == 7 and log.files_written == 3


def test_close_drains_the_queue_into_a_last_file(tmp_path: Path) -> None:
    log = InferenceLog(_settings(tmp_path), COLUMNS)
    log.start()
    for i in range(4):
        log.offer(_model(None), np.array([[float(i), 0.0]]), np.array([0.0]), time.perf_counter())
    log.close()
    (only,) = _files(tmp_path)
    table = pq.read_table(only)
    assert table.num_rows == 4
    assert table.column("model_version").to_pylist() == [None] * 4


def test_a_failed_write_is_counted_and_serving_goes_on(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    log = InferenceLog(_settings(blocker / "inference"), COLUMNS)  # its parent is a file: writes fail
    log.offer(_model(), np.ones((2, 2)), np.ones(2), time.perf_counter())
    log.drain(final=True)
    assert (log.dropped_write_failed, log.rows_written) == (2, 0)
    log.offer(_model(), np.ones((1, 2)), np.ones(1), time.perf_counter())
    assert log.queued_rows == 1


# -- through the ASGI app ------------------------------------------------------------------------------


async def _call(app: ScoringApp, path: str, body: bytes = b"", method: str = "POST") -> tuple[int, bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(b"content-type", b"application/json")],
    }
    await app(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_a_stalled_writer_never_delays_requests_and_drops_show_in_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = threading.Event()
    real_write = InferenceLog._write

    def stalled_write(self: InferenceLog, entries: list[Any]) -> Path:
        gate.wait(30)  # the disk hangs
        return real_write(self, entries)

    monkeypatch.setattr(InferenceLog, "_write", stalled_write)
    config = ServeConfig(
        inference_log=_settings(tmp_path, max_queue_rows=20, rotate_rows=1), warmup_predictions=1
    )
    app = ScoringApp(_model(), ApiKeys(), config)
    app.warm()
    app.start_inference_log()
    body = json.dumps({"dataframe_split": {"columns": list(COLUMNS), "data": [[1.0, 2.0]]}}).encode()

    async def traffic() -> tuple[list[int], float]:
        statuses, slowest = [], 0.0
        await asyncio.sleep(0)
        for _ in range(40):
            t0 = time.perf_counter()
            statuses.append((await _call(app, "/invocations", body))[0])
            slowest = max(slowest, time.perf_counter() - t0)
        return statuses, slowest

    statuses, first_slowest = asyncio.run(traffic())
    time.sleep(0.5)  # the writer takes the first row and hangs in its write; the queue fills up
    statuses2, slowest = asyncio.run(traffic())
    assert set(statuses + statuses2) == {200}
    assert max(first_slowest, slowest) < 0.05
    inference = app.inference
    assert inference is not None
    # the writer hangs on its first row (rotate_rows=1): at most 1 + 20 (the queue) of the 80 rows got in
    assert inference.dropped_queue_full >= 80 - 21
    assert inference.rows_written == 0
    status, metrics = asyncio.run(_call(app, "/metrics", method="GET"))
    text = metrics.decode()
    assert status == 200
    line = (
        f'vintage_inference_rows_dropped_total{{reason="queue_full"}} {float(inference.dropped_queue_full)}'
    )
    assert line in text
    gate.set()
    app.close_inference_log()
    assert inference.rows_written + inference.dropped_queue_full == 80
    assert sum(pq.read_metadata(f).num_rows for f in _files(tmp_path)) == inference.rows_written


def test_without_pyarrow_the_files_are_npz_and_read_like_parquet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The container targets' lean image has no pyarrow: the same rows go to .npz files.
    from vintage.monitoring.logfiles import read_window

    now = [1_800_000_000.0]
    rows = [np.array([[float(i), 2.0]]) for i in range(5)]

    def write(directory: Path, version: str | None) -> None:
        log = InferenceLog(_settings(directory), COLUMNS, clock=lambda: now[0])
        log.start()
        log.close()
        log.note_model(version, tmp_path / "model", "sha256:" + "1" * 64)
        model = _model(version)
        for x in rows:
            log.offer(model, x, x[:, 0] * 10 + 2.0, time.perf_counter())
        log.drain(final=True)

    write(tmp_path / "parquet", "3")
    monkeypatch.setitem(__import__("sys").modules, "pyarrow.parquet", None)  # import fails as if absent
    write(tmp_path / "npz", "3")
    write(tmp_path / "none", None)
    monkeypatch.undo()

    [npz] = (tmp_path / "npz").iterdir()
    assert npz.name.endswith(".npz") and stat.S_IMODE(npz.stat().st_mode) == 0o600
    with np.load(npz, allow_pickle=False) as z:  # plain arrays: nothing pickled
        assert list(z["columns"]) == list(COLUMNS)
    parquet, numpy = read_window(tmp_path / "parquet", None), read_window(tmp_path / "npz", None)
    assert numpy.features == parquet.features == COLUMNS
    assert numpy.frame.drop(columns="latency_ms").equals(parquet.frame.drop(columns="latency_ms"))
    assert numpy.models == parquet.models and numpy.estimated_rows == parquet.estimated_rows == 5
    assert read_window(tmp_path / "none", None).frame["model_version"].isna().all()


def test_a_small_requests_python_rows_are_written_as_the_same_numbers(tmp_path: Path) -> None:
    """parse_batch hands a small request's rows over as Python numbers (ints among them); offer turns a
    sampled one into arrays, and the file holds what the NumPy rows of a larger request would."""
    now = [1_800_000_000.0]
    log = InferenceLog(_settings(tmp_path, rotate_rows=4), COLUMNS, clock=lambda: now[0])
    model = _model()
    log.offer(model, [[1.5, 2], [3, 4.25]], [17.0, 34.25], time.perf_counter())  # rows, predictions: lists
    log.offer(model, np.array([[5.0, 6.0], [7.0, 8.0]]), np.array([56.0, 78.0]), time.perf_counter())
    assert log.queued_rows == 4
    log.drain()
    [written] = _files(tmp_path)
    table = pq.read_table(written)
    assert table.column("a").to_pylist() == [1.5, 3.0, 5.0, 7.0]
    assert table.column("b").to_pylist() == [2.0, 4.25, 6.0, 8.0]
    assert table.column("prediction").to_pylist() == [17.0, 34.25, 56.0, 78.0]
    assert table.schema.field("b").type == "double"
