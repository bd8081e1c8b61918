"""What the evaluation files cost `vintage train`: wall time before and after, side by side.

Run from the repo::

    .venv/bin/python benchmarks/training_overhead.py --before <git ref> [--repeat 3] [--json]

``--before`` names the commit to compare with (the one before the evaluation work). Its ``src/`` tree is
extracted with ``git archive`` into a temporary directory (the repository is only read) and run with the
same interpreter and packages, ``PYTHONPATH`` pointing at it; "after" is this checkout's ``src/``, run
the same way. Each sample is one cold ``python -m vintage -c CONFIG train`` process into a fresh state
directory (store created, grid trained, plots drawn, best run registered), timed by the wall clock.
Before and after samples alternate, so a slow minute of a shared machine hits both. One untimed run of
each variant on the default workload first writes the byte-code of the extracted tree.

Workloads: the repo's vintage.yaml (3 ElasticNet points) and examples/wine-search.yaml (36 points of four
families with 5-fold cross-validation). A check per sample makes sure the variants differ as claimed:
"after" runs have the ``acc_0.5`` metric and ``evaluation/`` plot artifacts, "before" runs neither.

The table gives the median (and min-max) seconds of each variant and the change of the medians: wall
time, and CPU time (user + system of the run's processes), which other load on a shared machine barely
moves. ``--max-load`` waits for a quiet machine before each sample.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass
from io import BytesIO
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORKLOADS = {
    "vintage.yaml": REPO / "vintage.yaml",
    "examples/wine-search.yaml": REPO / "examples" / "wine-search.yaml",
}
TIMEOUT_S = 900
GOAL_PCT = 5.0


@dataclass
class Row:
    """One workload's samples (wall and CPU seconds) and the change of the medians."""

    workload: str
    before: list[float]
    after: list[float]
    before_cpu: list[float]
    after_cpu: list[float]

    @property
    def change_pct(self) -> float:
        """(after - before) / before of the wall-time medians, in percent."""
        return _change(self.before, self.after)

    @property
    def cpu_change_pct(self) -> float:
        """(after - before) / before of the CPU-time medians, in percent."""
        return _change(self.before_cpu, self.after_cpu)


def _change(before: list[float], after: list[float]) -> float:
    b, a = statistics.median(before), statistics.median(after)
    return 100.0 * (a - b) / b


def extract(ref: str, into: Path) -> Path:
    """``src/`` of ``ref`` under ``into`` (``git archive``: reads the repository, changes nothing)."""
    blob = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", ref, "src"], check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(blob)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def env_for(src: Path) -> dict[str, str]:
    """The child's environment: no MLFLOW_*/VINTAGE_* from the caller, this source tree first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "VINTAGE_"))}
    env["PYTHONPATH"] = str(src)
    return env


def adopt_orphans() -> None:
    """Become a child subreaper (Linux): descendants orphaned by a run's exit become this process's
    children, so their CPU time can be collected."""
    import ctypes

    pr_set_child_subreaper = 36
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(pr_set_child_subreaper, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def reap_descendants() -> None:
    """Wait for every remaining child (the run's orphaned forkserver exits once the run is gone)."""
    while True:
        try:
            os.wait()
        except ChildProcessError:
            return


def wait_for_quiet(max_load: float, max_wait_s: float = 180.0) -> None:
    """Wait (at most ``max_wait_s``) until the 1-minute load average is below ``max_load``: a sample
    taken while other work runs on the machine measures that work too."""
    deadline = time.monotonic() + max_wait_s
    while os.getloadavg()[0] >= max_load and time.monotonic() < deadline:
        time.sleep(5)


def train_once(src: Path, config: Path, expect_evaluation: bool) -> tuple[float, float]:
    """Wall and CPU seconds of one cold ``vintage train`` with ``src`` into a fresh state directory.

    CPU seconds: user + system time of the process and all its descendants (the training workers and
    the forkserver that starts them), from ``getrusage(RUSAGE_CHILDREN)``: what the run cost the
    machine, which other load on it hardly changes. The forkserver outlives ``vintage`` and is never
    reaped by it; this process is a child subreaper (:func:`adopt_orphans`), so it inherits and reaps
    it, and its time (with its workers') is counted.
    """
    with tempfile.TemporaryDirectory(prefix="vintage-bench-") as tmp:
        env = env_for(src) | {"VINTAGE_STATE_DIR": str(Path(tmp) / "state")}
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "vintage", "-c", str(config), "train", "--json"],
            cwd=tmp,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )
        seconds = time.perf_counter() - started
        reap_descendants()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
        if proc.returncode != 0:
            raise SystemExit(f"vintage train failed ({src}, {config.name}):\n{proc.stderr[-2000:]}")
        _check(Path(tmp) / "state", expect_evaluation)
    return seconds, cpu


