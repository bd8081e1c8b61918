"""The inference log's CPU cost per request, measured in one process (steadier than req/s on a busy machine).

Run from the repo::

    .venv/bin/python benchmarks/inference_log.py [--requests 20000] [--rounds 7]

The scoring app (:class:`vintage.serving.app.ScoringApp`) is called directly as an ASGI callable (no HTTP
stack, no sockets) with a ``dataframe_split`` body of the first 1 (or ``--rows``) row(s) of the red wine data,
by a linear model over the 11 wine features. Three apps: no inference log, the log at sample 0.1 (the default)
and at 1.0 (every request). Each round runs ``--requests`` requests on each app in turn, measuring the
process's CPU time (``time.process_time``: every thread, so the writer thread's draining and Parquet writing
count; one unmeasured app writes a first file before, since the process's first Parquet write loads the
codecs) and, for the logged apps, closing the log at the end of the round so that everything queued is
written inside the measurement. It prints, per app, the median CPU microseconds per request over the rounds
and the extra microseconds per request against the unlogged app.

How to read it: the serving benchmark (``benchmarks/serving.py``) puts the whole server, HTTP stack
included, at about 34 microseconds of CPU per request at 16 connections on this machine (docs/serving.md,
"Speed, and why uvicorn"), and one worker is CPU-bound there, so an extra ``d`` microseconds per request
costs about ``d / (34 + d)`` of the req/s.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
RED_WINE_CSV = REPO / "src" / "vintage" / "data" / "wine_quality" / "winequality-red.csv"


def _body(rows: int) -> tuple[list[str], bytes]:
    with RED_WINE_CSV.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh, delimiter=";")
        header = next(reader)
        keep = [i for i, name in enumerate(header) if name != "quality"]
        data = [[float(line[i]) for i in keep] for _, line in zip(range(rows), reader, strict=False)]
    columns = [header[i] for i in keep]
    return columns, json.dumps({"dataframe_split": {"columns": columns, "data": data}}).encode()


def _app(columns: list[str], directory: Path | None, sample: float) -> Any:
    from vintage.model.load import LoadedModel, ModelInfo
    from vintage.serving.app import ScoringApp, ServeConfig
    from vintage.serving.auth import ApiKeys
    from vintage.serving.inference_log import InferenceLogSettings

    coef = np.linspace(-1.0, 1.0, len(columns))
    info = ModelInfo("wine", "1", "r", "m", "sklearn", "cloudpickle", tuple(columns), ("double",) * 11, None)
    model = LoadedModel(info, lambda x: x @ coef + 5.0, np.ones((1, len(columns))), None)
    settings = InferenceLogSettings(str(directory), sample=sample) if directory is not None else None
    app = ScoringApp(model, ApiKeys(), ServeConfig(inference_log=settings, warmup_predictions=1))
    app.warm()
    return app


async def _requests(app: Any, body: bytes, n: int) -> None:
    scope = {"type": "http", "method": "POST", "path": "/invocations",
             "headers": [(b"content-type", b"application/json")]}  # fmt: skip
    message = {"type": "http.request", "body": body, "more_body": False}

    async def receive() -> dict[str, Any]:
        return message

    async def send(_: dict[str, Any]) -> None:
        return None

    for _ in range(n):
        await app(scope, receive, send)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--requests", type=int, default=20_000, help="requests per app per round (default 20000)")
    p.add_argument("--rounds", type=int, default=7, help="rounds (default 7)")
    p.add_argument("--rows", type=int, default=1, help="rows per request (default 1)")
    args = p.parse_args(argv)
    columns, body = _body(args.rows)
    variants = {"no log": None, "log 0.1": 0.1, "log 1.0": 1.0}
    per_request: dict[str, list[float]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory(prefix="vintage-log-bench-") as tmp:
        first = _app(columns, Path(tmp) / "warm-up", 1.0)  # the process's first Parquet write loads codecs
        first.start_inference_log()
        asyncio.run(_requests(first, body, 200))
        first.close_inference_log()
        for r in range(args.rounds):
            for name, sample in variants.items():
                directory = Path(tmp) / f"{name.replace(' ', '-')}-{r}" if sample is not None else None
                app = _app(columns, directory, sample or 0.1)
                app.start_inference_log()
                asyncio.run(_requests(app, body, 200))  # warm-up, not measured
                cpu0 = time.process_time()
                asyncio.run(_requests(app, body, args.requests))
                app.close_inference_log()  # the writer's last drain and file count too
                per_request[name].append((time.process_time() - cpu0) / args.requests * 1e6)
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(
                f"{n} {v[-1]:.2f} us" for n, v in per_request.items()), file=sys.stderr)  # fmt: skip
    base = statistics.median(per_request["no log"])
    print(
        f"CPU per request, median of {args.rounds} rounds of {args.requests} requests ({args.rows} row(s)):"
    )
    for name, values in per_request.items():
        extra = statistics.median(v - b for v, b in zip(values, per_request["no log"], strict=True))
        print(
            f"  {name:<8} {statistics.median(values):7.2f} us   "
            f"extra vs no log (paired median) {extra:+.2f} us"
        )
    print(f"(no log: {base:.2f} us)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
