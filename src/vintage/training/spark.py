"""Distributed grid: every grid point is one Spark task (``mapInPandas`` over one row per point).

Each task fits its point with the same code as the local engine (:func:`vintage.training.fit.fit_point`,
same seeds -> same metrics) and sends back the fitted model and metrics; the driver logs each point as its
own MLflow run to the configured tracking store exactly as the local engine does. The training data travels
once per task inside the task closure (the grid workload's data is small; large data goes to the Spark MLlib
trainer instead).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Self

from vintage.errors import Interrupted, SparkError, first_line
from vintage.training.fit import FitResult
from vintage.training.grid import GridPoint

if TYPE_CHECKING:
    from vintage.config import Spec
    from vintage.config.models import SparkSpec

SCHEMA = "index long, result binary, executor string"


def executor_id() -> str:
    """The Spark executor this Python worker serves (``driver`` in local mode), from its JVM's cmdline."""
    pid = os.getpid()
    while pid > 1:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                args = fh.read().split(b"\0")
            if b"--executor-id" in args:
                return args[args.index(b"--executor-id") + 1].decode()
            with open(f"/proc/{pid}/stat") as fh:
                pid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return "driver"


def _fit_partition(payload: bytes) -> Any:
    """The ``mapInPandas`` function: fit the points of a partition (closure over the pickled job)."""

    def fit(batches: Iterator[Any]) -> Iterator[Any]:
        import cloudpickle
        import pandas as pd

        from vintage.training.fit import fit_point, init_worker

        protect, init_args = cloudpickle.loads(payload)
        if protect:
            from vintage import redact

            for value in protect:
                redact.register(value)
        init_worker(*init_args)
        where = executor_id()
        for pdf in batches:
            rows = []
            for idx, blob in zip(pdf["index"], pdf["point"], strict=True):
                result = fit_point(cloudpickle.loads(blob))
                rows.append((int(idx), cloudpickle.dumps(result), f"{where}/{os.getpid()}"))
            yield pd.DataFrame(rows, columns=["index", "result", "executor"])

    return fit


class SparkExecutor:
    """Runs the grid as Spark tasks; same interface as :class:`~vintage.training.executor.LocalExecutor`."""

    def __init__(
        self,
        points: Sequence[GridPoint],
        init_args: tuple[Any, ...],
        spark: SparkSpec,
        protect: Sequence[str] = (),
    ) -> None:
        self._points = list(points)
        self._init_args = init_args
        self._spec = spark
        self._protect = tuple(protect)
        self._session: Any = None
        self.executors: dict[int, str] = {}  # grid index -> "executor-id/pid" (where each point ran)

    @classmethod
    def from_spec(
        cls,
        spec: Spec,
        points: Sequence[GridPoint],
        init_args: tuple[Any, ...],
        *,
        n_jobs: int | None,
        protect: Sequence[str],
    ) -> Self:
        """Tasks on ``compute.spark`` (``n_jobs`` does not apply: Spark schedules one task per point)."""
        return cls(points, init_args, spec.compute.spark, protect=protect)

    @property
    def n_jobs(self) -> int:
        """Points in flight at most (one task per point; Spark schedules them on its cores)."""
        return len(self._points)

    def start(self) -> None:
        """Create (or reuse) the Spark session. Tasks start when :meth:`results` is iterated."""
        from vintage.compute.spark import session

        self._session = session(self._spec, app_name="vintage-grid")

    def results(self, stop: threading.Event | None = None) -> Iterator[FitResult]:
        """Yield each point's result as its partition completes (in grid order)."""
        import cloudpickle

        if self._session is None:
            self.start()
        spark = self._session
        payload = cloudpickle.dumps((self._protect, self._init_args))
        rows = [(p.index, cloudpickle.dumps(p)) for p in self._points]
        try:
            frame = spark.createDataFrame(rows, "index long, point binary").repartition(len(rows), "index")
            out = frame.mapInPandas(_fit_partition(payload), SCHEMA)
            iterator = out.toLocalIterator() if hasattr(out, "toLocalIterator") else iter(out.collect())
            for row in iterator:
                if stop is not None and stop.is_set():
                    raise Interrupted(
                        "training interrupted; unfinished runs are marked KILLED, nothing registered"
                    )
                result: FitResult = cloudpickle.loads(row["result"])
                self.executors[int(row["index"])] = str(row["executor"])
                yield result
        except Interrupted:
            raise
        except Exception as exc:
            raise SparkError(
                f"the Spark grid job failed on {self._spec.master}: {first_line(exc, 200)}",
                hint="a worker may have died or lack the Python packages; --verbose shows the Spark error",
            ) from exc

    def close(self, kill: bool = False) -> None:
        """Cancel running jobs when ``kill``; the session stays for reuse in this process."""
        if kill and self._session is not None:
            with contextlib.suppress(Exception):  # best effort on the way out (Connect has no sparkContext)
                self._session.sparkContext.cancelAllJobs()
