"""Every page renders from the state on the server; the one writing form decides exactly as
``vintage approve``/``reject`` do, and only with the operator token from this dashboard's own origin."""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from support.asgi import Answer, call
from vintage import audit
from vintage.dashboard.app import CSP, create_app
from vintage.pipeline import ops
from vintage.pipeline import state as st

from .conftest import TOKEN, WAITING_RUN, add_waiting_run

FORM = {"content-type": "application/x-www-form-urlencoded"}
REPORT = json.loads(Path(__file__).with_name("monitor_report.json").read_text())


def _post(
    dash, fields: dict[str, str], run: str = WAITING_RUN, stage: str = "production", **headers
) -> Answer:
    return call(
        dash.app,
        "POST",
        f"/approvals/{run}/{stage}",
        body=urlencode(fields).encode(),
        headers={**FORM, **headers},
    )


def _events(dash, action: str = "approval.") -> list[dict[str, Any]]:
    return [asdict(e) for e in audit.events(dash.spec.state_dir.resolve(), action=action)]


def _decisions(dash, run: str = WAITING_RUN) -> list[str]:
    return [a["decision"] for a in dash.store.approvals(run)]


@pytest.mark.parametrize(
    "path", ["/", "/runs", f"/runs/{WAITING_RUN}", "/releases", "/approvals", "/audit", "/drift"]
)
def test_every_page_renders_with_the_security_headers(dash, path: str) -> None:
    answer = call(dash.app, "GET", path)
    assert answer.status == 200, answer.text
    assert answer.headers["content-type"].startswith("text/html")
    assert answer.headers["content-security-policy"] == CSP
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["referrer-policy"] == "same-origin"  # no-referrer would turn Origin to null
    assert "server" not in answer.headers
    # nothing loads from another host: every src/href is local, or the MLflow UI's link
    for ref in re.findall(r'(?:src|href)="([^"]+)"', answer.text):
        assert ref.startswith(("/", "#", "http://127.0.0.1:")), ref


def test_pages_show_the_runs_and_the_waiting_gate(dash) -> None:
    runs = call(dash.app, "GET", "/runs").text
    assert f'href="/runs/{WAITING_RUN}"' in runs and "waiting_approval" in runs
    page = call(dash.app, "GET", f"/runs/{WAITING_RUN}").text
    assert '<svg class="timeline"' in page and 'data-name="smoke_test"' in page
    assert 'action="/approvals/20261204-100000-aaaa/production"' in page
    assert "train ok" in page  # the step's log
    approvals = call(dash.app, "GET", "/approvals").text
    assert 'data-stage="production"' in approvals and "winequality v1" in approvals
    assert '<span class="badge">1</span>' in approvals


def test_an_unknown_run_is_a_404_page(dash) -> None:
    answer = call(dash.app, "GET", "/runs/nope")
    assert answer.status == 404 and "no pipeline run &#39;nope&#39;" in answer.text


def test_a_request_for_another_host_is_refused(dash) -> None:
    assert call(dash.app, "GET", "/", host="evil.example:8090").status == 421
    assert call(dash.app, "GET", "/", host="127.0.0.1:9999").status == 421
    assert call(dash.app, "GET", "/", host="localhost:8090").status == 200


def test_the_right_token_approves_as_the_cli_does(dash, project: Path) -> None:
    answer = _post(dash, {"token": TOKEN, "decision": "approved", "actor": "alice", "comment": "looks good"})

    assert answer.status == 200, answer.text
    assert "production of run <code>20261204-100000-aaaa</code> approved" in answer.text
    assert f"vintage resume {WAITING_RUN}" in answer.text
    assert _decisions(dash) == ["requested", "approved"]
    release = dash.store.release(WAITING_RUN)
    assert release is not None and release["approvals"]["production"]["by"] == "alice"
    # the same gate decided through the library (what `vintage approve` calls) leaves the same event
    other = "20261204-100001-bbbb"
    add_waiting_run(dash.spec, other)
    ops.decide(dash.spec, other, "production", "approved", actor="alice", comment="looks good")
    page_event, cli_event = _events(dash)
    for key in ("id", "time", "target"):
        page_event.pop(key), cli_event.pop(key)
    assert page_event == cli_event


