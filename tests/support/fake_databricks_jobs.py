"""A fake Databricks workspace for the Jobs API 2.2 and workspace files, over real HTTP on 127.0.0.1.

It answers what ``vintage.compute.databricks`` makes databricks-sdk send, with the shapes of the REST
reference (responses as a workspace returns them):

- ``GET /api/2.0/preview/scim/v2/Me``: the current user;
- ``POST /api/2.0/workspace/mkdirs`` (JSON ``{"path"}``) and ``POST /api/2.0/workspace/import``
  (multipart form: ``path``, ``format``, ``overwrite`` fields and the ``content`` file): stored in
  ``files`` (raw bytes by path);
- ``POST /api/2.2/jobs/runs/submit``: ``{"run_id": ...}``;
- ``GET /api/2.2/jobs/runs/get``: the next state of the scripted ``states`` (the last one repeats), as a
  ``Run`` with one task whose run id is ``task_run_id``;
- ``GET /api/2.2/jobs/runs/get-output``: ``{"logs", "logs_truncated", "error", "metadata"}`` for the
  task run (400 ``INVALID_PARAMETER_VALUE`` for the parent run of a multi-task run, like a workspace);
- ``POST /api/2.2/jobs/runs/cancel``: ``{}``; later polls answer ``TERMINATED``/``CANCELED``.

With a :class:`LocalCluster` the run is not scripted but executed: the submitted ``python_wheel_task``
runs as the local ``vintage`` command (the entry point the wheel would install) in the cluster's own
working directory, with the uploaded files copied under ``<workdir>/Workspace/...`` and the task's
``/Workspace/...`` parameters pointing there, and with ``DATABRICKS_RUNTIME_VERSION`` set as Databricks
sets it on clusters. ``runs/get`` answers ``PENDING`` first, then ``RUNNING`` until the process ends,
then ``TERMINATED`` with ``SUCCESS`` (exit 0) or ``FAILED`` (the output's last line as the task error);
``runs/get-output`` returns the process output as ``logs``. Unlike a workspace, a ``runs/get`` of a
running run is held (up to :data:`HOLD_S`) until the process ends, so a test does not wait out the
client's backoff pauses; the answers are the same.

Bearer-token checks, error bodies, the host-metadata probe and :class:`Recorded` come from
``support.fake_databricks``. Every request is recorded, uploads with their raw bytes in ``uploads``.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from support.fake_databricks import DEFAULT_TOKEN, LOOPBACK, WORKSPACE_ID, ApiError, Recorded

USER = "ml.engineer@example.com"
RUN_ID = 424242
TASK_RUN_ID = 424243
HOLD_S = 8.0
"""Longest hold of a ``runs/get`` while a :class:`LocalCluster` runs (under the SDK's 10-s timeout)."""
VINTAGE = str(Path(sys.executable).with_name("vintage"))


@dataclass(frozen=True)
class State:
    """One scripted answer of ``runs/get``."""

    life_cycle_state: str
    result_state: str | None = None
    state_message: str = ""


SUCCESS_SCRIPT = [
    State("PENDING", None, "Waiting for cluster"),
    State("RUNNING", None, "In run"),
    State("TERMINATED", "SUCCESS", ""),
]


@dataclass(frozen=True)
class Upload:
    """One ``workspace/import``: the form fields and the file's bytes."""

    path: str
    format: str | None
    overwrite: str | None
    content: bytes


@dataclass
class LocalCluster:
    """Plays the job cluster: runs the submitted task's entry point as a local process.

    Args:
        workdir: The driver's working directory (its own ``state_dir``); uploads land under it.
        env: The driver's environment (``DATABRICKS_RUNTIME_VERSION`` is added).
    """

    workdir: Path
    env: dict[str, str]
    runtime_version: str = "15.4"
    command: list[str] = field(default_factory=list)
    output: str = ""
    returncode: int | None = None
    process: subprocess.Popen[str] | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def start(self, task: dict[str, Any], uploads: list[Upload]) -> None:
        files = {f"/Workspace{u.path}": u for u in uploads}
        for library in task.get("libraries", []):
            if library.get("whl") not in files:
                raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Library {library} does not exist.")
        for path, upload in files.items():
            local = self.workdir / path.lstrip("/")
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(upload.content)
        params = [
            str(self.workdir / p.lstrip("/")) if p.startswith("/Workspace/") else p
            for p in task["python_wheel_task"]["parameters"]
        ]
        self.command = [VINTAGE, *params]
        env = {**self.env, "DATABRICKS_RUNTIME_VERSION": self.runtime_version}
        self.process = subprocess.Popen(
            self.command,
            cwd=self.workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._wait, name="fake-dbx-cluster", daemon=True).start()

    def _wait(self) -> None:
        assert self.process is not None
        self.output, _ = self.process.communicate()
        self.returncode = self.process.returncode
        self.done.set()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.done.wait(30)


def cluster_env() -> dict[str, str]:
    """This process's environment without tracking, vintage or Databricks settings and secrets."""
    drop = ("MLFLOW_", "VINTAGE_", "DATABRICKS_", "SPARK_LOCAL_IP", "PYSPARK_")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


@dataclass
class FakeJobsWorkspace:
    """The state of the fake workspace and the requests it received."""

    token: str = DEFAULT_TOKEN
    states: list[State] = field(default_factory=lambda: list(SUCCESS_SCRIPT))
    logs: str = "stage build succeeded\n"
    error: str | None = None
    requests: list[Recorded] = field(default_factory=list)
    uploads: list[Upload] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)
    url: str = ""
    cancelled: bool = False
    polls: int = 0
    cluster: LocalCluster | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def api_requests(self) -> list[Recorded]:
        """The recorded requests to ``/api/`` (without the SDK's host-metadata probe)."""
        return [r for r in self.requests if r.path.startswith("/api/")]

    def calls(self) -> list[str]:
        """``METHOD path`` of every API request, in order."""
        return [f"{r.method} {r.path}" for r in self.api_requests()]

    def handle(self, method: str, path: str, query: dict[str, str], body: Any, auth: str | None) -> Any:
        if path == "/.well-known/databricks-config":
            return {"oidc_endpoint": f"{self.url}/oidc", "workspace_id": WORKSPACE_ID}
        if auth != f"Bearer {self.token}":
            raise ApiError(401, "UNAUTHENTICATED", "Invalid access token.")
        routes = {
            ("GET", "/api/2.0/preview/scim/v2/Me"): self._me,
            ("POST", "/api/2.0/workspace/mkdirs"): self._mkdirs,
            ("POST", "/api/2.0/workspace/import"): self._import,
            ("POST", "/api/2.2/jobs/runs/submit"): self._submit,
            ("GET", "/api/2.2/jobs/runs/get"): self._get,
            ("GET", "/api/2.2/jobs/runs/get-output"): self._output,
            ("POST", "/api/2.2/jobs/runs/cancel"): self._cancel,
        }
        route = routes.get((method, path))
        if route is None:
            raise ApiError(404, "ENDPOINT_NOT_FOUND", f"No API found for '{method} {path}'")
        if route == self._get and self.cluster is not None and self.polls >= 2 and not self.cancelled:
            self.cluster.done.wait(HOLD_S)  # outside the lock: a cancel still gets through
        with self._lock:
            return route(query, body)

    def _me(self, query: dict[str, str], body: Any) -> Any:
        return {"id": "7", "userName": USER, "active": True}

    def _mkdirs(self, query: dict[str, str], body: Any) -> Any:
        self.dirs.append(body["path"])
        return {}

    def _import(self, query: dict[str, str], body: Any) -> Any:
        assert isinstance(body, Upload), body
        self.uploads.append(body)
        return {}

    def _submit(self, query: dict[str, str], body: Any) -> Any:
        if not body.get("tasks"):
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "Missing required field: tasks")
        if self.cluster is not None:
            self.cluster.start(body["tasks"][0], self.uploads)
        return {"run_id": RUN_ID}

    def _run(self, state: State) -> dict[str, Any]:
        st: dict[str, Any] = {
            "life_cycle_state": state.life_cycle_state,
            "state_message": state.state_message,
        }
        if state.result_state:
            st["result_state"] = state.result_state
        return {
            "run_id": RUN_ID,
            "run_name": "vintage",
            "run_page_url": f"{self.url}/#job/0/run/{RUN_ID}",
            "state": st,
            "tasks": [{"run_id": TASK_RUN_ID, "task_key": "vintage", "state": st}],
        }

    def _get(self, query: dict[str, str], body: Any) -> Any:
        if int(query.get("run_id", "0")) != RUN_ID:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Run {query.get('run_id')} does not exist.")
        if self.cancelled:
            return self._run(State("TERMINATED", "CANCELED", "Run cancelled."))
        if self.cluster is not None:
            state = self._cluster_state(self.cluster)
        else:
            state = self.states[min(self.polls, len(self.states) - 1)]
        self.polls += 1
        return self._run(state)

    def _cluster_state(self, cluster: LocalCluster) -> State:
        if self.polls == 0:
            return State("PENDING", None, "Waiting for cluster")
        if not cluster.done.is_set():
            return State("RUNNING", None, "In run")
        if cluster.returncode == 0:
            return State("TERMINATED", "SUCCESS", "")
        lines = cluster.output.strip().splitlines() or ["no output"]
        self.error = lines[-1]
        return State(
            "TERMINATED",
            "FAILED",
            "Task vintage_build failed with message: Workload failed, see run output for details.",
        )

    def _output(self, query: dict[str, str], body: Any) -> Any:
        run = int(query.get("run_id", "0"))
        if run == RUN_ID:
            raise ApiError(
                400,
                "INVALID_PARAMETER_VALUE",
                "Retrieving the output of runs with multiple tasks is not supported. Please retrieve the "
                "output of each individual task run instead.",
            )
        if run != TASK_RUN_ID:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Run {run} does not exist.")
        logs = self.cluster.output if self.cluster is not None else self.logs
        answer: dict[str, Any] = {"logs": logs, "logs_truncated": False, "metadata": {"run_id": run}}
        if self.error:
            answer["error"] = self.error
        return answer

    def _cancel(self, query: dict[str, str], body: Any) -> Any:
        self.cancelled = True
        if self.cluster is not None:
            threading.Thread(target=self.cluster.stop, daemon=True).start()
        return {}


