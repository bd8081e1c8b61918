"""``vintage run``, ``resume`` and ``stage``: run the stages of a pipeline in dependency order.

- Stages run in ``depends_on`` order; a stage whose dependencies did not succeed is ``skipped`` (unless
  its ``condition`` is ``always``).
- Steps run in order; a succeeded step is never run again in the same run (resume), so every step only
  has to be idempotent for the step that was running when a process died.
- A stage with an environment holds that environment's lock from its first deploying step to its end:
  two runs never deploy to one environment at once. ``lock_behavior: sequential`` waits;
  ``run_latest`` lets the newest waiting run go and marks older waiting runs ``superseded``.
- The approval step stops the run in ``waiting_approval`` (exit 3) without holding any lock.
- Each stage runs through its stage backend (:mod:`vintage.pipeline.backends`, chosen from
  :data:`vintage.plugins.STAGE_BACKENDS`): the runner knows none by name.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vintage import audit
from vintage.errors import (
    ApprovalRejected,
    Interrupted,
    PipelineError,
    VintageError,
    WaitingApproval,
    first_line,
)
from vintage.pipeline import backends
from vintage.pipeline import state as st
from vintage.pipeline.model_registry import ModelRegistry
from vintage.pipeline.outputs import StepOutput
from vintage.pipeline.steps import StepContext, config_digest
from vintage.shared_state import attach

if TYPE_CHECKING:
    from vintage.config import Spec
    from vintage.config.models import StageSpec

LOCKING_STEPS = frozenset({"deploy", "smoke_test", "champion_gate", "promote"})


class Runner:
    """Runs one pipeline run (new or resumed) of a spec.

    Args:
        registry: The model registry the steps use (default: the tracking store's); tests pass an
            in-memory one. Deploy targets come from :data:`vintage.plugins.DEPLOY_TARGETS`.
    """

    def __init__(
        self,
        spec: Spec,
        project_dir: Path,
        *,
        say: Callable[[str], None] = lambda _: None,
        stop: threading.Event | None = None,
        config_path: Path | None = None,
        registry: ModelRegistry | None = None,
    ) -> None:
        self.spec = spec
        self.registry = registry
        self.project_dir = project_dir
        self.config_path = config_path
        attach(spec)  # state_url: runs, locks, approvals and the audit trail are shared
        self.store = st.StateStore(spec.state_dir.resolve())
        self.say = say
        self.stop = stop

    # ------------------------------------------------------------------------------------- entry points

    def create(self, run_id: str | None = None, *, exist_ok: bool = False, **options: Any) -> str:
        """Record a new run (all stages pending); returns its id. ``exist_ok``: a run of that id recorded
        meanwhile (by another CI job of the same CI run) is used as it is."""
        run_id = run_id or st.new_run_id()
        stages = [(s.name, s.environment, [str(x) for x in s.steps]) for s in self.spec.pipeline.order()]
        actor = audit.current_actor()
        if not self.store.create_run(
            run_id, actor, config_digest(self.spec), stages, options, exist_ok=exist_ok
        ):
            return run_id
        audit.record(self.store.state_dir, "run.start", run_id, "ok", detail=", ".join(s[0] for s in stages))
        return run_id

    def execute(self, run_id: str, only: str | None = None) -> st.RunState:
        """Run every unfinished stage of ``run_id`` (or only stage ``only``); returns the final state.

        Raises:
            WaitingApproval: stopped at an approval gate (exit 3).
            PipelineError: a step failed or a gate refused (the run is ``failed``).
            Interrupted: Ctrl-C / SIGTERM.
        """
        claim = self.store.lock(st.run_lock(run_id))
        if not claim.acquire(timeout=0):
            raise PipelineError(
                f"run {run_id} is being run by another process (or CI job) right now",
                hint="wait for it to end; `vintage runs show " + run_id + "` shows where it is",
            )
        try:
            return self._execute(run_id, only)
        finally:
            claim.release()

    def _execute(self, run_id: str, only: str | None) -> st.RunState:
        run = self.store.run(run_id)
        if run.status in (st.SUPERSEDED, st.REJECTED, st.EXPIRED):
            raise PipelineError(f"run {run_id} is {run.status} ({run.reason}); start a new run")
        if run.config_digest != config_digest(self.spec):
            raise PipelineError(
                f"vintage.yaml changed since run {run_id} started (config digest {run.config_digest})",
                hint="resume with the config the run started with, or start a new run with `vintage run`",
            )
        self.store.set_run(run_id, st.RUNNING, claim=True)
        stages = self.spec.pipeline.order()
        if only is not None:
            stages = [s for s in stages if s.name == only]
            if not stages:
                names = [s.name for s in self.spec.pipeline.stages]
                raise PipelineError(f"no stage {only!r} in the pipeline; stages: {names}")
        try:
            first_failure: VintageError | None = None
            for stage in stages:
                try:
                    self._stage(run_id, stage, forced=only is not None)
                except (WaitingApproval, Interrupted):
                    raise
                except VintageError as exc:  # later stages still run if their condition says so
                    first_failure = first_failure or exc
            if first_failure is not None:
                raise first_failure
        except WaitingApproval as exc:
            self.store.set_run(run_id, st.WAITING, exc.headline)
            raise
        except (Interrupted, KeyboardInterrupt):
            self.store.set_run(run_id, st.FAILED, "interrupted")
            raise
        except _Superseded as exc:
            self.store.set_run(run_id, st.SUPERSEDED, str(exc))
            audit.record(self.store.state_dir, "run.superseded", run_id, "superseded", detail=str(exc))
            raise PipelineError(f"run {run_id} was superseded: {exc}") from None
        except VintageError as exc:
            self.store.set_run(run_id, st.FAILED, exc.headline)
            raise
        except Exception as exc:  # a bug or an untranslated error (a full disk): failed, with the reason
            self.store.set_run(run_id, st.FAILED, _unexpected(exc))
            raise
        final = self.store.run(run_id)
        if only is None or all(s.status in st.FINAL for s in final.stages):
            failed = [s for s in final.stages if s.status in (st.FAILED, st.REJECTED)]
            status = st.FAILED if failed else st.SUCCEEDED
            self.store.set_run(run_id, status, failed[0].reason if failed else "")
            audit.record(self.store.state_dir, "run.end", run_id, status)
        else:
            self.store.set_run(run_id, st.PENDING, f"stage {only} done")
        return self.store.run(run_id)

    def resume(self, run_id: str) -> st.RunState:
        """Re-run the unfinished or failed stages of ``run_id``."""
        run = self.store.run(run_id)
        if run.status == st.SUCCEEDED:
            self.say(f"run {run_id} already succeeded; nothing to do")
            return run
        for stage in run.stages:
            if stage.status not in (st.SUCCEEDED,):
                self.store.reset_stage(run_id, stage.name)
        return self.execute(run_id)

    # ------------------------------------------------------------------------------------------ stages

    def _stage(self, run_id: str, stage: StageSpec, *, forced: bool) -> None:
        run = self.store.run(run_id)
        state = run.stage(stage.name)
        if state.status == st.SUCCEEDED:
            return
        if state.status in (st.FAILED, st.SKIPPED, st.WAITING, st.REJECTED) and forced:
            self.store.reset_stage(run_id, stage.name)
        deps = {d: run.stage(d).status for d in stage.depends_on}
        blocked = {d: s for d, s in deps.items() if s != st.SUCCEEDED}
        if blocked and stage.condition == "succeeded":
            if any(s in (st.PENDING, st.RUNNING, st.WAITING) for s in blocked.values()):
                if forced:
                    raise PipelineError(
                        f"stage {stage.name} depends on {', '.join(blocked)}, which did not succeed yet",
                        hint=f"run those stages first (vintage stage NAME --run-id {run_id})",
                    )
                return
            self.store.set_stage(run_id, stage.name, st.SKIPPED, f"dependencies did not succeed: {blocked}")
            self.say(f"[{stage.name}] skipped: {', '.join(f'{d} {s}' for d, s in blocked.items())}")
            return
        self.store.set_stage(run_id, stage.name, st.RUNNING)
        self.say(f"[{stage.name}]" + (f" environment {stage.environment}" if stage.environment else ""))
        ctx = StepContext(
            self.spec,
            self.project_dir,
            self.store,
            run_id,
            stage,
            run.options,
            self.say,
            self.stop,
            config_path=self.config_path,
            models=self.registry,
        )
        try:
            backend = backends.for_stage(self.spec, stage)
            with contextlib.ExitStack() as locks:
                locked = False
                for step in stage.steps:
                    if self.stop is not None and self.stop.is_set():
                        raise Interrupted(f"run {run_id} interrupted in stage {stage.name}")
                    if step in LOCKING_STEPS and stage.environment and not locked:
                        locks.enter_context(self._env_lock(run_id, stage.environment))
                        locked = True
                    self._step(ctx, step, backend)
        except WaitingApproval:
            self.store.set_stage(run_id, stage.name, st.WAITING, "waiting for approval")
            raise
        except VintageError as exc:
            status = st.REJECTED if isinstance(exc, ApprovalRejected) else st.FAILED
            self.store.set_stage(run_id, stage.name, status, exc.headline)
            self.say(f"[{stage.name}] {status}: {exc.headline}")
            raise
        except BaseException as exc:
            self.store.set_stage(run_id, stage.name, st.FAILED, _unexpected(exc))
            raise
        self.store.set_stage(run_id, stage.name, st.SUCCEEDED)

    def _step(self, ctx: StepContext, step: str, backend: backends.StageBackend) -> None:
        run = self.store.run(ctx.run_id)
        current = next(s for s in run.stage(ctx.stage.name).steps if s.name == step)
        if current.status == st.SUCCEEDED:
            return
        self.store.set_step(ctx.run_id, ctx.stage.name, step, st.RUNNING)
        lines: list[str] = []
        say = ctx.say

        def capture(line: str) -> None:
            lines.append(line)
            say(f"  {step}: {line}")

        ctx.say = capture
        started = time.monotonic()
        try:
            result = backend.run_step(ctx, step)
        except WaitingApproval as exc:
            self.store.set_step(ctx.run_id, ctx.stage.name, step, st.WAITING, log=exc.headline)
            raise
        except VintageError as exc:
            lines.append(f"error: {exc.headline}")
            self.store.set_step(ctx.run_id, ctx.stage.name, step, st.FAILED, log="\n".join(lines))
            raise
        except BaseException as exc:
            unexpected = isinstance(exc, Exception)
            lines.append(
                f"error: {_unexpected(exc)}" if unexpected else f"interrupted: {exc.__class__.__name__}"
            )
            self.store.set_step(ctx.run_id, ctx.stage.name, step, st.FAILED, log="\n".join(lines))
            raise
        finally:
            ctx.say = say
        output = result.to_json() if isinstance(result, StepOutput) else dict(result)
        output["seconds"] = round(time.monotonic() - started, 3)
        self.store.set_step(
            ctx.run_id, ctx.stage.name, step, st.SUCCEEDED, output=output, log="\n".join(lines)
        )

    # ------------------------------------------------------------------------------------------- locks

    @contextlib.contextmanager
    def _env_lock(self, run_id: str, environment: str) -> Iterator[None]:
        env = self.spec.environments[environment]
        lock = self.store.lock(st.env_lock(environment))
        deadline = time.monotonic() + env.lock_timeout_s
        self.store.wait_for(run_id, environment)
        announced = False
        try:
            while not lock.acquire(timeout=0.25):
                if not announced:
                    self.say(f"  waiting for environment {environment} (another run deploys to it)")
                    announced = True
                if env.lock_behavior == "run_latest":
                    newer = self.store.newer_waiter(run_id, environment)
                    if newer:
                        raise _Superseded(f"run {newer} is newer and waits for {environment} too")
                if self.stop is not None and self.stop.is_set():
                    raise Interrupted(f"interrupted while waiting for environment {environment}")
                if time.monotonic() > deadline:
                    raise PipelineError(
                        f"environment {environment} stayed locked for {env.lock_timeout_s:.0f} s",
                        hint="another run deploys to it; see `vintage runs list`",
                    )
        finally:
            self.store.done_waiting(run_id, environment)
        try:
            yield
        finally:
            lock.release()


class _Superseded(Exception):  # noqa: N818
    """A newer run waits for the same environment (``lock_behavior: run_latest``)."""


def _unexpected(exc: BaseException) -> str:
    """The reason recorded for an error that is not a VintageError (``interrupted`` for Ctrl-C and exits)."""
    if not isinstance(exc, Exception):
        return "interrupted"
    return f"unexpected {exc.__class__.__name__}: {first_line(exc)}"