def _check(state: Path, expect_evaluation: bool) -> None:
    with sqlite3.connect(state / "mlflow.db") as db:
        acc = db.execute("SELECT COUNT(*) FROM metrics WHERE key = 'acc_0.5'").fetchone()[0]
    plots = list(state.glob("artifacts/*/artifacts/evaluation/predicted_vs_actual.png"))
    if bool(acc) != expect_evaluation or bool(plots) != expect_evaluation:
        raise SystemExit(
            f"expected {'' if expect_evaluation else 'no '}evaluation files and metrics, found "
            f"{acc} acc_0.5 metrics and {len(plots)} plot sets: is --before the right commit?"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--before", required=True, help="git ref without the evaluation files")
    parser.add_argument(
        "--before-has-evaluation",
        action="store_true",
        help="--before is a later commit that writes the evaluation files too (any change to training"
        " measured before and after): check both variants for them",
    )
    parser.add_argument("--repeat", type=int, default=3, help="samples per variant and workload")
    parser.add_argument("--only", choices=sorted(WORKLOADS), help="one workload")
    parser.add_argument("--json", action="store_true", help="print the samples as JSON")
    parser.add_argument(
        "--max-load",
        type=float,
        default=0.0,
        help="before each sample, wait until the 1-minute load average is below this (0: do not wait)",
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # temporary directories are removed
    adopt_orphans()
    tmp = Path(tempfile.mkdtemp(prefix="vintage-bench-src-"))
    try:
        before = extract(args.before, tmp)
        variants = {"before": (before, args.before_has_evaluation), "after": (REPO / "src", True)}
        for src, expect in variants.values():  # byte-code of the extracted tree; OS file cache
            train_once(src, WORKLOADS["vintage.yaml"], expect)
        rows = []
        for name, config in WORKLOADS.items():
            if args.only and name != args.only:
                continue
            samples: dict[str, list[float]] = {"before": [], "after": []}
            cpu: dict[str, list[float]] = {"before": [], "after": []}
            for i in range(args.repeat):
                order = ("before", "after") if i % 2 == 0 else ("after", "before")
                for variant in order:
                    if args.max_load:
                        wait_for_quiet(args.max_load)
                    src, expect = variants[variant]
                    wall, used = train_once(src, config, expect)
                    samples[variant].append(wall)
                    cpu[variant].append(used)
                    load = os.getloadavg()[0]
                    print(
                        f"  {name} {variant}: {wall:.2f} s, cpu {used:.2f} s, load {load:.2f}",
                        file=sys.stderr,
                    )
            rows.append(Row(name, samples["before"], samples["after"], cpu["before"], cpu["after"]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        extra = [{"change_pct": r.change_pct, "cpu_change_pct": r.cpu_change_pct} for r in rows]
        print(json.dumps([asdict(r) | e for r, e in zip(rows, extra, strict=True)], indent=2))
        return
    print(f"vintage train, median (min-max) of {args.repeat} cold runs, {os.cpu_count()} cores")
    print(f"{'workload':<27} {'':<5} {'before (s)':>20} {'after (s)':>20} {'change':>8}")
    for r in rows:
        print(
            f"{r.workload:<27} {'wall':<5} {_cell(r.before):>20} {_cell(r.after):>20} {r.change_pct:>+7.1f}%"
        )
        print(
            f"{'':<27} {'cpu':<5} {_cell(r.before_cpu):>20} {_cell(r.after_cpu):>20} "
            f"{r.cpu_change_pct:>+7.1f}%"
        )
    print(f"goal: <= {GOAL_PCT:g} % slower")


def _cell(samples: list[float]) -> str:
    return f"{statistics.median(samples):.2f} ({min(samples):.2f}-{max(samples):.2f})"


if __name__ == "__main__":
    main()