def _parse_multipart(content_type: str, raw: bytes) -> Upload:
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + raw)
    form: dict[str, bytes] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        form[str(name)] = part.get_payload(decode=True) or b""
    text = {k: v.decode() for k, v in form.items() if k != "content"}
    return Upload(text.get("path", ""), text.get("format"), text.get("overwrite"), form.get("content", b""))


def _handler(workspace: FakeJobsWorkspace) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "databricks"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            content_type = self.headers.get("Content-Type") or ""
            body: Any
            if content_type.startswith("multipart/form-data"):
                body = _parse_multipart(content_type, raw)
            else:
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode(errors="replace")
            auth = self.headers.get("Authorization")
            workspace.requests.append(
                Recorded(self.command, parts.path, query, body, auth, {k: v for k, v in self.headers.items()})
            )
            try:
                status, answer = 200, workspace.handle(self.command, parts.path, query, body, auth)
            except ApiError as exc:
                status, answer = exc.status, exc.body
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = _serve  # noqa: N815 - http.server's naming
        do_POST = _serve  # noqa: N815

    return Handler


@contextlib.contextmanager
def fake_databricks_jobs(
    states: list[State] | None = None, cluster: LocalCluster | None = None
) -> Iterator[FakeJobsWorkspace]:
    """Serve a fresh fake workspace on 127.0.0.1 (a free port) for the duration of the block.

    With ``cluster``, submitted runs are executed by it instead of following ``states``.
    """
    workspace = FakeJobsWorkspace(cluster=cluster)
    if states is not None:
        workspace.states = list(states)
    server = ThreadingHTTPServer((LOOPBACK, 0), _handler(workspace))
    server.daemon_threads = True
    workspace.url = f"http://{LOOPBACK}:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="fake-dbx-jobs", daemon=True)
    thread.start()
    try:
        yield workspace
    finally:
        if cluster is not None:
            cluster.stop()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
