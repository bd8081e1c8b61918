"""The inference log's writer: time to turn one batch of logged rows into a file, this tree against a commit.

Run from the repo::

    .venv/bin/python benchmarks/inference_writer.py --before <git ref> [--rows 10000] [--rounds 7]

The writer thread (not the request path: :meth:`InferenceLog.offer` is a deque append) builds each file from
the queued entries. This times :meth:`InferenceLog._write` for ``--rows`` one-row entries of 11 features,
with ``--before``'s ``src/vintage/serving/inference_log.py`` (read with ``git show``, loaded as its own
module) and this tree's, alternating, and prints the median milliseconds per file of each.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
MODULE = "src/vintage/serving/inference_log.py"


def load_before(ref: str, into: Path) -> Any:
    """``ref``'s inference_log module, loaded from a copy under ``into``."""
    source = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{ref}:{MODULE}"], capture_output=True, text=True, check=True
    ).stdout
    path = into / "inference_log_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("inference_log_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def one_file(module: Any, entries: list[Any], columns: tuple[str, ...]) -> float:
    """Seconds to write ``entries`` as one file with ``module``'s writer."""
    with tempfile.TemporaryDirectory(prefix="vintage-writer-") as tmp:
        log = module.InferenceLog(module.InferenceLogSettings(directory=tmp, sample=1.0), columns)
        log.start()
        log.close()  # the thread is not needed: _write is called directly
        started = time.perf_counter()
        log._write(entries)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="the git ref to compare with")
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    from vintage.model.load import LoadedModel, ModelInfo
    from vintage.serving import inference_log as after

    columns = tuple(f"f{i}" for i in range(11))
    info = ModelInfo(
        "wine", "3", "r", "models:/wine/3", "sklearn", "cloudpickle", columns, ("double",) * 11, None
    )
    model = LoadedModel(info, lambda x: x[:, 0], np.zeros((1, 11)), None)
    rng = np.random.default_rng(0)
    entries = [
        (time.time(), model, 0.001, rng.normal(size=(1, 11)), rng.normal(size=1)) for _ in range(args.rows)
    ]
    with tempfile.TemporaryDirectory(prefix="vintage-writer-src-") as tmp:
        before = load_before(args.before, Path(tmp))
        one_file(before, entries, columns)  # first Parquet write loads the codecs
        times: dict[str, list[float]] = {"before": [], "after": []}
        for _ in range(args.rounds):
            times["before"].append(one_file(before, entries, columns))
            times["after"].append(one_file(after, entries, columns))
    print(f"inference log writer, one file of {args.rows:,} rows, median (min) of {args.rounds}")
    for name, values in times.items():
        print(f"{name:7} {statistics.median(values) * 1000:7.1f} ms ({min(values) * 1000:.1f})")
    change = statistics.median(times["after"]) / statistics.median(times["before"]) - 1
    print(f"change  {change:+.1%}")


if __name__ == "__main__":
    main()
