"""Run one pipeline stage as a one-time Databricks job run on a new job cluster, through databricks-sdk.

What happens (see docs/databricks.md):

1. the project wheel and the raw vintage.yaml text (secret references unresolved) are uploaded as
   workspace files to ``/Users/<me>/.vintage/jobs/<run id>-<nonce>/`` (Workspace API ``mkdirs`` +
   ``import``; another folder with ``upload_root``);
2. ``jobs.submit`` starts a one-time run with one ``python_wheel_task`` on a ``new_cluster`` built from
   ``compute.databricks.job_cluster``; the wheel is the task's library and the entry point runs
   ``vintage -c <uploaded vintage.yaml> stage STAGE --run-id RUN_ID``;
3. ``jobs.get_run`` is polled with exponential backoff (1 s doubling to 30 s), every state change is
   reported, and on ``TERMINATED``/``SUCCESS`` ``jobs.get_run_output`` of the task run is returned;
4. a failed, timed out, cancelled, skipped or internal-error run raises a one-line
   :class:`DatabricksJobError`; a stop request (Ctrl-C) cancels the run and raises ``Interrupted``.

Host and token come resolved from the caller (this layer cannot read secrets); the token never appears
in a message. databricks-sdk is imported only when a client is built.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from vintage.errors import ConfigError, Interrupted, SparkError, first_line

if TYPE_CHECKING:
    from databricks.sdk import WorkspaceClient

HTTP_TIMEOUT_S = 10.0
"""Timeout of one HTTP request (connect and read)."""
RETRY_BUDGET_S = 2
"""Time the SDK may spend retrying one failed request (a positive whole number of seconds)."""
MAX_RETRY_PAUSE_S = 0.5
"""Longest pause between two of the SDK's own retries."""
FIRST_DELAY_S = 1.0
"""First pause between two polls of the run; it doubles after each poll."""
MAX_DELAY_S = 30.0
"""Longest pause between two polls."""
POLL_FAILURES = 3
"""Consecutive failed polls (network) tolerated before giving up."""
PACKAGE = "vintage"
ENTRY_POINT = "vintage"
SUCCESS_STATES = frozenset({"SUCCESS"})
TERMINAL_LIFE_CYCLE = frozenset({"TERMINATED", "SKIPPED", "INTERNAL_ERROR"})
_INSTALL_HINT = "install it: pip install databricks-sdk"
_PREBUILT_HINT = "give a prebuilt wheel: --wheel PATH, or VINTAGE_DATABRICKS_WHEEL for train and run"
_CREDENTIALS_HINT = "check the token (compute.databricks.token) is valid for compute.databricks.host"

Say = Callable[[str], None]


class DatabricksJobError(SparkError):
    """A Databricks job run failed, timed out, was cancelled or skipped, or the Jobs API refused it."""


def _quiet(message: str) -> None:
    pass


