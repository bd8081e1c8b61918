"""`vintage serve` as a real process: MLflow parity, every format, every error, auth, swap, shutdown."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from support.scoring import scoring_server
from vintage.config import WINE_FEATURES
from vintage.errors import ServingError
from vintage.model.digest import recorded, write_manifest

REPO = Path(__file__).resolve().parents[2]
VINTAGE = str(Path(sys.executable).parent / "vintage")
FEATURES = list(WINE_FEATURES)
KEY1 = "k1-" + "a" * 30
KEY2 = "k2-" + "b" * 30


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Two registered versions of winequality (ElasticNet, then RandomForest), materialised locally."""
    proj = tmp_path_factory.mktemp("serve-project")
    shutil.copy(REPO / "vintage.yaml", proj / "vintage.yaml")
    env_run = {"cwd": proj, "check": True, "capture_output": True}
    subprocess.run([VINTAGE, "train"], **env_run)  # type: ignore[call-overload]
    spec = yaml.safe_load((proj / "vintage.yaml").read_text())
    spec["estimator"] = {
        "class": "sklearn.ensemble.RandomForestRegressor",
        "params": {"n_estimators": 20},
        "grid": [{}],
    }
    (proj / "vintage.yaml").write_text(yaml.safe_dump(spec))
    subprocess.run([VINTAGE, "train"], **env_run)  # type: ignore[call-overload]
    from vintage.model.materialize import materialize

    uri = f"sqlite:///{proj / '.vintage' / 'mlflow.db'}"
    v1 = materialize("models:/winequality/1", proj / "models", tracking_uri=uri)
    v2 = materialize("models:/winequality/2", proj / "models", tracking_uri=uri)
    return {"project": proj, "uri": uri, "v1": v1, "v2": v2}


@pytest.fixture(scope="module")
def wine() -> pd.DataFrame:
    return pd.read_csv(REPO / "src/vintage/data/wine_quality/winequality-red.csv", sep=";")[FEATURES]


@pytest.fixture(scope="module")
def server(registry, tmp_path_factory):
    with scoring_server(registry["v1"], tmp_path_factory.mktemp("logs")) as srv:
        yield srv


def mlflow_predict(model_dir: Path, rows: pd.DataFrame) -> list[float]:
    import mlflow.pyfunc

    return [float(v) for v in mlflow.pyfunc.load_model(str(model_dir)).predict(rows)]


def test_predictions_match_mlflow_for_every_format(server, registry, wine):
    rows = wine.head(10)
    expected = mlflow_predict(registry["v1"], rows)
    shuffled = rows[list(reversed(FEATURES))]  # column order may differ from training
    split = json.loads(shuffled.to_json(orient="split"))
    bodies = {
        "dataframe_split": {"dataframe_split": split},
        "dataframe_records": {"dataframe_records": json.loads(shuffled.to_json(orient="records"))},
        "instances": {"instances": json.loads(shuffled.to_json(orient="records"))},
        "inputs-columnar": {"inputs": {c: rows[c].tolist() for c in reversed(FEATURES)}},
        "bare-split": {k: v for k, v in split.items() if k != "index"},
    }
    for name, body in bodies.items():
        resp = server.post_json(body)
        assert resp.status == 200, (name, resp.body)
        assert np.allclose(resp.json()["predictions"], expected, rtol=1e-12), name
    csv = server.request("POST", "/invocations", shuffled.to_csv(index=False), {"Content-Type": "text/csv"})
    assert csv.status == 200 and np.allclose(csv.json()["predictions"], expected, rtol=1e-12)


