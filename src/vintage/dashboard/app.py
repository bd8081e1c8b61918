"""The dashboard's ASGI application: server-rendered pages (Jinja2), one form that writes (a decision on
an approval gate, behind the operator token), static CSS from the package, no script from anywhere else.

Pages: ``/`` environments, ``/runs`` and ``/runs/{id}`` pipeline runs with their timeline, ``/releases``
release records, ``/approvals`` stages waiting for a decision, ``/audit`` the audit trail with filters,
``/drift`` and ``/drift/{env}`` the monitor's drift charts.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vintage import audit
from vintage.dashboard import charts, views
from vintage.dashboard.drift import Monitor, flagged_features, monitor_for, parse_since
from vintage.dashboard.guard import OperatorToken, allowed_hosts, cross_origin
from vintage.errors import ConfigError, PipelineError, VintageError
from vintage.pipeline import state as st

if TYPE_CHECKING:
    from vintage.config import Spec

HERE = Path(__file__).parent
MAX_FORM_BYTES = 16 * 1024  # a decision form is a few hundred bytes
DECISIONS = ("approved", "rejected")
RUNS_SHOWN = 50
# Pages may load only this dashboard's own CSS; no script, frame or form target elsewhere.
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
# The evaluation report is one self-contained HTML file (inline styles, embedded images): shown sandboxed.
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox"
NAV = (
    ("environments", "/", "Environments"),
    ("runs", "/runs", "Pipeline runs"),
    ("releases", "/releases", "Releases"),
    ("approvals", "/approvals", "Approvals"),
    ("audit", "/audit", "Audit trail"),
    ("drift", "/drift", "Drift"),
)


class Guard:
    """ASGI middleware: answers only requests addressed to this dashboard (``Host`` is its own address:
    a DNS-rebinding page names another host; ``hosts`` ``None``: any), and sets the security headers on
    every response."""

    def __init__(self, app: ASGIApp, hosts: frozenset[str] | None) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
        if self.hosts is not None and host not in self.hosts:
            await PlainTextResponse(f"unknown host {host!r}: open the dashboard by its address\n", 421)(
                scope, receive, send
            )
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"server"]
                if not any(k.lower() == b"content-security-policy" for k, _ in headers):
                    headers.append((b"content-security-policy", CSP.encode()))
                headers += [
                    (b"x-frame-options", b"DENY"),
                    (b"x-content-type-options", b"nosniff"),
                    (
                        b"referrer-policy",
                        b"same-origin",
                    ),  # no-referrer would make a form POST's Origin "null"
                    (b"cache-control", b"no-store"),
                ]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


def _when(value: Any) -> str:
    return str(value)[:19].replace("T", " ") if value else "-"


def _short(value: Any) -> str:
    from vintage.model.digest import short

    return short(str(value)) if value else "-"


def _metric(value: Any) -> str:
    """A float with 4 decimals, a mapping as ``key value, ...`` (the evidence's metrics), else as text."""
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_metric(v)}" for k, v in value.items())
    return str(value)


def templates() -> Jinja2Templates:
    """The page templates, with the filters they use."""
    found = Jinja2Templates(directory=HERE / "templates")
    found.env.autoescape = True
    found.env.trim_blocks = found.env.lstrip_blocks = True
    found.env.filters.update(when=_when, short=_short, metric=_metric)
    return found