class DatabricksJobRunner:
    """Submit a stage as a one-time job run and wait for it.

    Args:
        host: Workspace URL (resolved, no secret reference left).
        token: Personal access token (resolved); sent only as the bearer header.
        job_cluster: ``compute.databricks.job_cluster``: the fields of the Jobs API ``new_cluster``.
        upload_root: Workspace folder under which each submission gets its own folder; default
            ``/Users/<current user>/.vintage/jobs``.
        client: A ready ``WorkspaceClient`` (tests); built from host/token when ``None``.
        sleep: Pause between polls (tests record it); default waits on the stop event.
        clock: Monotonic clock for ``max_wait_s``.
        max_wait_s: Cancel the run and fail when it has not ended after this long (``None``: no limit).
    """

    def __init__(
        self,
        host: str,
        token: str,
        job_cluster: dict[str, Any],
        *,
        upload_root: str | None = None,
        client: Any = None,
        sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        first_delay_s: float = FIRST_DELAY_S,
        max_delay_s: float = MAX_DELAY_S,
        max_wait_s: float | None = None,
    ) -> None:
        self.host = host
        self._token = token
        self.job_cluster = dict(job_cluster)
        self.upload_root = upload_root
        self._ws: Any = client
        self._sleep = sleep
        self._clock = clock
        self.first_delay_s = first_delay_s
        self.max_delay_s = max_delay_s
        self.max_wait_s = max_wait_s

    def __repr__(self) -> str:  # never shows the token
        return f"DatabricksJobRunner(host={self.host!r})"

    # ------------------------------------------------------------------------------------------------
    # The SDK client
    # ------------------------------------------------------------------------------------------------

    def _client(self) -> WorkspaceClient:
        if self._ws is None:
            self._ws = self._build()
        client: WorkspaceClient = self._ws
        return client

    def _build(self) -> WorkspaceClient:
        from vintage.databricks_sdk import workspace_client

        if not self.host:
            raise ConfigError(
                "no Databricks workspace host is configured", hint="set compute.databricks.host"
            )
        if not self._token:
            raise ConfigError("no Databricks token is configured", hint="set compute.databricks.token")
        try:
            return workspace_client(
                http_timeout_s=HTTP_TIMEOUT_S,
                retry_budget_s=RETRY_BUDGET_S,
                max_pause_s=MAX_RETRY_PAUSE_S,
                host=self.host,
                token=self._token,
                auth_type="pat",
            )
        except ImportError as exc:
            raise ConfigError(
                "engine: databricks needs the databricks-sdk package", hint=_INSTALL_HINT
            ) from exc
        except ValueError as exc:
            raise ConfigError(
                f"cannot configure the Databricks client: {self._message(exc)}",
                hint="check compute.databricks.host and compute.databricks.token",
            ) from exc

    def _call(self, what: str, call: Callable[[WorkspaceClient], Any]) -> Any:
        client = self._client()
        try:
            return call(client)
        except Exception as exc:
            self._fail(what, exc)

    def _fail(self, what: str, exc: Exception) -> NoReturn:
        """Raise the vintage error for a failed SDK call (re-raise what is not the SDK's)."""
        from databricks.sdk import errors as dbx
        from databricks.sdk.errors.base import DatabricksError

        cause = type(exc).__name__
        message = self._message(exc)
        if isinstance(exc, dbx.Unauthenticated):
            raise DatabricksJobError(
                f"{what} failed: Databricks did not accept the token ({cause}: {message})",
                hint=_CREDENTIALS_HINT,
            ) from exc
        if isinstance(exc, dbx.PermissionDenied):
            raise DatabricksJobError(
                f"{what} failed: permission denied ({cause}: {message})",
                hint="the token's user needs to create job runs, clusters and workspace files; an invalid "
                f"token is also refused: {_CREDENTIALS_HINT}",
            ) from exc
        if isinstance(exc, DatabricksError):
            raise DatabricksJobError(
                f"{what} failed ({cause}: {message})",
                hint="check compute.databricks.host and compute.databricks.job_cluster",
            ) from exc
        if _unreachable(exc):
            reason = exc.__cause__ if exc.__cause__ else exc
            raise DatabricksJobError(
                f"{what} failed: cannot reach the Databricks workspace at {self.host} "
                f"({type(reason).__name__})",
                hint="check compute.databricks.host and the network",
            ) from exc
        if isinstance(exc, ValueError):
            raise DatabricksJobError(f"{what} failed ({cause}: {message})", hint=_CREDENTIALS_HINT) from exc
        raise exc

    def _message(self, exc: BaseException) -> str:
        """The first line of an SDK error without the configuration dump, and never the token."""
        text = first_line(exc, limit=10_000).split(" Config: ", 1)[0]
        return self._scrub(text)[:300]

    def _scrub(self, text: str) -> str:
        if self._token and len(self._token) >= 4:
            text = text.replace(self._token, "[REDACTED]")
        return " ".join(text.split())

    # ------------------------------------------------------------------------------------------------
    # Submit and wait
    # ------------------------------------------------------------------------------------------------

    def cluster_spec(self) -> Any:
        """``compute.databricks.job_cluster`` as the SDK's ``ClusterSpec``.

        Raises:
            ConfigError: a field the Clusters API does not know, or a required one is missing.
        """
        from databricks.sdk.service.compute import ClusterSpec

        known = {f.name for f in fields(ClusterSpec)}
        unknown = sorted(set(self.job_cluster) - known)
        if unknown:
            raise ConfigError(
                f"compute.databricks.job_cluster has unknown fields: {', '.join(unknown)}",
                hint="use the fields of the Jobs API new_cluster (spark_version, node_type_id, autoscale...)",
            )
        for required in ("spark_version",):
            if not self.job_cluster.get(required):
                raise ConfigError(f"compute.databricks.job_cluster needs {required}")
        if "num_workers" not in self.job_cluster and "autoscale" not in self.job_cluster:
            raise ConfigError("compute.databricks.job_cluster needs num_workers or autoscale")
        return ClusterSpec.from_dict(self.job_cluster)

    def submit_stage(
        self,
        stage: str,
        *,
        wheel: Path,
        config_text: str,
        run_id: str,
        say: Say | None = None,
        stop: threading.Event | None = None,
    ) -> dict[str, Any]:
        """Upload, submit, wait; the run's output on success.

        Returns:
            ``databricks_run_id``, ``task_run_id``, ``run_page_url``, ``life_cycle_state``,
            ``result_state``, ``state_message``, ``logs``, ``logs_truncated``, ``upload_dir``, ``wheel``,
            ``config``.

        Raises:
            ConfigError: the wheel is missing or the cluster spec is wrong.
            DatabricksJobError: an API call failed or the run did not succeed.
            Interrupted: ``stop`` was set; a submitted run was cancelled.
        """
        from databricks.sdk.service.compute import Library
        from databricks.sdk.service.jobs import PythonWheelTask, SubmitTask

        say = say or _quiet
        if not wheel.is_file() or wheel.suffix != ".whl":
            raise ConfigError(f"no wheel at {wheel}", hint="build it with `pip wheel --no-deps -w dist .`")
        cluster = self.cluster_spec()
        nonce = uuid.uuid4().hex[:12]
        folder = f"{self._upload_root()}/{run_id}-{nonce}"
        wheel_path, config_path = self._upload(folder, wheel, config_text, say)
        _check_stop(stop, None)
        task_key = re.sub(r"[^A-Za-z0-9_-]", "_", f"vintage_{stage}")[:100]
        task = SubmitTask(
            task_key=task_key,
            new_cluster=cluster,
            libraries=[Library(whl=wheel_path)],
            python_wheel_task=PythonWheelTask(
                package_name=PACKAGE,
                entry_point=ENTRY_POINT,
                parameters=["-c", config_path, "stage", stage, "--run-id", run_id],
            ),
        )
        waiter = self._call(
            f"submitting stage {stage} to Databricks",
            lambda ws: ws.jobs.submit(
                run_name=f"vintage {stage} {run_id}", tasks=[task], idempotency_token=nonce
            ),
        )
        dbx_run = int(waiter.run_id)
        say(f"submitted Databricks run {dbx_run} (stage {stage}, run {run_id})")
        result = self._wait(dbx_run, say, stop)
        result.update(upload_dir=_cluster_path(folder), wheel=wheel_path, config=config_path)
        return result

    def _upload_root(self) -> str:
        if self.upload_root:
            return _api_path(self.upload_root.rstrip("/"))
        me = self._call("reading the current Databricks user", lambda ws: ws.current_user.me())
        if not me.user_name:
            raise DatabricksJobError("Databricks did not name the current user", hint="pass --upload-to")
        return f"/Users/{me.user_name}/.vintage/jobs"

    def _upload(self, folder: str, wheel: Path, config_text: str, say: Say) -> tuple[str, str]:
        """Upload the wheel and vintage.yaml as workspace files; their paths as the cluster sees them."""
        from databricks.sdk.service.workspace import ImportFormat

        self._call(f"creating {folder}", lambda ws: ws.workspace.mkdirs(folder))
        targets = [
            (f"{folder}/{wheel.name}", wheel.read_bytes()),
            (f"{folder}/vintage.yaml", config_text.encode()),
        ]
        for path, content in targets:

            def upload(ws: WorkspaceClient, path: str = path, content: bytes = content) -> None:
                ws.workspace.upload(path, content, format=ImportFormat.AUTO, overwrite=True)

            self._call(f"uploading {path}", upload)
            say(f"uploaded {_cluster_path(path)}")
        return _cluster_path(targets[0][0]), _cluster_path(targets[1][0])

    def _pause(self, seconds: float, stop: threading.Event | None) -> None:
        if self._sleep is not None:
            self._sleep(seconds)
        elif stop is not None:
            stop.wait(seconds)
        else:
            time.sleep(seconds)

    def _wait(self, dbx_run: int, say: Say, stop: threading.Event | None) -> dict[str, Any]:
        delay = self.first_delay_s
        started = self._clock()
        seen: tuple[str, str, str] | None = None
        failures = 0
        while True:
            _check_stop(stop, lambda: self._cancel(dbx_run, say))
            try:
                run = self._client().jobs.get_run(dbx_run)
                failures = 0
            except Exception as exc:
                failures += 1
                if not _unreachable(exc) or failures > POLL_FAILURES:
                    self._fail(f"reading the state of Databricks run {dbx_run}", exc)
                say(f"Databricks run {dbx_run}: cannot reach the workspace, retrying ({failures})")
                run = None
            if run is not None:
                life, result, message = _state(run)
                if (life, result, message) != seen:
                    seen = (life, result, message)
                    shown = f"{life}/{result}" if result else life
                    say(
                        f"Databricks run {dbx_run}: {shown}"
                        + (f" - {self._scrub(message)}" if message else "")
                    )
                if life in TERMINAL_LIFE_CYCLE:
                    return self._finish(dbx_run, run, life, result, message)
            if self.max_wait_s is not None and self._clock() - started > self.max_wait_s:
                self._cancel(dbx_run, say)
                raise DatabricksJobError(
                    f"Databricks run {dbx_run} did not end within {self.max_wait_s:g} s; it was cancelled"
                )
            _check_stop(stop, lambda: self._cancel(dbx_run, say))
            self._pause(delay, stop)
            delay = min(delay * 2, self.max_delay_s)

    def _finish(self, dbx_run: int, run: Any, life: str, result: str, message: str) -> dict[str, Any]:
        task_run = _task_run_id(run) or dbx_run
        if life == "TERMINATED" and result in SUCCESS_STATES:
            output = self._call(
                f"reading the output of Databricks run {dbx_run}",
                lambda ws: ws.jobs.get_run_output(task_run),
            )
            return {
                "databricks_run_id": dbx_run,
                "task_run_id": task_run,
                "run_page_url": run.run_page_url,
                "life_cycle_state": life,
                "result_state": result,
                "state_message": message,
                "logs": output.logs or "",
                "logs_truncated": bool(output.logs_truncated),
            }
        error = ""
        if result == "FAILED":
            try:
                error = self._client().jobs.get_run_output(task_run).error or ""
            except Exception:
                error = ""
        shown = f"{life}/{result}" if result else life
        headline = f"Databricks run {dbx_run} ended {shown}: {self._scrub(message) or 'no state message'}"
        hint = f"task error: {self._scrub(error)[:300]}" if error else None
        url = run.run_page_url
        hint = "; ".join(x for x in (hint, f"see {url}" if url else None) if x) or None
        raise DatabricksJobError(headline, hint=hint)

    def _cancel(self, dbx_run: int, say: Say) -> None:
        say(f"cancelling Databricks run {dbx_run}")
        try:
            self._client().jobs.cancel_run(dbx_run)
        except Exception as exc:
            say(f"could not cancel Databricks run {dbx_run}: {self._message(exc)}; cancel it in the UI")