@pytest.mark.parametrize(
    ("body", "status", "code", "needle"),
    [
        (
            {"dataframe_split": {"columns": FEATURES[:-1], "data": [[1.0] * 10]}},
            400,
            "missing_columns",
            "alcohol",
        ),
        (
            {"dataframe_split": {"columns": [*FEATURES, "colour"], "data": [[1.0] * 12]}},
            400,
            "unknown_columns",
            "colour",
        ),
        (
            {"dataframe_records": [dict.fromkeys(FEATURES, 1.0) | {"pH": "acid" * 5000}]},
            400,
            "non_numeric",
            "pH",
        ),
        ({"dataframe_split": {"columns": FEATURES, "data": []}}, 400, "empty", ""),
        ({"dataframe_split": {"columns": FEATURES, "data": [1, 2]}}, 400, "bad_format", ""),
        ({"something": []}, 400, "bad_format", ""),
    ],
)
def test_bad_input_is_a_clear_4xx_without_echo(server, body, status, code, needle):
    resp = server.post_json(body)
    assert resp.status == status, resp.body
    err = resp.json()["error"]
    assert err["code"] == code
    assert needle in json.dumps(err)
    assert len(resp.body) < 2000  # never the input echoed back


def _three_rows(wine: pd.DataFrame) -> dict[str, tuple[str, dict[str, str]]]:
    """The first 3 rows as a records body with pH twice in record 1, as CSV with 1_000 in row 2, and as
    well-formed bodies: name -> (body, headers)."""
    rows = wine.head(3).to_numpy().tolist()
    json_type, csv_type = {"Content-Type": "application/json"}, {"Content-Type": "text/csv"}
    records = [
        ", ".join(f"{json.dumps(c)}: {v!r}" for c, v in zip(FEATURES, row, strict=True)) for row in rows
    ]
    twice = [*records[:1], records[1] + ', "pH": 9.0', *records[2:]]  # a JSON parser keeps the last pH
    header = ",".join(f'"{c}"' for c in FEATURES)
    lines = [",".join(repr(v) for v in row) for row in rows]
    underscored = lines[2].split(",")
    underscored[5] = "1_000"  # Python's float() reads 1000
    split = json.dumps({"dataframe_split": {"columns": FEATURES, "data": rows}})
    return {
        "records": ('{"dataframe_records": [' + ", ".join("{" + r + "}" for r in records) + "]}", json_type),
        "records-pH-twice": (
            '{"dataframe_records": [' + ", ".join("{" + r + "}" for r in twice) + "]}",
            json_type,
        ),
        "csv": ("\n".join([header, *lines]), csv_type),
        "csv-1_000": ("\n".join([header, *lines[:2], ",".join(underscored)]), csv_type),
        "split": (split, json_type),
        "split-no-type": (split, {}),
        "csv-no-type": ("\n".join([header, *lines]), {}),
    }


@pytest.mark.parametrize(
    ("case", "status", "code", "needles"),
    [
        ("records-pH-twice", 400, "duplicate_key", ["'pH'", "record 1"]),
        ("csv-1_000", 400, "non_numeric", ["'free sulfur dioxide'", "row 2", "1_000"]),
        ("split-no-type", 415, "unsupported_media_type", ["no content type"]),
        ("csv-no-type", 415, "unsupported_media_type", ["no content type"]),
    ],
)
def test_duplicate_keys_strict_csv_numbers_and_no_content_type_are_refused(
    server, wine, case, status, code, needles
):
    body, headers = _three_rows(wine)[case]
    resp = server.request("POST", "/invocations", body, headers)
    assert resp.status == status, resp.body
    err = resp.json()["error"]
    assert err["code"] == code
    assert all(n in err["message"] for n in needles), err


@pytest.mark.parametrize("case", ["records", "csv", "split"])
def test_the_same_rows_well_formed_are_scored(server, wine, case):
    body, headers = _three_rows(wine)[case]
    resp = server.request("POST", "/invocations", body, headers)
    assert resp.status == 200 and len(resp.json()["predictions"]) == 3, resp.body


def test_content_type_and_size_limits(server):
    assert server.request("POST", "/invocations", "a=1", {"Content-Type": "text/plain"}).status == 415
    big = b'{"inputs": [' + b"1," * (6 * 1024 * 1024) + b"1]}"
    resp = server.request("POST", "/invocations", big, {"Content-Type": "application/json"})
    assert resp.status == 413 and resp.json()["error"]["code"] == "body_too_large"
    assert server.request("GET", "/invocations").status == 405
    assert server.request("GET", "/nope").status == 404


