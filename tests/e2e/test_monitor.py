"""The inference log and `vintage monitor` end to end: a real pipeline deploys staging (two server workers)
with the log on (its smoke test's rows are the first logged); real HTTP requests carry the data set's
holdout rows, then the same rows with alcohol + 3; `vintage monitor` passes the first window (exit 0) and
flags the second (exit 4, naming alcohol); a stop drains every row still in memory to disk."""

from __future__ import annotations

import http.client
import json
import math
import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from support.scoring import free_port

REPO = Path(__file__).resolve().parents[2]
VINTAGE = str(Path(sys.executable).with_name("vintage"))

pytestmark = pytest.mark.slow
GAP_S = 15  # between the unshifted and the shifted requests
SLACK_S = 10  # more than `vintage monitor` takes to start, less than GAP_S


def _dashboard_shows_the_drift(root: Path, since: str, n_features: int) -> None:
    """The dashboard's drift page, on the monitor's real report of the same window: alcohol and the
    predictions flagged, one histogram per feature and one for the predictions."""
    from support.asgi import call
    from vintage.config import load_spec
    from vintage.dashboard.app import create_app
    from vintage.dashboard.guard import OperatorToken

    here = Path.cwd()
    os.chdir(root)  # state_dir is relative to the working directory, as for the command
    try:
        app = create_app(
            load_spec(root / "vintage.yaml"),
            OperatorToken("t" * 32, "operator"),
            host="127.0.0.1",
            port=8090,
            mlflow_base="http://127.0.0.1:5000",
        )
        page = call(app, "GET", f"/drift/staging?since={since}")
    finally:
        os.chdir(here)
    assert page.status == 200, page.text[:500]
    flagged = set(re.findall(r'<g class="flagged" data-name="([^"]+)"', page.text))
    assert flagged == {"alcohol", "prediction"}, flagged
    assert page.text.count('<svg class="hist"') == n_features + 1


def _vintage(root: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [VINTAGE, *args], cwd=root, capture_output=True, text=True, timeout=timeout, env=dict(os.environ)
    )


def _holdout() -> tuple[list[str], list[list[float]]]:
    from vintage.config import load_spec
    from vintage.data.load import load_dataset

    spec = load_spec(REPO / "vintage.yaml")
    _, holdout = load_dataset(spec.data).split(
        spec.data.split.test_size, spec.data.split.seed, group_duplicates=spec.data.split.group_duplicates
    )
    columns = list(spec.data.features)
    return columns, holdout[columns].to_numpy().tolist()


def _send(port: int, columns: list[str], rows: list[list[float]], connections: int = 8) -> None:
    """One request per row, over ``connections`` keep-alive connections in turn (the kernel spreads
    connections over the workers at random: with 8 per call, both workers get some); every answer must be
    200."""
    conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=30) for _ in range(connections)]
    try:
        for i, row in enumerate(rows):
            conn = conns[i % connections]
            body = json.dumps({"dataframe_split": {"columns": columns, "data": [row]}})
            conn.request("POST", "/invocations", body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            assert resp.status == 200, resp.read()
            resp.read()
    finally:
        for conn in conns:
            conn.close()


def _logged_rows(directory: Path) -> int:
    return sum(pq.read_metadata(f).num_rows for f in directory.glob("*.parquet"))


def _wait_rows(directory: Path, expected: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while _logged_rows(directory) < expected and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _logged_rows(directory) == expected


def test_a_shifted_sample_is_flagged_and_an_unshifted_one_is_not(tmp_path: Path) -> None:
    spec = yaml.safe_load((REPO / "vintage.yaml").read_text())
    port = free_port()
    spec["environments"] = {
        "staging": {
            "port": port,
            "workers": 2,
            "inference_log": {"sample": 1.0, "rotate_seconds": 1},
        },
        "production": {"port": free_port(), "api_keys": True},
    }
    (tmp_path / "vintage.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    for stage in ("build", "staging"):
        res = _vintage(tmp_path, "stage", stage, "--run-id", "r1", "--auto-approve")
        assert res.returncode == 0, res.stdout + res.stderr
    log_dir = tmp_path / ".vintage" / "envs" / "staging" / "inference"
    try:
        # the staging stage's smoke test scored the data set's first rows: logged like any traffic
        from vintage.config.models import PipelineSpec

        smoke = PipelineSpec().smoke_rows
        _wait_rows(log_dir, smoke)
        time.sleep(3)
        res = _vintage(tmp_path, "monitor", "staging", "--since", "2s")
        assert res.returncode == 1 and "no rows since" in res.stderr, res.stderr

        columns, rows = _holdout()
        _send(port, columns, rows)
        _wait_rows(log_dir, smoke + len(rows))
        res = _vintage(tmp_path, "monitor", "staging", "--json", "--html", "same.html")
        assert res.returncode == 0, res.stdout + res.stderr
        same = json.loads(res.stdout)
        assert same["flagged"] is False
        assert same["sampled_rows"] == same["rows"] == len(rows) + smoke
        assert same["model_versions"] == [1]
        assert 0 < same["latency_ms"]["p50"] <= same["latency_ms"]["p99"]
        assert same["prediction"]["flagged"] is False

        time.sleep(GAP_S)  # the shifted window starts well after the last unshifted row
        shifted_from = time.time()
        alcohol = columns.index("alcohol")
        shifted = [[v + 3.0 if j == alcohol else v for j, v in enumerate(row)] for row in rows]
        _send(port, columns, shifted)
        _wait_rows(log_dir, smoke + 2 * len(rows))

        def since() -> str:
            # the window opens SLACK_S before the first shifted row, less the monitor's own start-up time
            # (the command measures from its own clock): none of the unshifted rows, GAP_S before, are in it
            return f"{math.ceil(time.time() - shifted_from) + SLACK_S}s"

        res = _vintage(tmp_path, "monitor", "staging", "--since", since(), "--html", "shifted.html")
        assert res.returncode == 4, res.stdout + res.stderr
        headline = res.stderr.strip().splitlines()[0]
        assert headline.startswith("drift: staging: alcohol drifted (PSI"), headline
        res = _vintage(tmp_path, "monitor", "staging", "--since", since(), "--json")
        assert res.returncode == 4
        drift = json.loads(res.stdout)
        assert drift["sampled_rows"] == len(rows)  # only the shifted window
        flagged = {name for name, f in drift["features"].items() if f["flagged"]}
        assert flagged == {"alcohol"}
        assert drift["prediction"]["flagged"] is True  # the model weighs alcohol
        page = (tmp_path / "shifted.html").read_text()
        assert "drift: alcohol" in page and "data:image/png;base64," in page
        _dashboard_shows_the_drift(tmp_path, since(), len(columns))

        metrics = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        metrics.request("GET", "/metrics")
        text = metrics.getresponse().read().decode()
        metrics.close()
        assert 'vintage_inference_rows_dropped_total{reason="queue_full"} 0.0' in text

        # a stop drains what the workers still hold: every row sent is on disk afterwards
        _send(port, columns, rows[:50])
    finally:
        stopped = _vintage(tmp_path, "stop", "staging")
    assert stopped.returncode == 0, stopped.stderr
    assert _logged_rows(log_dir) == smoke + 2 * len(rows) + 50
    files = list(log_dir.glob("*.parquet"))
    assert len({f.name.split("-")[1] for f in files}) == 2  # each worker process wrote its own files
    assert stat.S_IMODE(log_dir.stat().st_mode) == 0o700
    assert {stat.S_IMODE(f.stat().st_mode) for f in files} == {0o600}
    assert not list(log_dir.glob(".*"))  # no temp file left behind
