"""Whole-process behaviour: the installed `vintage` command, start-up imports, concurrency, the UI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from e2e.test_train import _client

VINTAGE = shutil.which("vintage", path=str(Path(sys.executable).parent)) or "vintage"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _has_runs(db: Path) -> bool:
    """Raw sqlite look (an MLflow client would try to migrate a schema that is being created)."""
    if not db.exists():
        return False
    try:
        with sqlite3.connect(db, timeout=1) as con:
            return bool(con.execute("SELECT count(*) FROM runs").fetchone()[0])
    except sqlite3.Error:
        return False


def test_help_imports_no_heavy_library():
    code = (
        "import sys\n"
        "from vintage.cli.main import run\n"
        "try:\n    run(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in ('mlflow', 'sklearn', 'pandas', 'pyspark', 'kubernetes', 'pydantic',"
        " 'pyarrow', 'databricks', 'cryptography')"
        " if m in sys.modules)\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY=\n" in out, out


def test_console_script_exit_codes(project):
    assert subprocess.run([VINTAGE, "--version"], capture_output=True).returncode == 0
    bad = subprocess.run([VINTAGE, "train", "--n-jobs", "0"], capture_output=True, text=True)
    assert bad.returncode == 2  # usage error from the option parser
    (project / "vintage.yaml").write_text("selection: {metric: loss}\n")
    cfg = subprocess.run([VINTAGE, "config", "validate"], capture_output=True, text=True)
    assert cfg.returncode == 2
    assert cfg.stderr.startswith(
        "error: vintage.yaml: selection.metric: Input should be 'rmse', 'mae', 'r2', 'acc_0.5', 'acc_1.0',"
        " 'accuracy' or 'balanced_accuracy' (got 'loss')"
    )
    # A metric of the other kind of model: the headline says which kind the estimators are.
    (project / "vintage.yaml").write_text("selection: {metric: accuracy}\n")
    cfg = subprocess.run([VINTAGE, "config", "validate"], capture_output=True, text=True)
    assert cfg.returncode == 2
    assert "selection.metric accuracy is a classifier metric, but the estimators are regressors" in cfg.stderr


@pytest.mark.slow
def test_two_concurrent_trainings_register_one_version(project):
    procs = [
        subprocess.Popen(
            [VINTAGE, "train", "--json", "-j", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    versions = sorted(json.loads(o[0])["registered"]["version"] for o in outs)
    assert versions == [1, 1]
    client = _client(project)
    assert len(client.search_model_versions("name='winequality'")) == 1
    exp = client.get_experiment_by_name("DrinksQuality")
    assert (
        len(client.search_runs([exp.experiment_id], filter_string="tags.`vintage.role` = 'grid-point'")) == 6
    )


@pytest.mark.slow
def test_interrupted_training_leaves_no_running_runs_and_no_version(project):
    spec = (project / "vintage.yaml").read_text()
    slow_grid = "  grid: {n_estimators: [500, 501, 502, 503, 504, 505]}\n"
    spec = spec.replace(
        "  class: sklearn.linear_model.ElasticNet", "  class: sklearn.ensemble.RandomForestRegressor"
    )
    spec = spec.split("  grid:")[0] + slow_grid + "selection: {metric: rmse}\n"
    spec = spec.replace("  params: {random_state: 42}\n", "")
    (project / "vintage.yaml").write_text(spec)
    proc = subprocess.Popen(
        [VINTAGE, "train", "-j", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    db = project / ".vintage" / "mlflow.db"
    deadline = time.time() + 60
    while time.time() < deadline and not _has_runs(db):  # wait until runs exist, then interrupt
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    client = _client(project)
    exp = client.get_experiment_by_name("DrinksQuality")
    statuses = {r.info.status for r in client.search_runs([exp.experiment_id])}
    assert "RUNNING" not in statuses and "KILLED" in statuses
    assert not client.search_registered_models()


@pytest.mark.slow
def test_ui_serves_mlflow_on_loopback(project, cli):
    assert cli("train").code == 0
    port = _free_port()
    proc = subprocess.Popen(
        [VINTAGE, "ui", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 90
        body = b""
        while time.time() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                    body = resp.read()
                    break
            except OSError:
                time.sleep(0.5)
        assert body == b"OK", proc.stderr.read1() if proc.poll() is not None else "no answer"
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name?experiment_name=DrinksQuality"
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert json.load(resp)["experiment"]["name"] == "DrinksQuality"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def _fill_disk_at(limit: int):
    """preexec_fn: files of this process cannot grow past ``limit`` bytes (as on a full disk: writes
    fail with EFBIG instead of the process being killed by SIGXFSZ)."""
    import resource

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.slow
def test_full_disk_while_creating_the_store_leaves_no_store_and_a_clear_error(project):
    full = subprocess.run(
        [VINTAGE, "train", "-j", "1"], capture_output=True, text=True, preexec_fn=_fill_disk_at(300_000)
    )
    assert full.returncode == 1
    assert full.stderr.startswith("error: cannot create the tracking store .vintage/mlflow.db: "), full.stderr
    assert "hint: free disk space" in full.stderr
    state = project / ".vintage"
    assert not (state / "mlflow.db").exists() and not list(state.glob(".mlflow.db.*"))
    again = subprocess.run([VINTAGE, "train", "-j", "1"], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert again.stderr == ""


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # renamed in the meantime
        return 0


@pytest.mark.slow
def test_killed_while_creating_the_store_every_later_command_works(project):
    state = project / ".vintage"
    proc = subprocess.Popen([VINTAGE, "models"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:  # kill it while the schema is being created
        if any(_size(f) > 500_000 for f in [*state.glob("mlflow.db"), *state.glob(".mlflow.db.*.tmp")]):
            proc.kill()
            break
        time.sleep(0.005)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the store was created before the process could be killed"
    train = subprocess.run([VINTAGE, "train", "-j", "1"], capture_output=True, text=True)
    assert train.returncode == 0, train.stderr
    models = subprocess.run([VINTAGE, "models", "--json"], capture_output=True, text=True)
    assert models.returncode == 0, models.stderr
    assert json.loads(models.stdout)[0]["name"] == "winequality"


def _read_only_run(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run vintage with ``state`` read-only for it: a read-only bind mount in a private mount namespace
    when running as root (root ignores permission bits), else permission bits."""
    if os.geteuid() != 0:
        for path in [state, *state.rglob("*")]:
            path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            return subprocess.run([VINTAGE, *args], capture_output=True, text=True)
        finally:
            for path in [state, *state.rglob("*")]:
                path.chmod(0o755 if path.is_dir() else 0o644)
    unshare = shutil.which("unshare")
    probe = unshare and subprocess.run(
        [unshare, "-m", "sh", "-c", f"mount --bind -o ro '{state}' '{state}'"], capture_output=True
    )
    if not probe or probe.returncode != 0:
        pytest.skip("running as root without a way to make a read-only mount (unshare -m)")
    script = 'mount --bind -o ro "$0" "$0" && shift && exec "$@"'
    return subprocess.run(
        [unshare, "-m", "sh", "-c", script, str(state), "-", VINTAGE, *args], capture_output=True, text=True
    )