class Pages:
    """The request handlers, over one spec and its state directory."""

    def __init__(
        self,
        spec: Spec,
        token: OperatorToken,
        mlflow_base: str,
        experiment_id: Callable[[], str | None],
        monitor: Monitor,
    ) -> None:
        self.spec = spec
        self.state_dir = spec.state_dir.resolve()
        self.store = st.StateStore(self.state_dir)
        self.token = token
        self.mlflow_base = mlflow_base.rstrip("/")
        self.experiment_id = experiment_id
        self.monitor = monitor
        self.templates = templates()

    # ------------------------------------------------------------------------------------- helpers

    def _mlflow(self) -> views.MlflowLinks:
        return views.MlflowLinks(self.mlflow_base, self.experiment_id())

    def render(self, request: Request, name: str, page: str, status: int = 200, **context: Any) -> Response:
        waiting = len(views.waiting(self.store))
        return self.templates.TemplateResponse(
            request,
            name,
            {
                "nav": NAV,
                "page": page,
                "waiting_count": waiting,
                "mlflow": self._mlflow(),
                "experiment": self.spec.experiment,
                **context,
            },
            status_code=status,
        )

    # --------------------------------------------------------------------------------------- pages

    def environments(self, request: Request) -> Response:
        rows = views.environments(self.spec)
        return self.render(request, "environments.html", "environments", rows=rows)

    def runs(self, request: Request) -> Response:
        found = self.store.runs(RUNS_SHOWN)
        return self.render(request, "runs.html", "runs", runs=found)

    def run(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        try:
            found = self.store.run(run_id)
        except PipelineError as exc:
            return self.error(request, "runs", exc, 404)
        line = views.timeline(found)
        return self.render(
            request,
            "run.html",
            "runs",
            run=found,
            timeline=charts.timeline_svg(line),
            approvals=self.store.approvals(run_id),
            release=self.store.release(run_id),
            parent_run=views.parent_run_id(found),
            waiting=[w for w in views.waiting(self.store) if w.run_id == run_id],
            holder=self.token.holder,
        )

    def releases(self, request: Request) -> Response:
        records = []
        for found in self.store.runs(RUNS_SHOWN):
            record = self.store.release(found.id)
            if record:
                report = views.report_file(self.state_dir, record)
                records.append((found, record, report is not None))
        return self.render(request, "releases.html", "releases", records=records)

    def report(self, request: Request) -> Response:
        record = self.store.release(request.path_params["run_id"]) or {}
        path = views.report_file(self.state_dir, record)
        if path is None:
            return PlainTextResponse("no evaluation report file for this release\n", 404)
        return FileResponse(path, media_type="text/html", headers={"content-security-policy": REPORT_CSP})

    def approvals(self, request: Request) -> Response:
        found = views.waiting(self.store)
        return self.render(request, "approvals.html", "approvals", waiting=found, holder=self.token.holder)

    def audit(self, request: Request) -> Response:
        chosen = views.AuditFilter.from_query(request.query_params)
        return self.render(
            request,
            "audit.html",
            "audit",
            filters=chosen,
            events=chosen.select(self.state_dir),
            limits=views.AUDIT_LIMITS,
        )

    def drift_index(self, request: Request) -> Response:
        return self.render(request, "drift.html", "drift", environments=list(self.spec.environments))

    def drift(self, request: Request) -> Response:
        env = request.path_params["environment"]
        names = list(self.spec.environments)
        if env not in names:
            return self.error(request, "drift", ConfigError(f"no environment {env!r}"), 404)
        since_text = request.query_params.get("since", "")
        report: dict[str, Any] | None = None
        problem: VintageError | None = None
        try:
            since: timedelta | None = parse_since(since_text)
            report = self.monitor(env, since)
        except VintageError as exc:
            problem = exc
        features: list[tuple[str, dict[str, Any], Any]] = []
        if report is not None:
            items = list((report.get("features") or {}).items())
            if report.get("prediction"):
                items.append(("prediction", report["prediction"]))
            features = [(n, s, charts.histogram_svg(n, s)) for n, s in items]
        return self.render(
            request,
            "drift.html",
            "drift",
            environments=names,
            environment=env,
            since=since_text,
            report=report,
            problem=problem,
            features=features,
            flagged=flagged_features(report) if report else [],
            psi=charts.psi_svg(report) if report else None,
        )

    def error(self, request: Request, page: str, exc: VintageError, status: int) -> Response:
        return self.render(request, "error.html", page, status, error=exc)

    # --------------------------------------------------------------------------------- the decision

    async def decide(self, request: Request) -> Response:
        """POST /approvals/{run_id}/{stage}: approve or reject, as ``vintage approve``/``reject`` do."""
        run_id, stage = request.path_params["run_id"], request.path_params["stage"]
        if (
            request.headers.get("content-type", "").split(";")[0].strip()
            != "application/x-www-form-urlencoded"
        ):
            return PlainTextResponse("a decision is a form post (application/x-www-form-urlencoded)\n", 415)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                return PlainTextResponse("form too large\n", 413)
        form = {
            k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()
        }
        decision = form.get("decision", "")
        if decision not in DECISIONS:
            return PlainTextResponse("decision must be approved or rejected\n", 400)
        actor = form.get("actor", "").strip()
        why = cross_origin(
            request.headers.get("host", ""),
            request.headers.get("origin"),
            request.headers.get("sec-fetch-site"),
        )
        if why is None and not self.token.matches(form.get("token")):
            why = "wrong operator token" if form.get("token") else "no operator token"
        if why is not None:
            await run_in_threadpool(self._refused, run_id, stage, decision, actor, why)
            return self.error(
                request,
                "approvals",
                PipelineError(
                    f"refused: {why}; nothing was {decision}",
                    hint="the operator token is in the file `vintage dashboard` printed when it started",
                ),
                403,
            )
        comment = form.get("comment", "").strip()
        from vintage.pipeline.ops import decide

        try:
            evidence = await run_in_threadpool(
                decide, self.spec, run_id, stage, decision, actor=actor or self.token.holder, comment=comment
            )
        except ConfigError as exc:
            return self.error(request, "approvals", exc, 404)
        except VintageError as exc:
            return self.error(request, "approvals", exc, 409)
        return self.render(
            request,
            "decided.html",
            "approvals",
            run_id=run_id,
            stage=stage,
            decision=decision,
            actor=actor or self.token.holder,
            evidence=evidence,
        )

    def _refused(self, run_id: str, stage: str, decision: str, actor: str, why: str) -> None:
        environment = None
        with contextlib.suppress(VintageError):  # an unknown run or stage is refused all the same
            environment = self.store.run(run_id).stage(stage).environment
        audit.record(
            self.state_dir,
            f"approval.{decision}",
            f"{run_id}/{stage}",
            "refused",
            actor=actor or "unknown",
            environment=environment,
            reader="dashboard",
            detail=why,
        )


def _sync(handler: Callable[[Request], Response]) -> Callable[[Request], Awaitable[Response]]:
    """A blocking page handler run in the thread pool (the state and targets are read synchronously)."""

    async def endpoint(request: Request) -> Response:
        return await run_in_threadpool(handler, request)

    return endpoint


class Lookup:
    """A value looked up in the background (the experiment's MLflow id): ``None`` until it is found;
    while it is not, asking again starts another lookup at most every ``retry_s`` seconds (the experiment
    appears with the first training)."""

    def __init__(self, lookup: Callable[[], str | None], retry_s: float = 30.0) -> None:
        self._lookup = lookup
        self._retry_s = retry_s
        self._found: str | None = None
        self._last = -retry_s
        self._lock = threading.Lock()
        self()

    def _work(self) -> None:
        with contextlib.suppress(Exception):  # a missing store only costs the link its experiment id
            self._found = self._lookup()

    def __call__(self) -> str | None:
        if self._found is None:
            with self._lock:
                now = time.monotonic()
                if now - self._last >= self._retry_s:
                    self._last = now
                    threading.Thread(target=self._work, name="dashboard-lookup", daemon=True).start()
        return self._found


def create_app(
    spec: Spec,
    token: OperatorToken,
    *,
    host: str,
    port: int,
    mlflow_base: str,
    experiment_id: Callable[[], str | None] = lambda: None,
    monitor: Monitor | None = None,
) -> ASGIApp:
    """The dashboard for ``spec``, answering requests addressed to ``host:port``.

    Args:
        token: the operator token decision forms must carry.
        mlflow_base: the MLflow UI's base URL (``http://127.0.0.1:5000``, ``vintage ui``'s).
        experiment_id: the experiment's MLflow id (``None``: unknown; the links open the experiments list).
        monitor: reads an environment's monitor report (default: :func:`vintage.monitoring.report` when
            this build has it).
    """
    pages = Pages(spec, token, mlflow_base, experiment_id, monitor or monitor_for(spec))
    app = Starlette(
        routes=[
            Route("/", _sync(pages.environments)),
            Route("/runs", _sync(pages.runs)),
            Route("/runs/{run_id}", _sync(pages.run)),
            Route("/releases", _sync(pages.releases)),
            Route("/releases/{run_id}/report", _sync(pages.report)),
            Route("/approvals", _sync(pages.approvals)),
            Route("/approvals/{run_id}/{stage}", pages.decide, methods=["POST"]),
            Route("/audit", _sync(pages.audit)),
            Route("/drift", _sync(pages.drift_index)),
            Route("/drift/{environment}", _sync(pages.drift)),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ],
    )
    return Guard(app, allowed_hosts(host, port))
