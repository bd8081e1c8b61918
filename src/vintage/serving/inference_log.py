"""The inference log: scored rows recorded off the hot path, written as rotated Parquet files.

The request handler calls :meth:`InferenceLog.offer` after a prediction. For a request that is not in the
sample that is one ``random()`` and a comparison; for a sampled one, a tuple of references (time, model,
latency, the parsed matrix and the predictions) is appended to a :class:`collections.deque`. Nothing on
the hot path takes a lock, waits or touches the disk: when the queue holds ``max_queue_rows`` rows the
request's rows are dropped and counted (``vintage_inference_rows_dropped_total{reason="queue_full"}`` in
``/metrics``), and the request is answered as usual.

A writer thread wakes every :data:`DRAIN_EVERY_S`, moves the queued rows into the current file's buffer
and, when the buffer holds ``rotate_rows`` rows or is ``rotate_seconds`` old, writes it as one Parquet file
(temp file, mode 0600, then renamed into place, so a reader never sees a half-written file). A failed
write is logged and its rows counted as dropped (``reason="write_failed"``); serving goes on. On a
graceful stop (SIGTERM drain, the app's lifespan shutdown) the queue is drained and the last file written.

Files: ``<state_dir>/envs/<env>/inference/<UTC start>-<pid>-<random>-<seq>.parquet`` (each worker process
writes its own), columns ``time`` (UTC timestamp), ``model_version`` (int, null when the model has none),
``latency_ms`` (request start to prediction done), ``prediction``, then one column per model feature. The
file's key-value metadata ``vintage.inference`` (JSON) holds the sampling rate, the rows dropped since the
previous file, and each model version's directory and digest (what ``vintage monitor`` compares against).

The queue has one producer (the event loop: the handler records after awaiting the prediction) and one
consumer (the writer thread); each counter is written by one thread only, so none needs a lock.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from vintage.model.load import LoadedModel
    from vintage.serving.payload import Matrix, Rows

log = logging.getLogger(__name__)

DRAIN_EVERY_S: Final = 0.2
"""How often the writer thread empties the queue."""
CLOSE_TIMEOUT_S: Final = 30.0
"""How long :meth:`InferenceLog.close` waits for the last file."""
META_KEY: Final = b"vintage.inference"
META_FORMAT: Final = 1
SUFFIX: Final = ".parquet"
NPZ_SUFFIX: Final = ".npz"
"""Files of a server without pyarrow (the lean OCI image): the same columns as NumPy arrays."""
SUFFIXES: Final = (SUFFIX, NPZ_SUFFIX)
FIXED_COLUMNS: Final = ("time", "model_version", "latency_ms", "prediction")


def log_dir(state_dir: Path, environment: str) -> Path:
    """Where an environment's inference log lives: ``<state_dir>/envs/<environment>/inference``."""
    return Path(state_dir) / "envs" / environment / "inference"


@dataclass(frozen=True)
class InferenceLogSettings:
    """How one server records its scored rows (``environments.<env>.inference_log`` plus the directory).

    Attributes:
        directory: Where the files go (created mode 0700).
        sample: The share of requests recorded (0 < sample <= 1); every row of a sampled request is kept.
        max_queue_rows: The most rows waiting for the writer; more are dropped and counted.
        rotate_rows: A file is written when it holds this many rows.
        rotate_seconds: ... or when its first row is this old.
    """

    directory: str
    sample: float = 0.1
    max_queue_rows: int = 10_000
    rotate_rows: int = 100_000
    rotate_seconds: float = 60.0

    def __post_init__(self) -> None:
        if not 0.0 < self.sample <= 1.0:
            raise ValueError(f"inference log sample must be in (0, 1], got {self.sample}")
        if self.max_queue_rows < 1 or self.rotate_rows < 1 or self.rotate_seconds <= 0:
            raise ValueError("inference log max_queue_rows, rotate_rows and rotate_seconds must be positive")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> InferenceLogSettings:
        """From a plain mapping (the JSON handed to a multi-worker server's workers)."""
        return cls(**dict(values))


Entry = tuple[float, "LoadedModel", float, npt.NDArray[np.float64], npt.NDArray[Any]]
"""(epoch time, model, latency in seconds, rows, predictions): what the hot path queues."""


