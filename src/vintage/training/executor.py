"""Run grid points in parallel worker processes (the local compute backend).

Workers come from a ``forkserver`` that preloads scikit-learn and the estimator modules, so a worker
starts in milliseconds and never inherits the parent's MLflow/SQLAlchemy connections (which ``fork``
would). A point that raises comes back as a failed :class:`FitResult`; a worker that dies outright
(segfault, OOM kill) breaks the pool, and the unfinished points are then retried one per fresh process,
so only the point that kills its worker is marked failed.
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Self

from vintage.errors import Interrupted, TrainingError, first_line
from vintage.training.fit import FitResult, fit_point, init_worker

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from vintage.config import Spec
    from vintage.training.grid import GridPoint

# matplotlib's import (~0.5 s) happens once, in the forkserver, not in every worker.
_PRELOAD = [
    "vintage.training.fit",
    "pandas",
    "sklearn.metrics",
    "sklearn.model_selection",
    "vintage.evaluation.plots",
    "matplotlib.figure",
    "matplotlib.backends.backend_agg",
]
_POLL_S = 0.2
_DIED = "the worker process died while training this point (killed, out of memory or crashed)"
# Starting a worker: the forkserver refuses or drops the request (ConnectionRefusedError, BrokenPipeError,
# EOFError) when it died; retried with a new forkserver.
_SPAWN_ERRORS = (OSError, EOFError)
_SPAWN_ATTEMPTS = 3
_SPAWN_PAUSE_S = 0.2


_ends_at_exit: list[bool] = []


def start_forkserver_early() -> None:
    """Start the workers' forkserver now, with the preload every grid needs (scikit-learn, pandas,
    matplotlib: ~1.3 s of imports), so those imports run on another core while this process reads and
    checks the config; a pool made later forks its workers from it at once. The estimator modules of the
    grid, unknown yet, are imported by each worker (tens of milliseconds once scikit-learn is loaded).

    The forkserver is ended when this process exits (:func:`end_forkserver`).
    """
    from multiprocessing import forkserver

    multiprocessing.get_context("forkserver").set_forkserver_preload(_PRELOAD)
    _end_forkserver_at_exit()
    with contextlib.suppress(OSError):  # out of processes or memory: the pool starts one later, or says why
        forkserver.ensure_running()


def _end_forkserver_at_exit() -> None:
    if not _ends_at_exit:
        atexit.register(end_forkserver)
        _ends_at_exit.append(True)


def end_forkserver() -> None:
    """End the forkserver now: at exit (its workers ended with their pool), or when no pool will need it.

    Left alone, it would notice this process's end and then tear down its interpreter (scikit-learn,
    pandas, matplotlib: ~0.3 s) while still holding this command's stdout and stderr, so a caller reading
    them (a pipe, CI, ``$(vintage ...)``) would wait for it; and one started early that no pool used would
    outlive a config error.
    """
    _reset_forkserver()


def default_jobs() -> int:
    """Cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class LocalExecutor:
    """Starts training on submit; results are collected later with :meth:`results`.

    Args:
        points: the grid points.
        init_args: arguments for :func:`~vintage.training.fit.init_worker` (data, columns, cv, seed).
        n_jobs: worker processes (1 = train in this process).
    """

    def __init__(
        self,
        points: Sequence[GridPoint],
        init_args: tuple[Any, ...],
        n_jobs: int,
        protect: Sequence[str] = (),
    ) -> None:
        self._points = list(points)
        self._protect = tuple(protect)
        self._init_args = init_args
        self._jobs = max(1, min(n_jobs, len(self._points)))
        self._pool: ProcessPoolExecutor | None = None
        self._futures: dict[Future[FitResult], GridPoint] = {}
        self._starter: threading.Thread | None = None
        self._submit_error: BaseException | None = None

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
        """``n_jobs`` or ``training.n_jobs`` processes (default: every core this process may use)."""
        return cls(points, init_args, n_jobs or spec.training.n_jobs or default_jobs(), protect=protect)

    @property
    def n_jobs(self) -> int:
        """Worker processes actually used."""
        return self._jobs

    def start(self) -> None:
        """Submit every point and return at once (training begins in the background when n_jobs > 1).

        Submitting blocks until the forkserver has preloaded scikit-learn (~1 s), so it happens on a
        thread: the caller meanwhile imports MLflow and opens the tracking store.
        """
        if self._jobs == 1:
            return
        self._pool = self._new_pool(self._jobs)
        self._starter = threading.Thread(target=self._submit_all, name="vintage-submit", daemon=True)
        self._starter.start()

    def _submit_all(self) -> None:
        assert self._pool is not None
        for attempt in range(1, _SPAWN_ATTEMPTS + 1):
            try:
                for point in self._points:
                    self._futures[self._pool.submit(fit_point, point)] = point
                return
            except _SPAWN_ERRORS as exc:  # no result was read yet: start over with a fresh forkserver
                self._discard_pool()
                if attempt == _SPAWN_ATTEMPTS:
                    self._submit_error = _spawn_failed(exc)
                    return
                _reset_forkserver()
                time.sleep(_SPAWN_PAUSE_S * attempt)
                self._pool = self._new_pool(self._jobs)
            except BaseException as exc:
                self._submit_error = exc
                return

    def _discard_pool(self) -> None:
        """Drop a pool that could not start all its workers (cancel its work, end the workers it has)."""
        if self._pool is None:
            return
        procs = list(getattr(self._pool, "_processes", {}).values())
        self._pool.shutdown(wait=False, cancel_futures=True)
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.join(timeout=10)
        self._futures.clear()
        self._pool = None

    def results(self, stop: threading.Event | None = None) -> Iterator[FitResult]:
        """Yield results as points finish (in completion order).

        Args:
            stop: when set (Ctrl-C, SIGTERM), the workers are terminated and :class:`Interrupted` is
                raised from here, a known point in the caller's loop, so it can clean up.
        """
        stop = stop or threading.Event()
        if self._jobs == 1:
            init_worker(*self._init_args)
            for point in self._points:
                _check(stop)
                yield fit_point(point)
            return
        pending = {p.index: p for p in self._points}
        try:
            self._join_starter()  # a worker that died during submission breaks the pool here already
            waiting = set(self._futures)
            while waiting:
                _check(stop)
                done, waiting = wait(waiting, timeout=_POLL_S, return_when=FIRST_COMPLETED)
                for fut in done:
                    result = fut.result()
                    del self._futures[fut]  # the model is logged next: do not keep every one in memory
                    pending.pop(result.index, None)
                    _check(stop)
                    yield result
        except BrokenProcessPool:
            pass
        finally:
            self.close(kill=stop.is_set())
        for point in sorted(pending.values(), key=lambda p: p.index):
            _check(stop)
            yield self._isolated(point)

    def _join_starter(self) -> None:
        if self._starter is not None:
            self._starter.join()
            self._starter = None
        if self._submit_error is not None:
            raise self._submit_error

    def close(self, kill: bool = False) -> None:
        """Stop the workers (cancels points not started; ``kill`` also ends running ones)."""
        if self._starter is not None:
            self._starter.join()  # no submit (which may spawn a worker) races the shutdown below
        if self._pool is None:
            return
        broken = bool(getattr(self._pool, "_broken", False))
        procs = list(getattr(self._pool, "_processes", {}).values()) if kill or broken else []
        # A broken pool's manager thread joins every worker it knows, but a worker spawned by a submit
        # that raced the breakage is never told to stop (CPython 3.11): end them all here.
        self._pool.shutdown(wait=not (kill or broken), cancel_futures=True)
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.join(timeout=10)
        self._pool = None  # closing twice is a no-op

    def _isolated(self, point: GridPoint) -> FitResult:
        for attempt in range(1, _SPAWN_ATTEMPTS + 1):
            pool = self._new_pool(1)
            try:
                return pool.submit(fit_point, point).result()
            except BrokenProcessPool:
                return FitResult(point.index, error=_DIED)
            except _SPAWN_ERRORS as exc:
                if attempt == _SPAWN_ATTEMPTS:
                    raise _spawn_failed(exc) from exc
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
            _reset_forkserver()
            time.sleep(_SPAWN_PAUSE_S * attempt)
        raise AssertionError("unreachable")

    def _new_pool(self, workers: int) -> ProcessPoolExecutor:
        _end_forkserver_at_exit()
        ctx = multiprocessing.get_context("forkserver")
        modules = {p.class_path.rpartition(".")[0] for p in self._points}
        ctx.set_forkserver_preload([*_PRELOAD, *sorted(modules)])  # unless start_forkserver_early ran
        # Native thread pools (OpenMP in HistGradientBoosting, BLAS) default to every core in every worker:
        # with several workers that oversubscribes the machine and slows fits 10x or more. Split the cores.
        threads = max(1, default_jobs() // workers)
        return ProcessPoolExecutor(
            workers,
            mp_context=ctx,
            initializer=_init_pool_worker,
            initargs=(threads, self._protect, *self._init_args),
        )


def _reset_forkserver() -> None:
    """Make the next worker start with a new forkserver.

    Python 3.11 starts multiprocessing's forkserver without checking that it came up, and notices a dead
    one only once it has been reaped: a forkserver that died at start (out of memory or processes, killed)
    or that is still exiting after a failed ``fork()`` makes every request fail with
    ``ConnectionRefusedError`` (or ``BrokenPipeError``). Kill and reap it, and forget it.
    """
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver")  # noqa: B009 - private in the stdlib, not in typeshed
    with server._lock:
        pid, address, alive_fd = (
            server._forkserver_pid,
            server._forkserver_address,
            server._forkserver_alive_fd,
        )
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        with contextlib.suppress(OSError):
            os.close(alive_fd)
        if isinstance(address, str) and not address.startswith("\0"):
            with contextlib.suppress(OSError):
                Path(address).unlink()
        server._forkserver_pid = server._forkserver_address = server._forkserver_alive_fd = None


def _spawn_failed(exc: BaseException) -> TrainingError:
    return TrainingError(
        f"cannot start the training worker processes: {exc.__class__.__name__}: {first_line(exc)}",
        hint="the machine may be short of memory or processes; run again, or train in this process"
        " with --n-jobs 1",
    )


def _init_pool_worker(threads: int, protect: tuple[str, ...], *init_args: Any) -> None:
    # (A worker gets this process's sys.path of when it starts, not the forkserver's: multiprocessing
    # sends it along, so the config's directory, added after an early start, is on it.)
    from threadpoolctl import threadpool_limits

    if protect:
        _redact_output(protect)
    threadpool_limits(limits=threads)
    init_worker(*init_args)


def _redact_output(values: tuple[str, ...]) -> None:
    """In a worker that holds secret values: redact them from its stdout and stderr (where logging's
    last-resort handler writes too)."""
    import sys

    from vintage import redact

    for value in values:
        redact.register(value)
    sys.stdout = redact.RedactingStream(sys.__stdout__)  # type: ignore[arg-type]
    sys.stderr = redact.RedactingStream(sys.__stderr__)  # type: ignore[arg-type]


def _check(stop: threading.Event) -> None:
    if stop.is_set():
        raise Interrupted(
            "training interrupted; unfinished runs are marked KILLED and nothing was registered"
        )


class WholeStages:
    """``compute.engine: databricks``: grids do not train in this process; the stage that trains runs
    as a Databricks job run (the ``databricks`` stage backend), which trains on the cluster's Spark."""

    @classmethod
    def from_spec(cls, spec: Spec, *args: Any, **kwargs: Any) -> NoReturn:
        raise TrainingError(
            f"the {spec.compute.engine} engine runs whole stages as job runs, not grids in this process",
            hint="use compute.engine local or spark here",
        )
