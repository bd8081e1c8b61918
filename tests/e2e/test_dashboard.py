"""`vintage dashboard` in a real headless browser (the system chromium, driven by Playwright): the pages
show what `vintage run --auto-approve` (as `make demo`) made; a wrong operator token or another site's
form is refused and recorded; an approval clicked in the page lets `vintage resume` reach production; no
page asks for anything beyond 127.0.0.1.

Screenshots of every page go to ``$VINTAGE_DASHBOARD_SCREENSHOTS`` when it is set, else to the test's
temporary directory. docs/dashboard.md's images come from
``VINTAGE_DASHBOARD_SCREENSHOTS=docs/img/dashboard .venv/bin/python -m pytest tests/e2e/test_dashboard.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from e2e.test_pipeline import BETTER, VINTAGE, Project
from support.browser import BrowserMissingError, Session, chromium, session
from support.env import FOREIGN_VARS
from support.scoring import free_port

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
REPORT = REPO / "tests" / "unit" / "dashboard" / "monitor_report.json"


@dataclass
class Demo:
    """A project after `vintage run --auto-approve` and a second `vintage run` waiting for production,
    with `vintage dashboard` serving it."""

    project: Project
    url: str
    token: str
    first: str  # the auto-approved run
    second: str  # the run waiting for production's approval
    shots: Path


def _wait_up(url: str, proc: subprocess.Popen[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"vintage dashboard exited {proc.returncode}: {proc.communicate()[1]}")
        try:
            with urllib.request.urlopen(url + "/runs", timeout=5) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"vintage dashboard did not answer at {url} within {timeout:.0f} s")


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chosen = os.environ.get("VINTAGE_DASHBOARD_SCREENSHOTS")
    if not chosen:
        return tmp_path_factory.mktemp("screenshots")
    path = Path(chosen) if Path(chosen).is_absolute() else REPO / chosen
    path.mkdir(parents=True, exist_ok=True)
    return path


# Module fixtures start before the suite's per-test environment cleaning: drop what would point the
# processes elsewhere (as tests/conftest.py does for each test).
FOREIGN = FOREIGN_VARS


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, shots: Path) -> Iterator[Demo]:
    with pytest.MonkeyPatch.context() as env:
        for name in FOREIGN:
            env.delenv(name, raising=False)
        yield from _demo(tmp_path_factory, shots)


def _demo(tmp_path_factory: pytest.TempPathFactory, shots: Path) -> Iterator[Demo]:
    project = Project(tmp_path_factory.mktemp("dashboard"))
    for args in (
        ("secrets", "create-scope", "production/serving"),
        ("secrets", "put", "-s", "production/serving", "-k", "primary", "--generate"),
    ):
        assert project.vintage(*args).returncode == 0
    dash_proc = None
    try:
        first = project.vintage("run", "--auto-approve")  # what `make demo` runs
        assert first.returncode == 0, first.stderr
        project.write(estimator=BETTER)
        second = project.vintage("run")
        assert second.returncode == 3, second.stderr  # waits for production's approval
        first_id, second_id = (r["id"] for r in reversed(project.runs()))
        port = free_port()
        dash_proc = subprocess.Popen(
            [VINTAGE, "dashboard", "--port", str(port)],
            cwd=project.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        url = f"http://127.0.0.1:{port}"
        _wait_up(url, dash_proc)
        token_file = project.root / ".vintage" / "dashboard" / "operator-token"
        assert oct(token_file.stat().st_mode & 0o777) == "0o600"
        yield Demo(project, url, token_file.read_text().strip(), first_id, second_id, shots)
    finally:
        if dash_proc is not None:
            dash_proc.send_signal(signal.SIGINT)
            try:
                _, err = dash_proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                dash_proc.kill()
                _, err = dash_proc.communicate()
            assert dash_proc.returncode == 0, err
            assert "operator token for approve/reject: cat .vintage/dashboard/operator-token" in err
            assert not (project.root / ".vintage" / "dashboard" / "operator-token").exists()  # revoked
        for env in ("staging", "production"):
            project.vintage("stop", env, timeout=60)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        with chromium() as found:
            yield found
    except BrowserMissingError as exc:
        pytest.fail(str(exc), pytrace=False)


@contextmanager
def other_site(html: str) -> Iterator[str]:
    """Another origin (127.0.0.1 on another port) serving one page; yields its URL."""

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = html.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def state_approvals(demo: Demo) -> list[dict[str, Any]]:
    """The run's approval rows, read from the pipeline state."""
    from vintage.pipeline.state import StateStore

    return StateStore(demo.project.root / ".vintage").approvals(demo.second, "production")


