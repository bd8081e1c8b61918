"""A local GitHub Actions executor for tests: runs a workflow file's jobs as a GitHub runner would.

Jobs run one after another in dependency order (``needs:``), each in a fresh ``git clone`` of ``repo`` at
``commit`` (made by ``actions/checkout@v4``) in its own temporary directory, with a clean environment: PATH,
HOME (a per-job home), LANG, GitHub's default variables (GITHUB_RUN_ID, GITHUB_RUN_ATTEMPT, ...,
CI=true), the workflow's, job's and step's ``env:``, ``$GITHUB_ENV``/``$GITHUB_PATH`` additions, the
runner's own variables (``runner_env``, like a self-hosted runner's ``.env``) and the variables of the
test process named in ``passthrough``. Nothing else of the test process leaks in.

What it runs, as GitHub does: ``run:`` steps (``bash -e`` without ``shell:``, ``bash --noprofile --norc
-eo pipefail`` for ``shell: bash``), ``${{ }}`` expressions (see :mod:`support.ci_expr`), ``if:`` on jobs
and steps (a job whose needs failed is skipped unless its condition calls a status function),
``$GITHUB_OUTPUT`` to ``steps.<id>.outputs`` and job ``outputs:`` to ``needs.<job>.outputs``, secrets
masked as ``***`` in the logs (also ``::add-mask::``), ``environment:`` held until the run has an approval
(``reviewers``: environment -> login, given up front, else the job fails with "environment NAME needs an
approval"), and a ``gh`` on PATH that answers the run's review history (:mod:`support.ci_gh`). Re-runs keep
the run id and increase the attempt. ``actions/setup-python@v5`` checks that ``python-version`` is the
given interpreter's and puts it first on PATH; any other action, key or syntax is a :class:`WorkflowError`
(at load time where possible): nothing is silently skipped.

Where it differs from GitHub, on purpose: jobs never run in parallel within one executor (two executors,
two "CI machines", can run at once from threads or processes); the whole process group of a step is
killed when the step ends (GitHub waits for the job's end), so nothing a step starts outlives it.

``provision``: step name -> ``hook(workspace)``, run instead of that step's ``run:`` in every job (the
e2e test links a prebuilt virtualenv in place of ``make install``). A name no step has is an error, so a
renamed step cannot bypass it.
"""

from __future__ import annotations

import contextlib
import os
import secrets as pysecrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from support import ci_gh
from support.ci_expr import Contexts, WorkflowError, condition, substitute
from support.ci_results import JobResult, Kill, RunResult, Status, StepResult
from support.ci_workflow import CHECKOUT, SETUP_PYTHON, Workflow, parse_file_command, step_name

__all__ = ["Executor", "JobResult", "Kill", "RunResult", "Status", "StepResult", "Workflow", "WorkflowError"]

SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # as on GitHub's Ubuntu runners
BASH = {None: ["-e"], "bash": ["--noprofile", "--norc", "-eo", "pipefail"]}


