"""The pages' data: a run's timeline, the audit filters, the stages waiting, the report path, durations."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from vintage import audit
from vintage.dashboard import views
from vintage.dashboard.drift import flagged_features, parse_since
from vintage.errors import ConfigError
from vintage.pipeline import state as st

T0 = datetime(2026, 12, 4, 10, 0, 0, tzinfo=UTC)


def _at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat(timespec="milliseconds")


def _run(stages: list[st.StageState], status: str = st.RUNNING) -> st.RunState:
    return st.RunState("r", _at(0), "dev", status, "d", {}, None, "", None, stages)


def test_timeline_places_stages_and_steps_on_the_runs_axis() -> None:
    build = st.StageState("build", None, st.SUCCEEDED, _at(1), _at(11))
    build.steps = [
        st.StepState("build", "validate", st.SUCCEEDED, _at(1), _at(2)),
        st.StepState("build", "train", st.SUCCEEDED, _at(2), _at(11)),
    ]
    prod = st.StageState("production", "production", st.PENDING)
    prod.steps = [st.StepState("production", "deploy", st.PENDING)]

    line = views.timeline(_run([build, prod]), now=T0 + timedelta(seconds=60))

    assert [(b.label, b.level, b.start_s, b.seconds) for b in line.bars] == [
        ("build", 0, 1.0, 10.0),
        ("validate", 1, 1.0, 1.0),
        ("train", 1, 2.0, 9.0),
        ("production", 0, None, None),
        ("deploy", 1, None, None),
    ]
    assert line.bars[3].environment == "production"
    assert line.span_s == 11.0


def test_a_running_step_reaches_now_and_a_finished_stage_without_end_has_no_length() -> None:
    stage = st.StageState("build", None, st.FAILED, _at(0), None)
    stage.steps = [st.StepState("build", "train", st.RUNNING, _at(5), None)]

    line = views.timeline(_run([stage]), now=T0 + timedelta(seconds=30))

    assert [(b.label, b.seconds) for b in line.bars] == [("build", 0.0), ("train", 25.0)]
    assert line.span_s == 30.0


@pytest.mark.parametrize(
    ("span", "expected"),
    [(11.0, [0, 5, 10]), (0.3, [0, 0.1, 0.2, 0.3]), (95.0, [0, 20, 40, 60, 80]), (0.0, [0])],
)
def test_ticks_are_round_and_stay_within_the_span(span: float, expected: list[float]) -> None:
    assert views.nice_ticks(span, count=5) == pytest.approx(expected)


def test_audit_filter_combines_prefix_target_environment_and_actor(tmp_path: Path) -> None:
    rec = audit.record
    rec(tmp_path, "approval.approved", "r1/production", "approved", actor="alice", environment="production")
    rec(tmp_path, "approval.rejected", "r2/production", "rejected", actor="bob", environment="production")
    rec(tmp_path, "deploy", "staging", "ok", actor="alice", environment="staging")
    rec(tmp_path, "approvalx", "r1/production", "ok", actor="alice", environment="production")

    def targets(**query: str) -> list[str]:
        return [f"{e.action}:{e.actor}" for e in views.AuditFilter.from_query(query).select(tmp_path)]

    assert targets(action="approval.") == ["approval.rejected:bob", "approval.approved:alice"]
    assert targets(actor="alice") == ["approvalx:alice", "deploy:alice", "approval.approved:alice"]
    assert targets(environment="staging") == ["deploy:alice"]
    assert targets(action="approval", target="r1/production", actor="alice") == [
        "approvalx:alice",
        "approval.approved:alice",
    ]
    assert targets(actor="carol") == []


def test_audit_limit_keeps_the_newest_and_refuses_unknown_sizes(tmp_path: Path) -> None:
    for i in range(60):
        audit.record(tmp_path, "deploy", f"env{i}", "ok")
    shown = views.AuditFilter.from_query({"limit": "50"}).select(tmp_path)
    assert len(shown) == 50 and shown[0].target == "env59" and shown[-1].target == "env10"
    assert views.AuditFilter.from_query({"limit": "7"}).limit == 50
    assert views.AuditFilter.from_query({"limit": "lots"}).limit == 50
    assert views.AuditFilter.from_query({"limit": "200"}).limit == 200


def test_waiting_lists_the_gate_with_its_evidence(dash) -> None:
    [found] = views.waiting(dash.store)
    assert (found.run_id, found.stage, found.environment, found.run_actor) == (
        "20261204-100000-aaaa",
        "production",
        "production",
        "dev",
    )
    assert found.evidence == {"candidate": "winequality v1", "rmse": 0.71}
    dash.store.set_run(found.run_id, st.REJECTED, "no")
    assert views.waiting(dash.store) == []


def test_report_file_stays_inside_the_state_directory(tmp_path: Path) -> None:
    (tmp_path / "state" / "reports").mkdir(parents=True)
    (tmp_path / "state" / "reports" / "r.html").write_text("<html></html>")
    (tmp_path / "outside.html").write_text("secret")
    state = tmp_path / "state"

    def found(report: object) -> Path | None:
        return views.report_file(state, {"evaluation": {"report": report}})

    assert found("reports/r.html") == (state / "reports" / "r.html").resolve()
    assert found("../outside.html") is None
    assert found(str(tmp_path / "outside.html")) is None
    assert found("mlflow-artifacts:/1/abc/report.html") is None
    assert found("reports/missing.html") is None
    assert views.report_file(state, {}) is None


def test_mlflow_links_open_the_experiments_runs_view_or_the_list() -> None:
    assert views.MlflowLinks("http://h:5000", "7").experiment_runs() == "http://h:5000/#/experiments/7/runs"
    assert views.MlflowLinks("http://h:5000").experiment_runs() == "http://h:5000/#/experiments"
    assert views.MlflowLinks("http://h:5000").run("abc") == "http://h:5000/#/runs/abc"


def test_since_durations() -> None:
    assert parse_since("") is None
    assert parse_since("24h") == timedelta(hours=24)
    assert parse_since("1d12h") == timedelta(hours=36)
    assert parse_since("30m") == timedelta(minutes=30)
    for bad in ("yesterday", "5", "3h and more"):
        with pytest.raises(ConfigError):
            parse_since(bad)


def test_flagged_features_include_the_predictions() -> None:
    report = json.loads((Path(__file__).with_name("monitor_report.json")).read_text())
    assert flagged_features(report) == ["alcohol", "chlorides"]
    report["prediction"]["flagged"] = True
    assert flagged_features(report)[-1] == "prediction"
