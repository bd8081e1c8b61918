"""`make demo` on a fresh clone: wall time and the weight of its .venv, this commit against an earlier one.

Run from the repo::

    .venv/bin/python benchmarks/install.py --before <git ref> [--ref HEAD] [--repeat 3] [--json]

Each sample is what a new user does: ``git clone`` of this repository at the commit into a temporary
directory, then ``make demo`` there, timed by the wall clock from start to end (the venv created, uv
installed into it, the lock installed, the package installed, the whole pipeline run: build, staging,
production, status). Then ``du`` of the clone's ``.venv``, the servers stopped and the clone removed.
``--before`` is the anchor: the commit before the core/extras split (one lock of everything, bytecode
compiled at install) gives what `make demo` cost until then. The variants alternate, so a slow minute of a
shared machine hits both.

The package caches (uv's, pip's) are warm: this machine installed both locks before (an untimed
``make demo`` of each variant runs first when ``--warm`` is given). The environment is the caller's, so
``PYTHONDONTWRITEBYTECODE`` is what it is on this machine (set on CI machines).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TIMEOUT_S = 900
GOAL_S = 45.0
GOAL_MB = 600


@dataclass
class Sample:
    """One fresh-clone `make demo`: wall seconds, the venv's size in MB."""

    variant: str
    seconds: float
    venv_mb: int


def demo_once(ref: str, variant: str) -> Sample:
    """Clone ``ref`` into a temporary directory, run ``make demo`` there; its wall time and venv size."""
    with tempfile.TemporaryDirectory(prefix="vintage-install-") as tmp:
        clone = Path(tmp) / "vintage"
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
        subprocess.run(["git", "-C", str(clone), "checkout", "-q", ref], check=True)
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "VINTAGE_", "VIRTUAL_ENV"))
        }
        started = time.perf_counter()
        done = subprocess.run(
            ["make", "demo"], cwd=clone, env=env, capture_output=True, text=True, timeout=TIMEOUT_S
        )
        seconds = time.perf_counter() - started
        try:
            if done.returncode != 0:
                raise SystemExit(f"make demo at {ref} failed ({done.returncode}):\n{done.stderr[-3000:]}")
            size = subprocess.run(
                ["du", "-sm", str(clone / ".venv")], capture_output=True, text=True, check=True
            )
            return Sample(variant, seconds, int(size.stdout.split()[0]))
        finally:
            for environment in ("staging", "production"):
                subprocess.run(
                    [str(clone / ".venv" / "bin" / "vintage"), "stop", environment],
                    cwd=clone,
                    env=env,
                    capture_output=True,
                    timeout=120,
                )


def resolve(ref: str) -> str:
    """The commit ``ref`` names (a clone knows no local branch names but the default one)."""
    out = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--verify", ref], capture_output=True, text=True
    )
    if out.returncode != 0:
        raise SystemExit(f"unknown git ref {ref!r}")
    return out.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default="HEAD", help="the commit measured (default HEAD)")
    parser.add_argument("--before", required=True, help="the anchor commit (before the core/extras split)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--warm", action="store_true", help="an untimed make demo of each variant first")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if shutil.which("make") is None:
        raise SystemExit("make is not installed")
    variants = {"before": resolve(args.before), "now": resolve(args.ref)}
    if args.warm:
        for name, ref in variants.items():
            demo_once(ref, name)
    samples: list[Sample] = []
    for _ in range(args.repeat):
        for name, ref in variants.items():
            samples.append(demo_once(ref, name))
    if args.json:
        print(json.dumps([asdict(s) for s in samples], indent=2))
        return
    print(f"make demo on a fresh clone, warm package caches, {args.repeat} run(s) each, medians (min-max)")
    print(f"{'variant':<8} {'commit':<10} {'wall s':>18} {'.venv MB':>16}")
    for name, ref in variants.items():
        secs = [s.seconds for s in samples if s.variant == name]
        mbs = [s.venv_mb for s in samples if s.variant == name]
        wall = f"{statistics.median(secs):.1f} ({min(secs):.1f}-{max(secs):.1f})"
        size = f"{statistics.median(mbs):.0f} ({min(mbs)}-{max(mbs)})"
        print(f"{name:<8} {ref[:8]:<10} {wall:>18} {size:>16}")
    now = [s for s in samples if s.variant == "now"]
    secs, mbs = statistics.median(s.seconds for s in now), statistics.median(s.venv_mb for s in now)
    print(
        f"goals: make demo <= {GOAL_S:.0f} s: {'met' if secs <= GOAL_S else 'MISSED'} ({secs:.1f} s); ",
        end="",
    )
    print(f"core venv <= {GOAL_MB} MB: {'met' if mbs <= GOAL_MB else 'MISSED'} ({mbs:.0f} MB)")


if __name__ == "__main__":
    main()