def _shot(s: Session, demo: Demo, name: str) -> None:
    path = demo.shots / f"{name}.png"
    s.page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000, path  # a rendered page, not a blank one


def _open(s: Session, url: str) -> None:
    response = s.page.goto(url)
    assert response is not None and response.status == 200, url


def test_pages_show_what_the_pipeline_made(demo: Demo, browser: Any) -> None:
    with session(browser) as s:
        _open(s, demo.url + "/")
        production = s.page.locator('tr[data-environment="production"]')
        assert production.locator("td.serving").inner_text() == "winequality v1"
        assert production.locator(".health").inner_text() == "ready"
        assert demo.project.url("production") in production.inner_text()
        assert s.page.locator('tr[data-environment="staging"] td.serving').inner_text() == "winequality v2"
        _shot(s, demo, "environments")

        _open(s, demo.url + "/runs")
        rows = s.page.locator("#runs tbody tr")
        assert rows.count() == 2
        first = s.page.locator(f'tr[data-run="{demo.first}"]')
        assert first.locator(".status").inner_text() == "succeeded"
        assert s.page.locator(f'tr[data-run="{demo.second}"] .status').inner_text() == "waiting_approval"
        assert s.page.locator('[data-nav="approvals"] .badge').inner_text() == "1"
        _shot(s, demo, "runs")

        s.page.click(f'a[href="/runs/{demo.first}"]')
        assert s.page.locator("#run-status").inner_text() == "succeeded"
        for stage in ("build", "staging", "production"):
            bar = s.page.locator(f'svg.timeline g.stage[data-name="{stage}"]')
            assert "s-succeeded" in (bar.get_attribute("class") or "")
            assert bar.locator("rect").count() == 1  # drawn: it has a start and a length
        assert s.page.locator('svg.timeline g.step[data-name="train"] rect').count() >= 1
        mlflow = s.page.locator("a", has_text="MLflow grid run").get_attribute("href") or ""
        assert mlflow.startswith("http://127.0.0.1:5000/#/runs/")
        _shot(s, demo, "run")

        _open(s, demo.url + "/releases")
        release = s.page.locator(f'section.release[data-run="{demo.first}"]')
        assert "winequality v1" in release.locator("h2").inner_text()
        assert "auto-approved (--auto-approve)" in release.inner_text()
        _shot(s, demo, "releases")

        _open(s, demo.url + "/audit?action=approval.")
        assert s.page.locator('#audit tr[data-action="approval.auto"]').count() == 1
        header = s.page.locator("header a.mlflow").get_attribute("href") or ""
        assert header.startswith("http://127.0.0.1:5000/#/experiments/")
        assert s.offsite == [], s.offsite


