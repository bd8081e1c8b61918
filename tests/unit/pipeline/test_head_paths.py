"""The smoke test and the curl example take the data set's first rows from ``Dataset.head`` (kept by the
chunked validating pass): they work when loading the whole frame would fail, and post/show exactly the
file's first rows. ``pipeline.smoke_rows`` is bounded by the rows that pass keeps."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from vintage.config import load_spec
from vintage.config.models import SMOKE_ROWS_MAX, PipelineSpec
from vintage.data import load
from vintage.deploy.base import Deployment

REPO = Path(__file__).resolve().parents[3]
RED = REPO / "src/vintage/data/wine_quality/winequality-red.csv"


@pytest.fixture
def no_whole_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    """As ``support.spark.guarded_vintage``: 200-row chunks; the whole frame, split or read fails."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the whole data set was loaded")

    monkeypatch.setattr(load, "SCAN_ROWS", 200)
    monkeypatch.setattr(load, "read_table", refuse)
    monkeypatch.setattr(load.Dataset, "frame", property(refuse))
    monkeypatch.setattr(load.Dataset, "split", refuse)


def _spec(project: Path, smoke_rows: int = 10) -> Any:
    text = (project / "vintage.yaml").read_text() + f"pipeline:\n  smoke_rows: {smoke_rows}\n"
    (project / "vintage.yaml").write_text(text)
    return load_spec(project / "vintage.yaml")


def _first_rows(n: int, features: list[str]) -> pd.DataFrame:
    return pd.read_csv(RED, sep=";").head(n)[features]


def test_smoke_rows_is_bounded_by_the_rows_the_data_pass_keeps():
    assert SMOKE_ROWS_MAX == load.HEAD_ROWS
    assert PipelineSpec(smoke_rows=load.HEAD_ROWS).smoke_rows == load.HEAD_ROWS
    with pytest.raises(ValueError, match=f"at most {load.HEAD_ROWS} \\(got {load.HEAD_ROWS + 1}\\)"):
        PipelineSpec(smoke_rows=load.HEAD_ROWS + 1)


def test_head_stays_within_the_first_chunk(no_whole_frame, project):
    spec = load_spec(project / "vintage.yaml")
    ds = load.load_dataset(spec.data)
    assert ds.n_rows == 1599  # several 200-row chunks
    features = list(spec.data.features)
    pd.testing.assert_frame_equal(
        ds.head(SMOKE_ROWS_MAX)[features], _first_rows(SMOKE_ROWS_MAX, features), check_dtype=False
    )


class _Server:
    """A scoring server stand-in: answers ``/invocations`` with ``model``'s predictions, records bodies."""

    def __init__(self, model: Any, features: list[str]) -> None:
        bodies: list[dict[str, Any]] = []
        self.bodies = bodies

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                bodies.append(body)
                split = body["dataframe_split"]
                frame = pd.DataFrame(split["data"], columns=split["columns"])[features]
                preds = model.predict(frame.to_numpy(dtype="float64")).tolist()
                data = json.dumps({"predictions": preds}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> _Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def linear_model_dir(tmp_path: Path) -> Iterator[tuple[Path, Any]]:
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.linear_model import LinearRegression

    wine = pd.read_csv(RED, sep=";")
    x = wine.drop(columns=["quality"])
    model = LinearRegression().fit(x.to_numpy(), wine["quality"])
    where = tmp_path / "model"
    mlflow.sklearn.save_model(model, str(where), signature=infer_signature(x, model.predict(x.to_numpy())))
    yield where, model


@pytest.mark.parametrize("rows", [10, SMOKE_ROWS_MAX])
def test_smoke_test_posts_the_first_rows_without_loading_the_data_set(
    no_whole_frame, project, monkeypatch, linear_model_dir, rows
):
    from vintage.pipeline import gates

    spec = _spec(project, smoke_rows=rows)
    features = list(spec.data.features)
    model_dir, model = linear_model_dir
    monkeypatch.setattr(gates, "materialize_version", lambda ctx, name, version: model_dir)
    with _Server(model, features) as server:
        served = Deployment("staging", "winequality", 3, str(model_dir), server.url, 1, "now", True)
        ctx = SimpleNamespace(
            spec=spec,
            stage=SimpleNamespace(environment="staging"),
            target=lambda: SimpleNamespace(status=lambda: served),
        )
        result = gates._smoke(ctx, "winequality", 3)  # type: ignore[arg-type]
    assert result["rows"] == rows and result["max_diff"] < 1e-9
    [body] = server.bodies
    posted = pd.DataFrame(body["dataframe_split"]["data"], columns=body["dataframe_split"]["columns"])
    pd.testing.assert_frame_equal(posted, _first_rows(rows, features), check_dtype=False)


def test_curl_example_shows_the_first_row_without_loading_the_data_set(
    no_whole_frame, project, monkeypatch, capsys
):
    from vintage.cli import pipeline_cmd, state
    from vintage.pipeline import ops

    spec = _spec(project)
    served = Deployment("production", "winequality", 2, "m", "http://127.0.0.1:9", 1, "now", True)
    monkeypatch.setattr(state, "load", lambda: spec)
    monkeypatch.setattr(ops, "status", lambda s, **_: {"staging": None, "production": served})
    pipeline_cmd._endpoints()
    out = capsys.readouterr().out
    assert "production: winequality v2 at http://127.0.0.1:9" in out
    body = json.loads(out.split(" -d '", 1)[1].rsplit("'", 1)[0])
    features = list(spec.data.features)
    assert body["dataframe_split"]["columns"] == features
    np.testing.assert_array_equal(body["dataframe_split"]["data"], _first_rows(1, features).to_numpy())
