"""LocalExecutor: in-process and forkserver workers give the same results; a dying worker fails one point."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from vintage.config import DataSpec
from vintage.data import Dataset, load_dataset
from vintage.training.executor import LocalExecutor
from vintage.training.fit import FitResult
from vintage.training.grid import GridPoint

from .crashy import CLASS_PATH as CRASHY

ENET = "sklearn.linear_model.ElasticNet"
KNN = "sklearn.neighbors.KNeighborsRegressor"


@pytest.fixture(scope="module")
def red() -> Dataset:
    return load_dataset(DataSpec(dataset="red"))


@pytest.fixture(scope="module")
def init_args(red: Dataset) -> tuple[Any, ...]:
    train, test = red.split(0.25, 40, group_duplicates=False)
    return (train, test, list(red.features), red.target, None, 40)


def enet_points() -> list[GridPoint]:
    grid = [(0.5, 0.5), (0.3, 0.3), (0.1, 0.1)]
    return [
        GridPoint(i, "ElasticNet", ENET, {"alpha": a, "l1_ratio": r, "random_state": 42}, {"alpha": a})
        for i, (a, r) in enumerate(grid)
    ]


def run_all(points: list[GridPoint], init_args: tuple[Any, ...], n_jobs: int) -> dict[int, FitResult]:
    executor = LocalExecutor(points, init_args, n_jobs)
    executor.start()
    try:
        results = list(executor.results())
    finally:
        executor.close()
    by_index = {r.index: r for r in results}
    assert len(by_index) == len(results) == len(points)  # one result per point, none twice
    return by_index


def test_n_jobs_is_capped_by_number_of_points(init_args: tuple[Any, ...]) -> None:
    points = enet_points()

    assert LocalExecutor(points, init_args, 8).n_jobs == 3
    assert LocalExecutor(points, init_args, 2).n_jobs == 2
    assert LocalExecutor(points, init_args, 0).n_jobs == 1


def test_single_job_trains_in_this_process(init_args: tuple[Any, ...]) -> None:
    points = [GridPoint(0, "c", CRASHY, {"crash": False}, {})]

    results = run_all(points, init_args, 1)

    assert results[0].ok, results[0].error
    assert results[0].model.fit_pid_ == os.getpid()


@pytest.mark.slow
def test_two_jobs_give_same_metrics_as_one(init_args: tuple[Any, ...]) -> None:
    points = enet_points()

    serial = run_all(points, init_args, 1)
    parallel = run_all(points, init_args, 2)

    assert sorted(parallel) == [0, 1, 2]
    for i in range(3):
        assert serial[i].ok and parallel[i].ok, (serial[i].error, parallel[i].error)
        assert parallel[i].metrics == serial[i].metrics
        assert parallel[i].effective_params == serial[i].effective_params
    assert serial[0].metrics["rmse"] == pytest.approx(0.7932, abs=5e-4)


def test_estimator_error_in_worker_fails_only_that_point(init_args: tuple[Any, ...]) -> None:
    n_train = len(init_args[0])
    points = [*enet_points()[:2], GridPoint(2, "knn", KNN, {"n_neighbors": n_train + 1}, {})]

    results = run_all(points, init_args, 2)

    assert results[0].ok and results[1].ok
    assert not results[2].ok
    assert results[2].error is not None
    assert results[2].error.startswith("ValueError: ")


def test_worker_crash_fails_only_the_crashing_point(init_args: tuple[Any, ...]) -> None:
    # CrashyRegressor lives in tests/unit/training; workers can import it because forkserver children
    # receive the parent's sys.path (tests/ is added by tests/conftest.py) in multiprocessing's
    # preparation data. The survivors' fit_pid_ below proves they were imported and fit in a worker.
    points = [
        GridPoint(0, "crashy", CRASHY, {"crash": False, "offset": 0.0}, {}),
        GridPoint(1, "crashy", CRASHY, {"crash": True}, {"crash": True}),
        GridPoint(2, "crashy", CRASHY, {"crash": False, "offset": 0.5}, {}),
        GridPoint(3, "ElasticNet", ENET, {"alpha": 0.5, "l1_ratio": 0.5, "random_state": 42}, {}),
    ]
    expected = run_all([p for p in points if not p.params.get("crash")], init_args, 1)

    results = run_all(points, init_args, 2)

    crashed = results[1]
    assert not crashed.ok
    assert crashed.error is not None
    assert "worker process died" in crashed.error
    for i in (0, 2, 3):
        assert results[i].ok, results[i].error
        assert results[i].metrics == expected[i].metrics
    # The survivors really trained in worker processes (so the test module imported there).
    assert results[0].model.fit_pid_ != os.getpid()
    assert results[2].model.fit_pid_ != os.getpid()


def test_pool_workers_split_the_cores_between_native_thread_pools(init_args: tuple[Any, ...]) -> None:
    # Two workers each running OpenMP/BLAS on every core oversubscribe the machine (10x slower fits).
    from vintage.training.executor import default_jobs

    points = [GridPoint(i, "Crashy", CRASHY, {"offset": float(i)}, {}) for i in range(2)]

    results = run_all(points, init_args, n_jobs=2)

    expected = max(1, default_jobs() // 2)
    assert {r.model.native_threads_ for r in results.values()} == {expected}


@pytest.fixture
def failing_forkserver(tmp_path: Path) -> Iterator[Callable[[int], None]]:
    """Make the next ``n`` forkserver processes die at start, before they accept a request (as one
    killed or out of memory or processes does), by starting them through a wrapper of the interpreter.

    This was ``error: unexpected ConnectionRefusedError`` from ``vintage train`` under load: Python 3.11
    connects to a forkserver it never checked came up (refused when it had died before the request,
    BrokenPipeError when it died after it; which one depends on timing)."""
    import multiprocessing.spawn as mp_spawn

    from vintage.training.executor import _reset_forkserver

    python = os.fsdecode(mp_spawn.get_executable())
    counter = tmp_path / "forkserver-starts"

    def fail_next(n: int) -> None:
        wrapper = tmp_path / "python-wrapper"
        wrapper.write_text(
            "#!/bin/sh\n"
            'case "$*" in *"multiprocessing.forkserver import main"*)\n'
            f'  echo x >> "{counter}"\n'
            f'  [ "$(wc -l < "{counter}")" -le {n} ] && exit 1;;\n'
            "esac\n"
            f'exec "{python}" "$@"\n'
        )
        wrapper.chmod(0o755)
        _reset_forkserver()  # one started by an earlier test would be used as it is
        mp_spawn.set_executable(str(wrapper))

    yield fail_next
    mp_spawn.set_executable(python)
    _reset_forkserver()


@pytest.mark.slow
def test_a_forkserver_that_died_at_start_is_replaced(
    init_args: tuple[Any, ...], failing_forkserver: Callable[[int], None]
) -> None:
    failing_forkserver(1)

    results = run_all(enet_points(), init_args, 2)

    assert all(r.ok for r in results.values()), [r.error for r in results.values()]
    assert results[0].metrics == run_all(enet_points()[:1], init_args, 1)[0].metrics


def test_workers_that_cannot_start_at_all_are_a_clear_training_error(
    init_args: tuple[Any, ...], failing_forkserver: Callable[[int], None]
) -> None:
    from vintage.errors import TrainingError

    failing_forkserver(1000)

    with pytest.raises(TrainingError) as exc:
        run_all(enet_points(), init_args, 2)
    assert exc.value.headline.startswith("cannot start the training worker processes: ")
    assert "--n-jobs 1" in (exc.value.hint or "")


@pytest.mark.slow
def test_a_forkserver_that_died_after_a_failed_fork_is_replaced(
    init_args: tuple[Any, ...],
    failing_forkserver: Callable[[int], None],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    failing_forkserver(0)  # a fresh forkserver, which preloads the module below
    flag = tmp_path / "fork-failed"
    monkeypatch.setenv("FAILFORK_FLAG", str(flag))
    # The 3.11 forkserver preloads with the default sys.path, not the parent's: let it find tests/.
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[2]))
    once = "unit.training.failfork.ElasticNetOnce"  # its import makes the forkserver's 2nd fork() fail once
    points = [GridPoint(i, "enet", once, p.params, {}) for i, p in enumerate(enet_points())]

    results = run_all(points, init_args, 2)

    assert flag.exists()  # the failure did happen
    assert all(r.ok for r in results.values()), [r.error for r in results.values()]