@dataclass
class _Run:
    run_id: str
    attempt: int
    token: str
    results: dict[str, JobResult] = field(default_factory=dict)
    approvals: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class Executor:
    """One "CI machine" running ``workflow``. Use as a context manager (or call :meth:`close`)."""

    def __init__(
        self,
        workflow: Workflow,
        *,
        repo: Path,
        commit: str,
        python: Path,
        secrets: Mapping[str, str] | None = None,
        variables: Mapping[str, str] | None = None,
        reviewers: Mapping[str, str] | None = None,
        provision: Mapping[str, Callable[[Path], None]] | None = None,
        passthrough: Sequence[str] = (),
        runner_env: Mapping[str, str] | None = None,
        repository: str = "example/project",
        actor: str = "ci-user",
        step_timeout: float = 300.0,
        keep_on_failure: bool = False,
        work_dir: Path | None = None,
        log_dir: Path | None = None,
    ) -> None:
        """Check everything that can be checked before running.

        Raises:
            WorkflowError: for a provision name no step has, or a ``python-version`` other than ``python``'s.
        """
        self.workflow, self.repo, self.commit, self.python = workflow, repo, commit, python
        self.secrets, self.variables = dict(secrets or {}), dict(variables or {})
        self.reviewers, self.provision = dict(reviewers or {}), dict(provision or {})
        self.passthrough, self.runner_env = tuple(passthrough), dict(runner_env or {})
        self.repository, self.actor = repository, actor
        self.step_timeout, self.keep_on_failure = step_timeout, keep_on_failure
        unknown = sorted(set(self.provision) - workflow.step_names())
        if unknown:
            raise WorkflowError(f"provision names no step of the workflow: {unknown}; rename the hook")
        version = subprocess.run(
            [str(python), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for job_id, step in workflow.steps():
            wanted = str((step.get("with") or {}).get("python-version", version))
            if step.get("uses") == SETUP_PYTHON and wanted != version:
                raise WorkflowError(f"job {job_id}: setup-python wants {wanted}, the executor has {version}")
        self.jq = shutil.which("jq", path=SYSTEM_PATH) or "jq-not-installed"
        self.root = Path(tempfile.mkdtemp(prefix="ci-executor-", dir=work_dir))
        self.log_dir = log_dir or self.root / "logs"
        self._runs: dict[str, _Run] = {}
        self._failed = False

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove the temporary directories (kept after a failure when ``keep_on_failure``)."""
        if not (self.keep_on_failure and self._failed):
            shutil.rmtree(self.root, ignore_errors=True)

    def run(self, run_id: str | int, attempt: int = 1, kill: Kill | None = None) -> RunResult:
        """Run every job of a new workflow run ``run_id`` (attempt ``attempt``)."""
        if str(run_id) in self._runs:
            raise WorkflowError(f"run {run_id} already ran on this executor: use rerun_job or rerun_failed")
        run = _Run(str(run_id), attempt, pysecrets.token_hex(20))
        self._runs[run.run_id] = run
        return self._execute(run, set(self.workflow.order), kill)

    def rerun_job(self, job_id: str, run_id: str | int | None = None, kill: Kill | None = None) -> RunResult:
        """Re-run ``job_id`` and the jobs depending on it, as attempt + 1 of the same run (GitHub)."""
        if job_id not in self.workflow.jobs:
            raise WorkflowError(f"no job {job_id!r} in the workflow")
        return self._rerun(run_id, {job_id}, kill)

    def rerun_failed(self, run_id: str | int | None = None, kill: Kill | None = None) -> RunResult:
        """Re-run the failed jobs and the jobs depending on them, as attempt + 1 of the same run."""
        failed = {j for j, r in self._run_of(run_id).results.items() if r.status is Status.FAILURE}
        if not failed:
            raise WorkflowError(f"run {run_id or 'last'} has no failed job to re-run")
        return self._rerun(run_id, failed, kill)

    def _run_of(self, run_id: str | int | None) -> _Run:
        key = str(run_id) if run_id is not None else next(reversed(self._runs), "")
        if key not in self._runs:
            raise WorkflowError(f"no run {run_id} on this executor")
        return self._runs[key]

    def _rerun(self, run_id: str | int | None, jobs: set[str], kill: Kill | None) -> RunResult:
        run = self._run_of(run_id)
        run.attempt += 1
        selected = set(jobs)
        for job in jobs:
            selected |= self.workflow.dependents(job)
        return self._execute(run, selected, kill)

    def _execute(self, run: _Run, selected: set[str], kill: Kill | None) -> RunResult:
        if kill and (
            kill.job not in self.workflow.jobs or kill.step not in self.workflow.step_names(kill.job)
        ):
            raise WorkflowError(f"kill rule names no step {kill.step!r} of job {kill.job!r}")
        executed = [job for job in self.workflow.order if job in selected]
        for job in executed:
            run.results[job] = self._job(run, job, kill if kill and kill.job == job else None)
            self._failed |= run.results[job].status is Status.FAILURE
        return RunResult(run.run_id, run.attempt, dict(run.results), executed, list(run.warnings))

    def _github(self, run: _Run, job_id: str, workspace: Path) -> dict[str, str]:
        return {
            "run_id": run.run_id,
            "run_attempt": str(run.attempt),
            "run_number": "1",
            "actor": self.actor,
            "triggering_actor": self.actor,
            "token": run.token,
            "repository": self.repository,
            "repository_owner": self.repository.split("/")[0],
            "job": job_id,
            "sha": self.commit,
            "ref": "refs/heads/main",
            "event_name": "workflow_dispatch",
            "workflow": self.workflow.name,
            "workspace": str(workspace),
            "server_url": "https://github.com",
            "api_url": "https://api.github.com",
        }

    def _contexts(self, run: _Run, github: Mapping[str, str], **more: Any) -> Contexts:
        return Contexts(
            github=github, secrets=self._secrets(run), vars=self.variables, warnings=run.warnings, **more
        )

    def _secrets(self, run: _Run) -> dict[str, str]:
        return {**self.secrets, "GITHUB_TOKEN": run.token}

    def _job(self, run: _Run, job_id: str, kill: Kill | None) -> JobResult:
        job = self.workflow.jobs[job_id]
        result = JobResult(job_id, run.attempt, Status.SKIPPED, started=time.monotonic())
        result.started_at = datetime.now(UTC)
        ancestors = [run.results[a].status for a in self.workflow.ancestors(job_id)]
        status = {
            "always": True,
            "success": all(s is Status.SUCCESS for s in ancestors),
            "failure": any(s is Status.FAILURE for s in ancestors),
            "cancelled": False,
        }
        needs = {
            n: (run.results[n].status.value, run.results[n].outputs) for n in self.workflow.needs(job_id)
        }
        directory = self.root / f"{run.run_id}-{run.attempt}-{job_id}"
        dirs = {name: directory / name for name in ("workspace", "home", "temp", "bin", "files")}
        github = self._github(run, job_id, dirs["workspace"])
        gate = self._contexts(run, github, needs=needs, status=status)
        if condition(job.get("if", "success()"), gate):
            for path in dirs.values():
                path.mkdir(parents=True)
            environment = self.workflow.environment(job_id)
            if environment and environment not in self.reviewers:
                result.status = Status.FAILURE
                result.error = (
                    f"environment {environment} needs an approval: pass reviewers={{{environment!r}: LOGIN}}"
                )
            else:
                if environment:
                    number = len(run.approvals) + 1
                    run.approvals.append(
                        ci_gh.approval(self.repository, environment, self.reviewers[environment], number)
                    )
                ci_gh.install(
                    dirs["bin"],
                    directory / "gh.json",
                    {
                        "repository": self.repository,
                        "run_id": run.run_id,
                        "token": run.token,
                        "jq": self.jq,
                        "approvals": run.approvals,
                    },
                )
                _JobRun(self, run, job_id, dirs, github, needs, kill, result).steps()
            if result.status is Status.FAILURE and self.keep_on_failure:
                result.workspace = dirs["workspace"]
            else:
                shutil.rmtree(directory, ignore_errors=True)
        result.ended, result.ended_at = time.monotonic(), datetime.now(UTC)
        self._write_logs(run, result)
        return result

    def _write_logs(self, run: _Run, result: JobResult) -> None:
        directory = self.log_dir / f"{run.run_id}-{run.attempt}" / result.job
        directory.mkdir(parents=True, exist_ok=True)
        for index, step in enumerate(result.steps, 1):
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in step.name)[:60]
            (directory / f"{index:02d}-{safe}.log").write_text("\n".join(step.log) + "\n", encoding="utf-8")
        summary = f"{result.status.value} exit={result.exit_code} error={result.error}\n"
        (directory / "job.txt").write_text(summary, encoding="utf-8")


class _JobRun:
    """The steps of one job attempt, sharing its environment, outputs and masks."""

    def __init__(
        self,
        executor: Executor,
        run: _Run,
        job_id: str,
        dirs: dict[str, Path],
        github: dict[str, str],
        needs: dict[str, tuple[str, Mapping[str, str]]],
        kill: Kill | None,
        result: JobResult,
    ) -> None:
        self.x, self.run, self.job_id, self.dirs, self.github = executor, run, job_id, dirs, github
        self.needs, self.kill, self.result = needs, kill, result
        self.job = executor.workflow.jobs[job_id]
        self.masks = {v for v in executor._secrets(run).values() if v}
        self.masks |= {line for v in set(self.masks) for line in v.splitlines() if line.strip()}
        self.outputs: dict[str, dict[str, str]] = {}
        self.file_env: dict[str, str] = {}
        self.path: list[str] = [str(dirs["bin"])]
        ctx = self._ctx({})
        self.env = {k: substitute(v, ctx) for k, v in executor.workflow.env.items()}
        self.env |= {k: substitute(str(v), self._ctx(self.env)) for k, v in self.job.get("env", {}).items()}

    def _ctx(self, env: Mapping[str, str], status: Mapping[str, bool] | None = None) -> Contexts:
        return self.x._contexts(
            self.run, self.github, env=env, steps=self.outputs, needs=self.needs, status=status
        )

    def _base_env(self) -> dict[str, str]:
        d, run = self.dirs, self.run
        base = {"PATH": ":".join([*self.path, SYSTEM_PATH]), "HOME": str(d["home"]), "LANG": "C.UTF-8"}
        base |= self.x.runner_env | {k: os.environ[k] for k in self.x.passthrough if k in os.environ}
        base |= {f"GITHUB_{k.upper()}": v for k, v in self.github.items() if k != "token"}
        base |= {"CI": "true", "GITHUB_ACTIONS": "true", "RUNNER_OS": "Linux", "RUNNER_ARCH": "X64"}
        base |= {"RUNNER_NAME": f"local-{self.x.root.name}", "RUNNER_TEMP": str(d["temp"])}
        base |= {"GITHUB_RUN_ID": run.run_id, "GITHUB_RUN_ATTEMPT": str(run.attempt)}
        return base

    def mask(self, line: str) -> str:
        """``line`` with every secret value replaced by ``***``."""
        for value in sorted(self.masks, key=len, reverse=True):
            line = line.replace(value, "***")
        return line

    def steps(self) -> None:
        failed = False
        for index, step in enumerate(self.job["steps"]):
            name = step_name(step)
            status = {"always": True, "success": not failed, "failure": failed, "cancelled": False}
            env = self.env | self.file_env
            step_env = {k: substitute(str(v), self._ctx(env)) for k, v in step.get("env", {}).items()}
            ran = StepResult(name, step.get("id"), Status.SKIPPED, started=time.monotonic())
            self.result.steps.append(ran)
            if condition(step.get("if", "success()"), self._ctx(env | step_env, status)):
                ran.status = Status.SUCCESS
                self._step(index, step, env | step_env, ran)
            ran.ended = time.monotonic()
            if ran.status is Status.FAILURE and not failed:
                failed = True
                self.result.exit_code = ran.exit_code
        self.result.status = Status.FAILURE if failed else Status.SUCCESS
        self.result.exit_code = self.result.exit_code if failed else 0
        ctx = self._ctx(self.env)
        for key, value in self.job.get("outputs", {}).items():
            value = substitute(str(value), ctx)
            if self.mask(value) != value:  # GitHub drops a job output that holds a secret
                self.run.warnings.append(f"job {self.job_id}: output {key} skipped: it may contain a secret")
            else:
                self.result.outputs[key] = value

    def _step(self, index: int, step: dict[str, Any], env: dict[str, str], ran: StepResult) -> None:
        workspace = self.dirs["workspace"]
        if step.get("uses") == CHECKOUT:
            self._process(
                ["git", "clone", "--quiet", "--no-checkout", str(self.x.repo), str(workspace)], ran, env={}
            )
            if ran.status is Status.SUCCESS:
                self._process(
                    ["git", "-C", str(workspace), "checkout", "--quiet", "--detach", self.x.commit],
                    ran,
                    env={},
                )
        elif step.get("uses") == SETUP_PYTHON:
            self.path.insert(0, str(self.x.python.parent))
            ran.log.append(f"python {self.x.python} first on PATH")
        elif ran.name in self.x.provision:
            try:
                self.x.provision[ran.name](workspace)
                ran.log.append(f"provisioned by the test's hook instead of: {step.get('run', '')!r}")
            except Exception as exc:
                ran.status, ran.log = Status.FAILURE, [*ran.log, self.mask(f"provision hook failed: {exc!r}")]
        else:
            files = {n: self.dirs["files"] / f"{n}-{index}" for n in ("output", "env", "path", "summary")}
            for path in files.values():
                path.touch()
            script = self.dirs["temp"] / f"step-{index}.sh"
            script.write_text(substitute(step["run"], self._ctx(env)), encoding="utf-8")
            variables = {
                f"GITHUB_{'STEP_SUMMARY' if n == 'summary' else n.upper()}": str(p) for n, p in files.items()
            }
            self._process(["bash", *BASH[step.get("shell")], str(script)], ran, env | variables)
            self._file_commands(files, ran)

    def _file_commands(self, files: dict[str, Path], ran: StepResult) -> None:
        try:
            ran.outputs = parse_file_command(files["output"].read_text(encoding="utf-8"))
            self.file_env |= parse_file_command(files["env"].read_text(encoding="utf-8"))
        except WorkflowError as exc:
            ran.status, ran.log = Status.FAILURE, [*ran.log, f"##[error]{exc}"]
        self.path[:0] = reversed(
            [p.strip() for p in files["path"].read_text(encoding="utf-8").splitlines() if p.strip()]
        )
        if ran.id:
            self.outputs[ran.id] = ran.outputs

    def _process(self, argv: list[str], ran: StepResult, env: dict[str, str]) -> None:
        """Run ``argv`` in its own process group; the group is SIGKILLed when the step ends."""
        full_env = self._base_env() | env
        proc = subprocess.Popen(
            argv,
            cwd=self.dirs["workspace"],
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        reader = threading.Thread(target=self._read, args=(proc, ran), daemon=True)
        reader.start()
        try:
            proc.wait(timeout=self.x.step_timeout)
        except subprocess.TimeoutExpired:
            ran.timed_out = True
            ran.log.append(f"##[error]the step exceeded its timeout of {self.x.step_timeout} s")
        finally:
            _kill_group(proc.pid)  # also whatever the step left running in the background
            proc.wait()
        reader.join(timeout=10)
        ran.exit_code = proc.returncode
        if proc.returncode != 0 or ran.killed or ran.timed_out:
            ran.status = Status.FAILURE

    def _read(self, proc: subprocess.Popen[bytes], ran: StepResult) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if line.startswith("::add-mask::") and line[12:]:
                self.masks.add(line[12:])
                continue
            ran.log.append(self.mask(line))
            if self.kill and self.kill.step == ran.name and not ran.killed and self.kill.when(ran.log[-1]):
                ran.killed = True
                ran.log.append("##[error]killed by the test (SIGKILL to the step's process group)")
                _kill_group(proc.pid)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