def test_a_wrong_token_or_another_site_is_refused_and_a_page_approval_reaches_production(
    demo: Demo, browser: Any
) -> None:
    form = f'form.decide[data-run="{demo.second}"][data-stage="production"]'
    with session(browser) as s:
        _open(s, demo.url + "/approvals")
        assert s.page.locator(form).count() == 1
        assert "rmse" in s.page.locator(f"{form} .evidence").inner_text()
        _shot(s, demo, "approvals")

        # a wrong token: 403, nothing decided, recorded as refused
        s.page.fill(f"{form} input[name=token]", "not-the-token")
        s.page.fill(f"{form} input[name=actor]", "mallory")
        with s.page.expect_navigation() as nav:
            s.page.click(f"{form} button.approve")
        assert nav.value is not None and nav.value.status == 403
        assert "refused: wrong operator token" in s.page.locator("#error").inner_text()

        # another site's page posting the right token: refused by its origin
        attack = (
            f'<form method="post" action="{demo.url}/approvals/{demo.second}/production">'
            f'<input name="token" value="{demo.token}"><input name="decision" value="approved"></form>'
        )
        with other_site(attack) as evil:
            _open(s, evil)
            with s.page.expect_navigation() as nav:
                s.page.evaluate("document.forms[0].submit()")
            assert nav.value is not None and nav.value.status == 403
        state = demo.project.run_state(demo.second)
        assert state["status"] == "waiting_approval"
        assert [a["decision"] for a in state_approvals(demo)] == ["requested"]
        refused = [e for e in demo.project.audit("approval.") if e["outcome"] == "refused"]
        assert [(e["actor"], e["reader"]) for e in refused] == [
            ("mallory", "dashboard"),
            ("unknown", "dashboard"),
        ]
        assert refused[0]["detail"] == "wrong operator token"
        assert refused[1]["detail"] in (
            "Sec-Fetch-Site is same-site",
            f"Origin {evil.rstrip('/')} is not this dashboard",
        )

        # the right token, from the page: approved as alice, exactly as `vintage approve --as alice`
        _open(s, demo.url + f"/runs/{demo.second}")
        s.page.fill(f"{form} input[name=token]", demo.token)
        s.page.fill(f"{form} input[name=actor]", "alice")
        s.page.fill(f"{form} input[name=comment]", "checked in the dashboard")
        with s.page.expect_navigation() as nav:
            s.page.click(f"{form} button.approve")
        assert nav.value is not None and nav.value.status == 200
        assert s.page.locator("#decided").inner_text() == f"production of run {demo.second} approved"
        assert s.offsite == [], s.offsite

    [approved] = [e for e in demo.project.audit("approval.approved") if e["outcome"] == "approved"]
    assert (approved["actor"], approved["target"], approved["detail"]) == (
        "alice",
        f"{demo.second}/production",
        "checked in the dashboard",
    )
    resumed = demo.project.vintage("resume", demo.second)
    assert resumed.returncode == 0, resumed.stderr
    assert demo.project.run_state(demo.second)["status"] == "succeeded"
    assert demo.project.status()["production"]["version"] == 2
    release = json.loads(demo.project.vintage("release", "show", demo.second, "--json").stdout)
    assert release["approvals"]["production"]["by"] == "alice"
    # the audit page filtered by actor shows the decision
    with session(browser) as s:
        _open(s, demo.url + "/audit?action=approval.&actor=alice")
        assert s.page.locator('#audit tr[data-outcome="approved"]').count() == 1
        _open(s, demo.url + "/audit")
        _shot(s, demo, "audit")


def test_drift_charts_from_a_monitor_report(demo: Demo, browser: Any) -> None:
    """The drift page of this project's dashboard, fed the monitor's JSON (a fixture of its shape) by an
    in-process server, as the pages cannot make a drift report without an inference log."""
    import uvicorn

    from vintage.config import load_spec
    from vintage.dashboard.app import create_app
    from vintage.dashboard.guard import OperatorToken

    report = json.loads(REPORT.read_text())
    spec = load_spec(demo.project.root / "vintage.yaml")
    spec = spec.model_copy(update={"state_dir": demo.project.root / ".vintage"})
    port = free_port()
    app = create_app(
        spec,
        OperatorToken("unused", "test"),
        host="127.0.0.1",
        port=port,
        mlflow_base="http://127.0.0.1:5000",
        monitor=lambda env, since: report if env == "production" else None,
    )
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        with session(browser, height=1100) as s:
            _open(s, f"http://127.0.0.1:{port}/drift/production")
            assert s.page.locator("#verdict").inner_text() == "Drift: alcohol, chlorides crossed a threshold."
            assert s.page.locator("figure.feature svg.hist").count() == 5
            assert s.page.locator("figure.feature.flagged").count() == 2
            assert s.page.locator("svg.psi g.flagged").count() == 2
            _shot(s, demo, "drift")
            _open(s, f"http://127.0.0.1:{port}/drift/staging")
            assert s.page.locator("#no-monitor").count() == 1
            assert s.offsite == [], s.offsite
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