def _check_stop(stop: threading.Event | None, cancel: Callable[[], None] | None) -> None:
    if stop is None or not stop.is_set():
        return
    if cancel is None:
        raise Interrupted("stopped before the Databricks run was submitted")
    cancel()
    raise Interrupted("stopped: the Databricks run was cancelled")


def _state(run: Any) -> tuple[str, str, str]:
    state = run.state
    life = state.life_cycle_state.value if state and state.life_cycle_state else "UNKNOWN"
    result = state.result_state.value if state and state.result_state else ""
    message = (state.state_message or "") if state else ""
    return life, result, message


def _task_run_id(run: Any) -> int | None:
    tasks = run.tasks or []
    return int(tasks[0].run_id) if tasks and tasks[0].run_id is not None else None


def _api_path(path: str) -> str:
    """A workspace path as the Workspace API takes it (without the ``/Workspace`` mount prefix)."""
    return path[len("/Workspace") :] if path.startswith("/Workspace/") else path


def _cluster_path(path: str) -> str:
    """A workspace path as a cluster (and a library reference) sees it: under ``/Workspace``."""
    return path if path.startswith("/Workspace/") else f"/Workspace{path}"


def _unreachable(exc: BaseException) -> bool:
    import requests

    reason = exc.__cause__ if isinstance(exc, TimeoutError | RuntimeError) and exc.__cause__ else exc
    return isinstance(reason, requests.RequestException | OSError)