def test_probes_version_metrics_openapi(server, registry):
    assert server.request("GET", "/health").body == b"OK"
    assert server.request("GET", "/ready").status == 200
    version = server.request("GET", "/version").json()
    assert (version["name"], version["version"]) == ("winequality", "1")
    assert version["digest"] == recorded(registry["v1"])  # the digest actually loaded
    assert version["columns"] == FEATURES and version["served_since"]
    server.post_json({"inputs": [[7.0] * 11]})
    metrics = server.request("GET", "/metrics").body.decode()
    assert 'vintage_requests_total{status="200"}' in metrics
    assert 'vintage_model_info{name="winequality",run_id=' in metrics and 'version="1"' in metrics
    assert "vintage_request_seconds_bucket" in metrics and "vintage_rows_scored_total" in metrics
    spec = server.request("GET", "/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    assert "/invocations" in spec["paths"]
    assert "alcohol" in json.dumps(spec["paths"]["/invocations"])


def _post_in_background(srv, body: str) -> tuple[threading.Thread, dict[str, int]]:
    result: dict[str, int] = {}

    def post() -> None:
        result["status"] = srv.request(
            "POST", "/invocations", body, {"Content-Type": "application/json"}
        ).status

    thread = threading.Thread(target=post)
    thread.start()
    return thread, result


def _large_body(wine: pd.DataFrame, copies: int = 60) -> str:
    rows = pd.concat([wine] * copies, ignore_index=True)  # 60 copies: ~96k rows, ~9 MB of JSON
    return json.dumps({"dataframe_split": json.loads(rows.to_json(orient="split"))})


def test_health_answers_while_a_large_request_runs(registry, tmp_path, wine):
    body = _large_body(wine, copies=300)  # ~48 MB, the size at which MLflow's ping stalls for seconds
    with scoring_server(
        registry["v2"], tmp_path, "--max-body-bytes", str(64 << 20), "--max-rows", "1000000"
    ) as srv:
        thread, result = _post_in_background(srv, body)
        answered = 0
        while thread.is_alive():  # a blocked event loop would answer none of these until the end
            assert srv.request("GET", "/health", timeout=5).status == 200
            answered += 1
            time.sleep(0.01)
        thread.join()
        assert result["status"] == 200
        assert answered >= 3  # /health latency itself is measured in benchmarks/serving.py, not asserted


def test_api_keys_required_and_rotated(registry, tmp_path):
    keyfile = tmp_path / "keys"
    keyfile.write_text(f"{KEY1}\n{KEY2}\n")
    keyfile.chmod(0o600)
    row = {"inputs": [[7.0] * 11]}
    store = registry["v1"].parent
    with scoring_server(registry["v1"], tmp_path, "--api-key-file", str(keyfile), model_store=store) as srv:
        assert srv.post_json(row).status == 401
        assert srv.post_json(row, key="wrong-" + "x" * 30).status == 401
        assert srv.post_json(row, key=KEY1).status == 200
        assert srv.post_json(row, key=KEY2).status == 200
        unauthorized = srv.post_json(row, key="nope")
        assert (
            unauthorized.json()["error"]["code"] == "unauthorized"
            and "nope" not in unauthorized.body.decode()
        )
        new = "k3-" + "c" * 30
        keyfile.write_text(f"{new}\n{KEY2}\n")
        srv.proc.send_signal(signal.SIGHUP)  # rotation by signal
        deadline = time.time() + 5
        while time.time() < deadline and srv.post_json(row, key=KEY1).status != 401:
            time.sleep(0.05)
        assert srv.post_json(row, key=KEY1).status == 401
        assert srv.post_json(row, key=new).status == 200
        keyfile.write_text(f"{KEY1}\n")
        assert (
            srv.post_json({}, key=new, path="/admin/reload-keys").status == 404
        )  # never on the scoring port
        assert srv.post_json(row, key=new).status == 200
        assert srv.admin("reload-keys")["keys"] == 1  # rotation over the admin channel
        assert srv.post_json(row, key=new).status == 401
        assert srv.post_json(row, key=KEY1).status == 200


def test_world_readable_key_file_is_refused(registry, tmp_path):
    keyfile = tmp_path / "keys"
    keyfile.write_text(f"{KEY1}\n")
    keyfile.chmod(0o644)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vintage.serving",
            "--model-dir",
            str(registry["v1"]),
            "--api-key-file",
            str(keyfile),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "readable by other users" in proc.stderr and KEY1 not in proc.stderr


def test_hot_swap_and_rejected_model(registry, tmp_path, wine):
    rows = wine.head(3)
    body = {"dataframe_split": json.loads(rows.to_json(orient="split"))}
    store = registry["v1"].parent
    with scoring_server(registry["v1"], tmp_path, model_store=store) as srv:
        before = srv.post_json(body).json()["predictions"]
        swapped = srv.swap(registry["v2"])
        assert (swapped["version"], swapped["digest"]) == ("2", recorded(registry["v2"]))
        after = srv.post_json(body).json()["predictions"]
        assert np.allclose(after, mlflow_predict(registry["v2"], rows), rtol=1e-12)
        assert not np.allclose(before, after)
        bad = store / f"broken-model-{tmp_path.name}"
        shutil.copytree(registry["v1"], bad)
        next(p for p in bad.iterdir() if p.suffix in (".pkl", ".skops")).write_bytes(b"not a pickle")
        digest = write_manifest(bad)  # materialised as vintage would: the load itself must fail
        with pytest.raises(ServingError, match=r"cannot load|not a|unpickl|pickle"):
            srv.admin("swap", path=str(bad), digest=digest)
        assert srv.request("GET", "/version").json()["version"] == "2"  # the old one keeps serving
        assert np.allclose(srv.post_json(body).json()["predictions"], after)
        shutil.rmtree(bad)


def test_sigterm_drains_in_flight_requests_and_exits_zero(registry, tmp_path, wine):
    with scoring_server(registry["v2"], tmp_path) as srv:
        thread, result = _post_in_background(srv, _large_body(wine))
        time.sleep(0.3)
        srv.proc.send_signal(signal.SIGTERM)
        thread.join(timeout=60)
        assert result.get("status") == 200  # the request in flight finished
        assert srv.proc.wait(timeout=60) == 0


def test_limits_rows_and_timeout(registry, tmp_path, wine):
    rows = pd.concat([wine] * 10, ignore_index=True)  # 15,990 rows, > 64 KiB: predicted on a worker thread
    body = json.dumps({"dataframe_split": json.loads(rows.to_json(orient="split"))})
    with scoring_server(registry["v2"], tmp_path, "--max-rows", "1000") as srv:
        too_many = srv.request("POST", "/invocations", body, {"Content-Type": "application/json"})
        assert too_many.status == 413 and too_many.json()["error"]["code"] == "too_many_rows"
    with scoring_server(registry["v2"], tmp_path, "--timeout", "0.001") as srv:
        slow = srv.request("POST", "/invocations", body, {"Content-Type": "application/json"})
        assert slow.status == 504 and slow.json()["error"]["code"] == "timeout"
        assert srv.request("GET", "/health").status == 200


def test_fuzzed_bodies_never_get_a_5xx(server):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
    values = st.recursive(
        scalars,
        lambda kids: st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=15), kids, max_size=5),
        max_leaves=30,
    )
    shaped = st.dictionaries(
        st.sampled_from(["dataframe_split", "dataframe_records", "instances", "inputs", "columns", "data"]),
        values,
        max_size=2,
    )
    statuses: list[int] = []

    @settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.one_of(values, shaped), st.sampled_from(["application/json", "text/csv", "text/plain"]))
    def post(doc: object, ctype: str) -> None:
        body = json.dumps(doc) if ctype != "text/csv" else str(doc)
        resp = server.request("POST", "/invocations", body, {"Content-Type": ctype})
        statuses.append(resp.status)
        assert resp.status < 500, resp.body

    post()
    assert len(statuses) >= 1000
    assert server.request("GET", "/health").status == 200