@pytest.mark.parametrize("checkpointed", [True, False], ids=["closed-cleanly", "with-wal-files"])
def test_read_only_state_dir_read_commands_work_and_writes_name_the_file(project, checkpointed):
    from vintage import audit
    from vintage.pipeline.state import StateStore

    state = project / ".vintage"
    run_id = "20261201-000000-abcd"
    StateStore(state).create_run(run_id, "me", "digest", [("build", None, ["train"])], {})
    audit.record(state, "run.start", run_id)
    for name in ("pipeline.db", "audit.db"):
        if checkpointed:  # SQLite removed them on the last close; else a reader needs them
            assert not (state / f"{name}-wal").exists()
        else:
            (state / f"{name}-wal").touch()
            (state / f"{name}-shm").write_bytes(b"\0" * 32768)

    runs = _read_only_run(state, "runs", "list", "--json")
    assert runs.returncode == 0, runs.stderr
    assert [r["id"] for r in json.loads(runs.stdout)] == [run_id]
    trail = _read_only_run(state, "audit", "--json")
    assert trail.returncode == 0, trail.stderr
    assert [e["target"] for e in json.loads(trail.stdout)] == [run_id]
    status = _read_only_run(state, "status", "--json")
    assert status.returncode == 0, status.stderr

    train = _read_only_run(state, "train", "-j", "1")  # a write: one line naming the directory
    assert train.returncode == 1
    assert train.stderr.startswith("error: cannot create the state directory .vintage: "), train.stderr


