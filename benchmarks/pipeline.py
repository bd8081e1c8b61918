"""Wall-clock time of the whole pipeline, ``vintage run --auto-approve``, from a cold process to a production
endpoint that passed its smoke test.

Run from the repo (any working directory works)::

    .venv/bin/python benchmarks/pipeline.py [--repeat 3] [--timeout 300] [--json]

What one repetition does:

1. Makes a fresh temporary project directory holding a copy of the repo's vintage.yaml, with its
   ``environments`` moved to two free loopback ports (so nothing clashes with a ``make demo`` on 8081/8082
   or with another repetition). Everything else in the spec is kept, and the state directory (``.vintage``)
   lives inside the project.
2. Untimed: ``vintage secrets create-scope production/serving`` and ``vintage secrets put -s
   production/serving -k primary --generate``, the production API key that the production smoke test
   sends.
3. **cold**: starts ``vintage run --auto-approve`` as a new process, the way a user would. It runs build
   (validate, train the 3-point grid, register, release) -> staging (deploy, smoke test, champion gate,
   promote) -> production (approval, deploy, smoke test with the API key, promote). It exits leaving two
   detached ``vintage serve`` processes. The store, the registry and both servers are new.
4. **warm**: the same command again in the same project, with the models registered and both servers
   running: the common re-release case. Training the same data gives the same model, so registration finds
   the existing version and each deploy is ``unchanged`` (a new version would be hot-swapped instead; the
   script prints which deploy actions it saw).
5. Always, even after a failure or a timeout: ``vintage stop staging`` and ``vintage stop production``.
   If a server still answers ``vintage status`` after that, its pid gets SIGTERM.

What each figure is (seconds; wall clock of this machine; the run's own times come from ``vintage runs show
RUN_ID --json`` afterwards):

* ``start -> production smoke passed``: from just before ``subprocess`` starts ``vintage run`` to the
  ``ended`` time of the production stage's ``smoke_test`` step. This is the figure the target is about.
  It includes Python start-up, imports and config validation.
* ``run created -> production smoke passed``: the same end point, from the run's ``created`` time.
* ``command wall``: the whole command, start to exit. After the smoke test it also promotes the production
  alias and prints both URLs with a curl example.
* ``start-up (start -> run created)``: process start, imports, loading and validating vintage.yaml.
* ``build``, ``staging``, ``production``: each stage's ``ended - started`` from the run state.

How to read it: the table gives median, min and max over ``--repeat`` repetitions (each a fresh project).
Quote medians: on a shared machine single samples swing. The target line compares the cold median of
``start -> production smoke passed`` with the target (<= 20 s on the 2-core machine).

There is no runnable anchor: the original Azure pipeline needs Databricks job clusters, ACI and AKS. There
the same path took minutes of cluster start-up plus 30-s status polling.

Every subprocess has a timeout. ``MLFLOW_*`` and ``VINTAGE_*`` variables are dropped from the children's
environment so none of them can point a run elsewhere.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "vintage.yaml"
SCOPE = "production/serving"
KEY = "primary"
ENVIRONMENTS = ("staging", "production")
SHORT_TIMEOUT_S = 60.0
TARGET_S = 20.0
TARGET_NAME = "start -> production smoke passed"

# Figures per run, in table order.
FIGURES = (
    TARGET_NAME,
    "run created -> production smoke passed",
    "command wall",
    "start-up (start -> run created)",
    "build",
    "staging",
    "production",
)

NO_ANCHOR = (
    "no runnable anchor: the original Azure pipeline needs Databricks job clusters, ACI and AKS "
    "(minutes of cluster start-up plus 30-s status polling)"
)


@dataclass
class RunSample:
    """One timed ``vintage run --auto-approve``."""

    kind: str  # cold | warm
    run_id: str
    figures: dict[str, float]
    deploys: dict[str, str] = field(default_factory=dict)  # environment -> deploy action


@dataclass
class Machine:
    """Where the figures were taken."""

    cores: int
    python: str
    mlflow: str
    scikit_learn: str
    platform: str
    loadavg_before: tuple[float, float, float]


def machine() -> Machine:
    """Describe this machine without importing MLflow or scikit-learn."""
    return Machine(
        cores=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0,
        python=platform.python_version(),
        mlflow=_dist_version("mlflow"),
        scikit_learn=_dist_version("scikit-learn"),
        platform=platform.platform(),
        loadavg_before=os.getloadavg(),
    )


def _dist_version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def vintage_cli() -> str:
    """The ``vintage`` console script next to this interpreter (the venv's), else the one on PATH."""
    beside = Path(sys.executable).parent / "vintage"
    if beside.exists():
        return str(beside)
    found = shutil.which("vintage")
    if found is None:
        raise SystemExit("cannot find the `vintage` command; run this with the project's .venv/bin/python")
    return found


def child_env() -> dict[str, str]:
    """This environment without MLflow/vintage overrides."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "VINTAGE_"))}


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (held open together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def project_dir(root: Path) -> Path:
    """A new project under ``root``: the repo's vintage.yaml with the environments on free loopback ports."""
    work = Path(tempfile.mkdtemp(prefix="project-", dir=root))
    spec = yaml.safe_load(CONFIG.read_text(encoding="utf-8")) or {}
    envs = spec.get("environments") or {"staging": {}, "production": {"api_keys": True}}
    for name, port in zip(envs, free_ports(len(envs)), strict=True):
        envs[name] = {**(envs[name] or {}), "host": "127.0.0.1", "port": port}
    spec["environments"] = envs
    (work / "vintage.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return work


def run_checked(cmd: list[str], cwd: Path, timeout: float = SHORT_TIMEOUT_S) -> str:
    """Run to completion; stdout.

    Raises:
        RuntimeError: the command failed (its stderr tail is in the message).
    """
    proc = subprocess.run(cmd, cwd=cwd, env=child_env(), capture_output=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace")[-2000:]
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{tail}")
    return proc.stdout.decode()


def create_key(cli: str, work: Path) -> None:
    """The production API key (untimed)."""
    run_checked([cli, "secrets", "create-scope", SCOPE], work)
    run_checked([cli, "secrets", "put", "-s", SCOPE, "-k", KEY, "--generate"], work)


def _ts(text: str | None) -> float:
    if not text:
        raise RuntimeError("the run state lacks a timestamp the benchmark needs")
    return datetime.fromisoformat(text).timestamp()


def timed_run(cli: str, work: Path, kind: str, timeout: float) -> RunSample:
    """``vintage run --auto-approve`` in ``work`` as a new process; its figures from the wall clock and the
    run state.

    Raises:
        RuntimeError: the command failed or the run did not succeed (the output tail is in the message).
    """
    log_path = work / f"run-{kind}.log"
    with log_path.open("wb") as log:
        started_wall = time.time()
        started = time.perf_counter()
        proc = subprocess.run(
            [cli, "run", "--auto-approve"],
            cwd=work,
            env=child_env(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
        wall = time.perf_counter() - started
    output = log_path.read_text(encoding="utf-8", errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"vintage run --auto-approve ({kind}) exited {proc.returncode}:\n{output[-3000:]}")
    found = re.search(r"^run (\S+)$", output, re.MULTILINE)
    if found is None:
        raise RuntimeError(f"no run id in the output of vintage run ({kind}):\n{output[-3000:]}")
    run_id = found.group(1)
    state = json.loads(run_checked([cli, "runs", "show", run_id, "--json"], work))
    if state["status"] != "succeeded":
        raise RuntimeError(f"run {run_id} ({kind}) is {state['status']}: {state.get('reason')}")
    stages = {s["name"]: s for s in state["stages"]}
    smoke = next(s for s in stages["production"]["steps"] if s["name"] == "smoke_test")
    smoke_end, created = _ts(smoke["ended"]), _ts(state["created"])
    figures = {
        TARGET_NAME: smoke_end - started_wall,
        "run created -> production smoke passed": smoke_end - created,
        "command wall": wall,
        "start-up (start -> run created)": created - started_wall,
    }
    for name in ("build", "staging", "production"):
        figures[name] = _ts(stages[name]["ended"]) - _ts(stages[name]["started"])
    deploys = {
        str(s["environment"]): str(step["output"].get("action"))
        for s in state["stages"]
        for step in s["steps"]
        if step["name"] == "deploy"
    }
    return RunSample(kind, run_id, figures, deploys)


def stop_servers(cli: str, work: Path, progress: Callable[[str], None]) -> None:
    """``vintage stop`` both environments; SIGTERM a server that still shows in ``vintage status``."""
    for env in ENVIRONMENTS:
        try:
            run_checked([cli, "stop", env], work)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            progress(f"vintage stop {env} failed: {exc}")
    try:
        left = json.loads(run_checked([cli, "status", "--json"], work))
    except (RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
        progress(f"vintage status failed after stopping: {exc}")
        return
    for env, dep in left.items():
        if dep and dep.get("pid"):
            progress(f"{env} still runs (pid {dep['pid']}) after vintage stop; sending SIGTERM")
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(dep["pid"]), signal.SIGTERM)


def repetition(root: Path, cli: str, timeout: float, progress: Callable[[str], None]) -> list[RunSample]:
    """One fresh project: the cold run, then the warm run; servers stopped in any case."""
    work = project_dir(root)
    try:
        create_key(cli, work)
        cold = timed_run(cli, work, "cold", timeout)
        progress(f"  cold run {cold.run_id}: {cold.figures[TARGET_NAME]:.2f} s to production smoke passed")
        warm = timed_run(cli, work, "warm", timeout)
        deploys = ", ".join(f"{k} {v}" for k, v in warm.deploys.items())
        progress(
            f"  warm run {warm.run_id}: {warm.figures[TARGET_NAME]:.2f} s to production smoke passed "
            f"(deploys: {deploys})"
        )
        return [cold, warm]
    finally:
        stop_servers(cli, work, progress)


def run_all(repeat: int, timeout: float, progress: Callable[[str], None]) -> list[RunSample]:
    cli = vintage_cli()
    samples: list[RunSample] = []
    with tempfile.TemporaryDirectory(prefix="vintage-bench-pipeline-") as tmp:
        for i in range(repeat):
            progress(f"repeat {i + 1}/{repeat}")
            samples.extend(repetition(Path(tmp), cli, timeout, progress))
    return samples


def summary(samples: list[RunSample]) -> list[dict[str, Any]]:
    """Median, min and max of every figure, cold and warm."""
    rows: list[dict[str, Any]] = []
    for kind in ("cold", "warm"):
        mine = [s for s in samples if s.kind == kind]
        for name in FIGURES:
            values = [s.figures[name] for s in mine]
            rows.append(
                {
                    "run": kind,
                    "name": name,
                    "median_s": round(statistics.median(values), 3),
                    "min_s": round(min(values), 3),
                    "max_s": round(max(values), 3),
                    "n": len(values),
                    "samples_s": [round(v, 3) for v in values],
                }
            )
    return rows


def target(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The cold run's median against the target."""
    cold = next(r for r in rows if r["run"] == "cold" and r["name"] == TARGET_NAME)
    warm = next(r for r in rows if r["run"] == "warm" and r["name"] == TARGET_NAME)
    return {
        "name": f"cold {TARGET_NAME}",
        "target": f"<= {TARGET_S} s",
        "median_s": cold["median_s"],
        "warm_median_s": warm["median_s"],
        "met": cold["median_s"] <= TARGET_S,
    }


def warm_deploys(samples: list[RunSample]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for s in samples:
        if s.kind == "warm":
            for env, action in s.deploys.items():
                out.setdefault(env, []).append(action)
    return out


def render(rows: list[dict[str, Any]], samples: list[RunSample], box: Machine) -> str:
    load = ", ".join(f"{x:.2f}" for x in box.loadavg_before)
    lines = [
        f"machine: {box.cores} cores, Python {box.python}, mlflow {box.mlflow}, "
        f"scikit-learn {box.scikit_learn}; load average before: {load}",
        "cold: fresh project (new store, registry, servers); warm: same project again (servers running)",
        f"{'run':<5} {'what':<40} {'median s':>9} {'min s':>8} {'max s':>8} {'n':>3}",
    ]
    for r in rows:
        lines.append(
            f"{r['run']:<5} {r['name']:<40} {r['median_s']:>9.2f} {r['min_s']:>8.2f} {r['max_s']:>8.2f} "
            f"{r['n']:>3}"
        )
    for env, actions in warm_deploys(samples).items():
        lines.append(f"warm deploy actions, {env}: {', '.join(actions)}")
    t = target(rows)
    verdict = "met" if t["met"] else "NOT met"
    lines.append(
        f"target {t['name']} {t['target']}: median {t['median_s']:.2f} s, {verdict} "
        f"(warm: {t['warm_median_s']:.2f} s)"
    )
    lines.append(NO_ANCHOR)
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=3, help="fresh projects, each cold + warm (default 3)")
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds allowed per vintage run (default 300)"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.timeout <= 0:
        parser.error("--repeat must be >= 1 and --timeout > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    box = machine()
    samples = run_all(args.repeat, args.timeout, lambda msg: print(msg, file=sys.stderr, flush=True))
    rows = summary(samples)
    if args.json:
        payload = {
            "machine": asdict(box),
            "results": rows,
            "runs": [asdict(s) for s in samples],
            "target": target(rows),
            "anchor": NO_ANCHOR,
        }
        print(json.dumps(payload, indent=2))
    else:
        print(render(rows, samples, box))
    return 0


if __name__ == "__main__":
    sys.exit(main())