def test_five_swaps_under_load_lose_no_request(registry, tmp_path, wine):
    body = json.dumps({"dataframe_split": json.loads(wine.head(10).to_json(orient="split"))})
    with scoring_server(registry["v1"], tmp_path, model_store=registry["v1"].parent) as srv:
        failures: list[object] = []
        counts = {"ok": 0}
        stop = threading.Event()

        def load() -> None:
            import http.client

            conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
            deadline = time.time() + 60  # bounded even if the swaps hang
            while not stop.is_set() and time.time() < deadline:
                try:
                    conn.request("POST", "/invocations", body, {"Content-Type": "application/json"})
                    resp = conn.getresponse()
                    data = resp.read()
                    if resp.status != 200 or len(json.loads(data)["predictions"]) != 10:
                        failures.append((resp.status, data[:200]))
                    else:
                        counts["ok"] += 1
                except Exception as exc:  # a dropped connection counts as a failed request
                    failures.append(repr(exc))
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
            conn.close()

        workers = [threading.Thread(target=load) for _ in range(4)]
        for w in workers:
            w.start()
        versions = []
        for i in range(5):
            time.sleep(0.3)
            target = registry["v2"] if i % 2 == 0 else registry["v1"]
            versions.append(srv.swap(target)["version"])
        time.sleep(0.3)
        stop.set()
        for w in workers:
            w.join(timeout=30)
        assert versions == ["2", "1", "2", "1", "2"]
        assert failures == []
        assert counts["ok"] > 100
        metrics = srv.request("GET", "/metrics").body.decode()
        assert 'vintage_model_swaps_total{outcome="swapped"} 5.0' in metrics