_EXIT_PROBE = """
import atexit, sys, threading, time
sys.argv = ["vintage", *sys.argv[1:]]

class Teardown:
    def __del__(self):
        print("module teardown", flush=True)

KEPT = Teardown()  # deleted only when the interpreter tears the modules down
atexit.register(lambda: print("atexit ran", flush=True))
if "--with-thread" in sys.argv:
    sys.argv.remove("--with-thread")
    threading.Thread(target=lambda: (time.sleep(0.3), print("thread done", flush=True))).start()
from vintage.cli.main import run
run()
"""


def test_the_command_line_ends_after_atexit_without_tearing_the_interpreter_down(tmp_path):
    # run() from the command line: atexit handlers run, output is flushed, the exit code is the command's,
    # and the teardown of every module (0.6-1.2 s of CPU with MLflow loaded) is skipped.
    probe = tmp_path / "probe.py"
    probe.write_text(_EXIT_PROBE)
    ok = subprocess.run([sys.executable, str(probe), "--version"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[-1] == "atexit ran" and "vintage" in ok.stdout
    assert "module teardown" not in ok.stdout
    bad = subprocess.run(
        [sys.executable, str(probe), "-c", str(tmp_path / "missing.yaml"), "config", "validate"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2, bad.stderr
    assert bad.stderr.startswith("error: "), bad.stderr
    assert bad.stdout == "atexit ran\n"


def test_the_command_line_exits_as_python_does_while_another_thread_runs(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(_EXIT_PROBE)
    out = subprocess.run(
        [sys.executable, str(probe), "--with-thread", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines.index("thread done") < lines.index("atexit ran") < lines.index("module teardown")


def _processes_with(marker: str) -> list[str]:
    """Command lines of the processes whose environment holds ``marker``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if marker.encode() in (proc / "environ").read_bytes():
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except (OSError, ValueError):  # gone meanwhile, or not a process
            continue
    return found


@pytest.mark.slow
def test_train_leaves_no_process_behind(project):
    # `vintage train` starts the workers' forkserver before it reads the config; whether the config is
    # refused or the grid trains, nothing of it outlives the command. (Output goes to files: a reader of
    # pipes would wait for every process holding them, which is what a forkserver left running does to CI.)
    marker = f"VINTAGE_TEST_MARKER={os.getpid()}-{time.monotonic_ns()}"
    env = {**os.environ, marker.split("=")[0]: marker.split("=")[1]}
    (project / "bad.yaml").write_text("selection: {metric: loss}\n")
    runs = [(["-c", "bad.yaml", "train"], 2), (["train", "--json", "-j", "2"], 0)]
    for args, code in runs:
        with (project / "out.txt").open("w") as out, (project / "err.txt").open("w") as err:
            done = subprocess.run([VINTAGE, *args], cwd=project, env=env, stdout=out, stderr=err, check=False)
        assert done.returncode == code, (project / "err.txt").read_text()
        # multiprocessing's resource tracker (a small process that frees leaked semaphores) ends by itself
        # once the command is gone, as it always did; anything else must be gone already.
        left = _processes_with(marker)
        assert [c for c in left if "multiprocessing.resource_tracker" not in c] == [], args
        deadline = time.monotonic() + 30
        while left and time.monotonic() < deadline:
            time.sleep(0.05)
            left = _processes_with(marker)
        assert left == [], args