def test_a_form_without_actor_decides_as_the_token_holder(dash) -> None:
    answer = _post(dash, {"token": TOKEN, "decision": "rejected", "comment": "not today"})
    assert answer.status == 200, answer.text
    assert dash.store.run(WAITING_RUN).status == st.REJECTED
    [event] = _events(dash)
    assert (event["actor"], event["outcome"], event["detail"]) == ("operator", "rejected", "not today")


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"token": "wrong", "decision": "approved", "actor": "mallory"}, "wrong operator token"),
        ({"decision": "approved", "actor": "mallory"}, "no operator token"),
        ({"token": "", "decision": "rejected"}, "no operator token"),
        ({"token": TOKEN[:-1], "decision": "approved"}, "wrong operator token"),
    ],
)
def test_a_wrong_or_missing_token_is_refused_and_audited(dash, fields: dict[str, str], why: str) -> None:
    answer = _post(dash, fields)

    assert answer.status == 403
    assert "refused" in answer.text and TOKEN not in answer.text
    assert _decisions(dash) == ["requested"]
    assert dash.store.run(WAITING_RUN).status == st.WAITING
    [event] = _events(dash)
    assert event["action"] == f"approval.{fields['decision']}"
    assert (event["target"], event["outcome"], event["reader"], event["detail"]) == (
        f"{WAITING_RUN}/production",
        "refused",
        "dashboard",
        why,
    )
    assert event["actor"] == fields.get("actor", "unknown") and event["environment"] == "production"


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "http://evil.example"},
        {"origin": "null"},
        {"origin": "http://127.0.0.1:8091"},
        {"sec-fetch-site": "cross-site"},
    ],
)
def test_a_post_from_another_origin_is_refused_even_with_the_token(dash, headers: dict[str, str]) -> None:
    answer = _post(dash, {"token": TOKEN, "decision": "approved"}, **headers)
    assert answer.status == 403
    assert _decisions(dash) == ["requested"]
    [event] = _events(dash)
    assert event["outcome"] == "refused"
    assert (
        event["detail"].endswith("is not this dashboard") or event["detail"] == "Sec-Fetch-Site is cross-site"
    )


def test_a_post_from_the_dashboards_own_page_passes_the_origin_check(dash) -> None:
    answer = _post(
        dash,
        {"token": TOKEN, "decision": "approved"},
        origin="http://127.0.0.1:8090",
        **{"sec-fetch-site": "same-origin"},
    )
    assert answer.status == 200, answer.text


def test_malformed_decisions_record_nothing(dash) -> None:
    bad_type = call(
        dash.app,
        "POST",
        f"/approvals/{WAITING_RUN}/production",
        body=b"{}",
        headers={"content-type": "application/json"},
    )
    assert bad_type.status == 415
    assert _post(dash, {"token": TOKEN, "decision": "maybe"}).status == 400
    assert _post(dash, {"token": TOKEN, "decision": "approved", "comment": "x" * 20000}).status == 413
    assert call(dash.app, "GET", f"/approvals/{WAITING_RUN}/production").status == 405
    assert _decisions(dash) == ["requested"] and _events(dash) == []


def test_a_gate_decided_already_is_a_conflict_with_the_cli_s_message(dash) -> None:
    assert _post(dash, {"token": TOKEN, "decision": "rejected", "actor": "carol"}).status == 200
    again = _post(dash, {"token": TOKEN, "decision": "approved", "actor": "bob"})
    assert again.status == 409
    assert "was rejected by carol" in again.text
    assert _decisions(dash) == ["requested", "rejected"]


def test_approvers_are_enforced_as_on_the_command_line(project: Path) -> None:
    text = (project / "vintage.yaml").read_text()
    (project / "vintage.yaml").write_text(text + "environments:\n  production:\n    approvers: [alice]\n")
    from vintage.config import load_spec
    from vintage.dashboard.guard import OperatorToken

    spec = load_spec()
    store = add_waiting_run(spec)
    app = create_app(
        spec,
        OperatorToken(TOKEN, "operator"),
        host="127.0.0.1",
        port=8090,
        mlflow_base="http://127.0.0.1:5000",
    )
    refused = call(
        app,
        "POST",
        f"/approvals/{WAITING_RUN}/production",
        body=urlencode({"token": TOKEN, "decision": "approved", "actor": "bob"}).encode(),
        headers=FORM,
    )
    assert refused.status == 409 and "bob may not approve production" in refused.text
    assert [a["decision"] for a in store.approvals(WAITING_RUN)] == ["requested"]
    [event] = audit.events(spec.state_dir.resolve(), action="approval.")
    assert (event.actor, event.outcome, event.detail) == ("bob", "refused", "not an approver")