def test_cli_serve_materialises_a_registry_alias(registry, tmp_path):
    from support.scoring import Server, free_port, wait_ready

    port = free_port()
    log = tmp_path / "cli-serve.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [VINTAGE, "serve", "--model", "candidate", "--port", str(port)],
            cwd=registry["project"],
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    srv = Server(proc, port, log)
    try:
        wait_ready(srv)
        version = srv.request("GET", "/version").json()
        assert (version["name"], version["version"]) == ("winequality", "2")
        assert (registry["project"] / ".vintage" / "models").is_dir()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0


@pytest.mark.slow
def test_two_workers_follow_swaps_and_key_reloads(registry, tmp_path, wine):
    keyfile = tmp_path / "keys"
    keyfile.write_text(f"{KEY1}\n")
    keyfile.chmod(0o600)
    body = {"dataframe_split": json.loads(wine.head(3).to_json(orient="split"))}
    extra = ("--workers", "2", "--api-key-file", str(keyfile))
    with scoring_server(registry["v1"], tmp_path, *extra, model_store=registry["v1"].parent) as srv:
        children = subprocess.run(
            ["ps", "-o", "pid=,args=", "--ppid", str(srv.proc.pid)], capture_output=True, text=True
        ).stdout.splitlines()
        assert len([c for c in children if "multiprocessing.spawn" in c]) == 2, children  # two workers
        for _ in range(40):  # new connection each time: the kernel spreads them over both workers
            resp = srv.post_json(body, key=KEY1)
            assert resp.status == 200
        swapped = srv.swap(registry["v2"])  # answers once every worker serves the new digest
        assert swapped["digest"] == recorded(registry["v2"]) and swapped["workers"] == 2
        assert set(swapped["worker_digests"].values()) == {recorded(registry["v2"])}
        expected = mlflow_predict(registry["v2"], wine.head(3))
        answers = [srv.post_json(body, key=KEY1).json()["predictions"] for _ in range(20)]
        assert all(np.allclose(a, expected, rtol=1e-12) for a in answers)
        new = "k9-" + "z" * 30
        keyfile.write_text(f"{new}\n")
        assert srv.admin("reload-keys")["keys"] == 1
        time.sleep(1.5)
        assert all(srv.post_json(body, key=KEY1).status == 401 for _ in range(20))
        assert all(srv.post_json(body, key=new).status == 200 for _ in range(20))
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(timeout=60) == 0