def find_project_dir(start: Path | None = None) -> Path:
    """The source tree vintage was installed from (the folder with its pyproject.toml).

    Raises:
        ConfigError: vintage is not installed from a source tree (pass a wheel instead).
    """
    here = (start or Path(__file__)).resolve()
    for folder in [here, *here.parents]:
        candidate = folder / "pyproject.toml"
        if candidate.is_file() and 'name = "vintage"' in candidate.read_text(encoding="utf-8"):
            return folder
    raise ConfigError("cannot find vintage's source tree to build its wheel", hint=_PREBUILT_HINT)


def build_wheel(project_dir: Path, out_dir: Path, *, timeout_s: float = 600.0) -> Path:
    """Build the project's wheel (``python -m pip wheel --no-deps``) into ``out_dir``; its path.

    The build runs on a clean copy of the sources (``pyproject.toml``, the top-level files, ``src/``):
    setuptools builds in the tree it is given, so building the tree itself would write ``build/`` into it
    and ship whatever a stale ``build/lib`` still holds.

    Raises:
        SparkError: the build failed.
    """
    import shutil
    import tempfile

    out_dir.mkdir(parents=True, exist_ok=True)
    before = set(out_dir.glob("*.whl"))
    with tempfile.TemporaryDirectory(prefix="vintage-src-") as tmp:
        tree = Path(tmp) / "project"
        tree.mkdir()
        try:
            for item in project_dir.iterdir():
                if item.is_file():
                    shutil.copy2(item, tree / item.name)
            shutil.copytree(
                project_dir / "src",
                tree / "src",
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"),
            )
        except OSError as exc:
            raise SparkError(f"cannot copy the sources of {project_dir}: {first_line(exc)}") from exc
        command = [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "-w",
            str(out_dir.resolve()),
            str(tree),
        ]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SparkError(f"cannot build the wheel of {project_dir}: {first_line(exc)}") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise SparkError(f"building the wheel of {project_dir} failed: {tail[0][:200]}", hint=_PREBUILT_HINT)
    wheels = sorted(set(out_dir.glob("vintage-*.whl")) - before) or sorted(out_dir.glob("vintage-*.whl"))
    if not wheels:
        raise SparkError(f"pip built no vintage wheel in {out_dir}")
    return wheels[-1]
