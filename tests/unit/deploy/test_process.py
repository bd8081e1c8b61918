"""The local target's process helpers, on real child processes."""

from __future__ import annotations

import subprocess
import sys

from vintage.deploy import process

SLEEPER = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ignoring', flush=True); time.sleep(120)"
)


def test_an_adopted_child_is_reaped_once_stopped_and_never_taken_for_a_server() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    process.adopt(proc)
    assert process.alive(proc.pid)
    assert not process.is_server(proc.pid)  # a recycled pid running something else is not ours
    process.terminate(proc.pid, 30.0)
    assert not process.alive(proc.pid) and proc.returncode is not None  # reaped: no zombie left


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace() -> None:
    proc = subprocess.Popen([sys.executable, "-c", SLEEPER], start_new_session=True, stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"ignoring\n"  # SIGTERM is ignored now
    process.adopt(proc)
    process.terminate(proc.pid, 0.5)
    assert not process.alive(proc.pid) and proc.returncode == -9  # SIGKILL after the grace
    proc.stdout.close()