class InferenceLog:
    """A bounded queue of scored rows and the thread that writes them (see the module docstring).

    Args:
        settings: Where and how much to record.
        columns: The model's feature columns (fixed for the life of a server: swaps keep them).
        clock: Wall clock, for tests.
    """

    def __init__(
        self,
        settings: InferenceLogSettings,
        columns: tuple[str, ...],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.columns = columns
        self.directory = Path(settings.directory)
        self.sample = settings.sample
        self._clock = clock
        self._random = random.random
        self._max = settings.max_queue_rows
        self._width = len(columns)
        self._queue: deque[Entry] = deque()
        # written by the producer (event loop) only
        self._rows_in = 0
        self.dropped_queue_full = 0
        # written by the writer thread only
        self._rows_out = 0
        self.dropped_write_failed = 0
        self.rows_written = 0
        self.files_written = 0
        self._dropped_reported = 0
        self._buffer: list[Entry] = []
        self._buffer_rows = 0
        self._buffer_since = 0.0
        self._seq = 0
        # in file names beside the pid: two containers' servers (the same pids in their own namespaces)
        # may write into one mounted directory during a switch
        self._token = os.urandom(3).hex()
        self._models: dict[str, dict[str, str | None]] = {}
        self.parquet = True  # False: pyarrow is not installed here; files are .npz
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the hot path (event loop) ------------------------------------------------------------------------

    def offer(
        self, model: LoadedModel, x: Matrix | Rows, pred: npt.NDArray[Any] | list[float], started: float
    ) -> None:
        """Record one request's rows when it falls in the sample (``started``: its ``perf_counter`` start).

        Never blocks: a full queue drops the rows and counts them.
        """
        if self._random() >= self.sample:
            return
        latency = time.perf_counter() - started
        n = len(x)
        if self._rows_in - self._rows_out + n > self._max:
            self.dropped_queue_full += n
            return
        self._rows_in += n
        if isinstance(x, list):
            # A small request's rows are Python numbers (parse_batch): arrays now, ~3 us for a sampled
            # request. Left to the writer thread, the conversions cost the server more than that (their
            # interpreter time, and handing the interpreter back and forth: measured, BENCHMARKS.md), and
            # a whole file's at once (100,000 rows) held the interpreter for ~50 ms.
            x = np.array(x, dtype=np.float64).reshape(n, self._width)
        if isinstance(pred, list):
            pred = np.array(pred, dtype=np.float64)
        self._queue.append((self._clock(), model, latency, x, pred))

    @property
    def queued_rows(self) -> int:
        """Rows waiting for the writer thread."""
        return self._rows_in - self._rows_out

    # -- life cycle --------------------------------------------------------------------------------------

    def note_model(self, version: str | None, path: Path | None, digest: str | None) -> None:
        """Remember where a served version's files are (written into each file's metadata)."""
        # a new dict, not an update: the writer thread may be serialising the old one right now
        self._models = {
            **self._models,
            str(version): {"dir": str(path.resolve()) if path else None, "digest": digest},
        }

    def start(self) -> None:
        """Create the directory (0700), load pyarrow, start the writer thread.

        Without pyarrow (the lean image of the container targets has none) the files are NumPy ``.npz``
        archives of the same columns, which :mod:`vintage.monitoring` reads as well.

        Raises:
            OSError: the directory cannot be created.
        """
        try:
            import pyarrow.parquet  # noqa: F401 - loaded here, before the server reports ready
        except ImportError:
            self.parquet = False
            log.info("inference log: pyarrow is not installed here; writing .npz files")
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.directory.chmod(0o700)
        self._thread = threading.Thread(target=self._run, name="vintage-inference-log", daemon=True)
        self._thread.start()

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Drain the queue, write the last file and stop the writer thread (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.error("the inference log writer did not finish within %.0f s", timeout_s)
            self._thread = None

    # -- the writer thread -------------------------------------------------------------------------------

    def _run(self) -> None:
        if self.parquet:
            # pyarrow imports pandas the first time it converts an array (it checks for a pandas Series):
            # ~0.5 s of imports, holding the interpreter. Done now, as the server starts, not during the
            # traffic that fills the first file.
            import pyarrow as pa

            pa.array(np.zeros(1))
        while not self._stop.wait(DRAIN_EVERY_S):
            self.drain()
        self.drain(final=True)

    def drain(self, final: bool = False) -> None:
        """Move queued rows into the file buffer and write the file when it is due (writer thread only)."""
        queue = self._queue
        while queue:
            entry = queue.popleft()
            n = len(entry[3])
            if not self._buffer_rows:
                self._buffer_since = entry[0]
            self._buffer.append(entry)  # not a local alias: _flush replaces the list
            self._buffer_rows += n
            self._rows_out += n
            if self._buffer_rows >= self.settings.rotate_rows:
                self._flush()
        due = self._clock() - self._buffer_since >= self.settings.rotate_seconds
        if self._buffer_rows and (final or due):
            self._flush()

    def _flush(self) -> None:
        entries, rows = self._buffer, self._buffer_rows
        self._buffer, self._buffer_rows = [], 0
        try:
            path = self._write(entries)
        except Exception as exc:  # a full disk (or anything else) must not stop the server
            self.dropped_write_failed += rows
            log.error("inference log: %d row(s) not written: %s", rows, exc)
            return
        self.rows_written += rows
        self.files_written += 1
        log.debug("inference log: wrote %d row(s) to %s", rows, path.name)

    def _write(self, entries: list[Entry]) -> Path:
        """Write ``entries`` as one Parquet (or ``.npz``) file (temp file 0600, renamed into place)."""
        dropped = self.dropped_queue_full + self.dropped_write_failed
        meta = {
            "format": META_FORMAT,
            "sample": self.sample,
            "dropped": dropped - self._dropped_reported,
            "pid": os.getpid(),
            "models": self._models,
        }
        self._seq += 1
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(entries[0][0]))
        suffix = SUFFIX if self.parquet else NPZ_SUFFIX
        final = self.directory / f"{stamp}-{os.getpid()}-{self._token}-{self._seq:06d}{suffix}"
        tmp = self.directory / f".{final.name}.tmp"
        try:
            with open(tmp, "wb", opener=_private) as fh:
                if self.parquet:
                    import pyarrow.parquet as pq

                    table = self._table(entries).replace_schema_metadata(
                        {META_KEY: json.dumps(meta).encode()}
                    )
                    pq.write_table(table, fh, compression="zstd")
                else:
                    arrays = {**self._arrays(entries), "meta": np.array(json.dumps(meta))}
                    np.savez_compressed(fh, allow_pickle=False, **arrays)
            tmp.replace(final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self._dropped_reported = dropped
        return final

    def _arrays(self, entries: list[Entry]) -> dict[str, npt.NDArray[Any]]:
        """The columns as NumPy arrays (``.npz``): time in microseconds, model_version as float (NaN: none),
        the features as one matrix ``x`` with their names in ``columns``."""
        counts = np.fromiter((len(e[3]) for e in entries), dtype=np.int64, count=len(entries))
        times = np.repeat(np.fromiter((e[0] for e in entries), dtype=np.float64, count=len(entries)), counts)
        latency = np.repeat(
            np.fromiter((e[2] * 1000.0 for e in entries), dtype=np.float64, count=len(entries)), counts
        )
        known: dict[int, int | None] = {}
        versions = [known[id(e[1])] if id(e[1]) in known else known.setdefault(id(e[1]), _version(e[1]))
                    for e in entries]  # fmt: skip
        version_col = np.repeat(
            np.array([np.nan if v is None else v for v in versions], dtype=np.float64), counts
        )
        return {
            "time_us": (times * 1e6).astype(np.int64),
            "model_version": version_col,
            "latency_ms": latency,
            "prediction": np.concatenate([e[4] for e in entries]).astype(np.float64, copy=False).reshape(-1),
            "x": np.concatenate([e[3] for e in entries]).reshape(-1, len(self.columns)).astype(np.float64),
            "columns": np.array(self.columns, dtype=str),
        }

    def _table(self, entries: list[Entry]) -> Any:
        import pyarrow as pa

        cols = self._arrays(entries)
        versions = cols["model_version"]
        x = cols["x"]
        arrays = [
            pa.array(cols["time_us"], type=pa.timestamp("us", tz="UTC")),
            pa.array(
                versions.astype(np.int64, copy=False)
                if not np.isnan(versions).any()
                else [None if np.isnan(v) else int(v) for v in versions],
                type=pa.int64(),
            ),
            pa.array(cols["latency_ms"]),
            pa.array(cols["prediction"]),
            *(pa.array(x[:, j]) for j in range(len(self.columns))),
        ]
        return pa.Table.from_arrays(arrays, names=[*FIXED_COLUMNS, *self.columns])


def _version(model: LoadedModel) -> int | None:
    try:
        return int(model.info.version) if model.info.version is not None else None
    except ValueError:
        return None


def _private(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)