def test_the_audit_page_filters(dash) -> None:
    _post(dash, {"token": "wrong", "decision": "approved", "actor": "mallory"})
    audit.record(
        dash.spec.state_dir.resolve(), "deploy", "staging", "ok", actor="alice", environment="staging"
    )
    everything = call(dash.app, "GET", "/audit").text
    assert 'data-outcome="refused"' in everything and "mallory" in everything and "deploy" in everything
    only = call(dash.app, "GET", "/audit?action=approval.&actor=mallory").text
    assert "mallory" in only and 'data-action="deploy"' not in only
    assert 'value="approval."' in only  # the filter stays filled in
    none = call(dash.app, "GET", "/audit?environment=qa").text
    assert 'id="no-events"' in none


def test_the_drift_page_draws_the_monitor_report(project: Path) -> None:
    from vintage.config import load_spec
    from vintage.dashboard.guard import OperatorToken

    asked: list[Any] = []

    def monitor(env: str, since: Any) -> dict[str, Any]:
        asked.append((env, since))
        return REPORT

    app = create_app(
        load_spec(),
        OperatorToken(TOKEN, "op"),
        host="127.0.0.1",
        port=8090,
        mlflow_base="http://127.0.0.1:5000",
        monitor=monitor,
    )
    page = call(app, "GET", "/drift/production?since=24h")
    assert page.status == 200, page.text
    assert asked[0][0] == "production" and asked[0][1].total_seconds() == 86400
    assert "Drift: alcohol, chlorides crossed a threshold." in page.text
    assert page.text.count('<svg class="hist"') == 5  # four features and the predictions
    assert '<figure class="feature flagged" data-feature="alcohol">' in page.text
    assert '<figure class="feature " data-feature="pH">' in page.text
    assert 'class="flagged" data-name="alcohol"' in page.text  # its PSI bar
    assert "p50 1.8 ms" in page.text and "4200 (4200 sampled)" in page.text


def test_the_drift_page_without_monitoring_says_so(dash) -> None:
    page = call(dash.app, "GET", "/drift/staging")
    assert page.status == 200 and 'id="no-monitor"' in page.text
    assert dash.monitor_calls == [("staging", None)]
    assert call(dash.app, "GET", "/drift/nowhere").status == 404
    bad = call(dash.app, "GET", "/drift/staging?since=soon")
    assert bad.status == 200 and "not a duration" in bad.text


def test_a_release_with_an_evaluation_report_links_it_sandboxed(dash) -> None:
    state_dir = dash.spec.state_dir.resolve()
    (state_dir / "reports").mkdir()
    (state_dir / "reports" / "r.html").write_text("<html><body>candidate vs champion</body></html>")
    dash.store.update_release(
        WAITING_RUN,
        model_name="winequality",
        version=1,
        metrics={"rmse": 0.71},
        evaluation={"report": "reports/r.html", "candidate": {"rmse": 0.71}, "champion": None},
    )
    page = call(dash.app, "GET", "/releases").text
    assert f'href="/releases/{WAITING_RUN}/report"' in page and "candidate rmse 0.7100" in page
    report = call(dash.app, "GET", f"/releases/{WAITING_RUN}/report")
    assert report.status == 200 and "candidate vs champion" in report.text
    assert "sandbox" in report.headers["content-security-policy"]
    dash.store.update_release(WAITING_RUN, evaluation={"report": "../../etc/passwd"})
    assert call(dash.app, "GET", f"/releases/{WAITING_RUN}/report").status == 404


def test_static_files_come_from_the_package(dash) -> None:
    css = call(dash.app, "GET", "/static/style.css")
    assert css.status == 200 and css.headers["content-type"].startswith("text/css")
    assert call(dash.app, "GET", "/static/../app.py").status == 404


def test_evidence_values_are_shown_as_numbers_and_metric_lists() -> None:
    from vintage.dashboard.app import _metric

    assert _metric(0.712345) == "0.7123"
    assert _metric(1) == "1" and _metric(True) == "True" and _metric("v2") == "v2"
    assert _metric({"rmse": 0.6778557, "mae": 0.519}) == "rmse 0.6779, mae 0.5190"


def test_on_every_interface_any_host_name_is_answered_but_origins_still_checked(dash) -> None:
    from vintage.dashboard.guard import OperatorToken

    app = create_app(
        dash.spec,
        OperatorToken(TOKEN, "operator"),
        host="0.0.0.0",
        port=8090,
        mlflow_base="http://127.0.0.1:5000",
    )
    assert call(app, "GET", "/runs", host="dash.team.example:8090").status == 200
    refused = call(
        app,
        "POST",
        f"/approvals/{WAITING_RUN}/production",
        body=urlencode({"token": TOKEN, "decision": "approved"}).encode(),
        headers={**FORM, "origin": "http://evil.example"},
        host="dash.team.example:8090",
    )
    assert refused.status == 403 and _decisions(dash) == ["requested"]
