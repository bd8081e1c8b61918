"""Bad config, bad data, no winner, crashing points: a clear headline, the right exit code, nothing
half-done in the store."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import yaml

from e2e.test_train import _client, _edit


def _no_models(project: Path) -> bool:
    db = project / ".vintage" / "mlflow.db"
    return not db.exists() or not _client(project).search_registered_models()


def test_unknown_key_is_a_config_error_naming_file_and_key(project, cli):
    _edit(project, selection__treshold=0.8)
    result = cli("train")
    assert result.code == 2
    assert (
        "vintage.yaml: selection.treshold: unknown key; expected one of: metric, direction, threshold, cv"
        in result.err
    )
    assert not (project / ".vintage").exists()


def test_wrong_type_is_a_config_error(project, cli):
    _edit(project, data__split__test_size="a quarter")
    result = cli("config", "validate")
    assert result.code == 2
    assert "data.split.test_size" in result.err and "valid number" in result.err


def test_bad_import_path_is_a_config_error(project, cli):
    _edit(project, estimator={"class": "sklearn.linear_model.ElasticNett"})
    result = cli("train")
    assert result.code == 2
    assert "estimator[0].class" in result.err and "ElasticNett" in result.err


def test_empty_grid_is_a_config_error(project, cli):
    _edit(project, estimator={"class": "sklearn.linear_model.ElasticNet", "grid": []})
    result = cli("train")
    assert result.code == 2
    assert "estimator[0].grid: the grid is empty" in result.err


def test_missing_config_file_is_a_config_error(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    result = cli("train")
    assert result.code == 2
    assert "vintage.yaml: config file not found" in result.err


def test_invalid_data_fails_before_training_and_lists_problems(project, cli):
    csv = project / "wines.csv"
    src = (
        Path(__file__).resolve().parents[2] / "src/vintage/data/wine_quality/winequality-red.csv"
    ).read_text()
    lines = src.splitlines()
    lines[3] = lines[3].replace("9.8", "nine", 1)  # data row 3: alcohol
    fields = lines[5].split(";")
    fields[-1] = ""  # data row 5: missing quality
    lines[5] = ";".join(fields)
    csv.write_text("\n".join(lines) + "\n")
    _edit(project, data={"path": "wines.csv"})
    result = cli("train")
    assert result.code == 1
    assert "invalid data in wines.csv" in result.err
    assert "column 'alcohol': non-numeric values at row 3" in result.err
    assert "column 'quality': missing target values at row 5" in result.err
    assert not (project / ".vintage").exists()  # nothing reached training or the store


def test_no_run_meets_threshold_registers_nothing(project, cli):
    _edit(project, selection__threshold=0.5)
    result = cli("train")
    assert result.code == 1
    # chosen by 5-fold CV (vintage.yaml's selection.cv), gated on its holdout figure
    assert (
        "the chosen run misses the threshold rmse < 0.5 on the holdout: ElasticNet alpha=0.1 l1_ratio=0.1 "
        "(best cv_rmse 0.6985) has holdout rmse 0.6305; nothing was registered"
    ) in " ".join(result.err.split())
    assert "nothing was registered" in result.err
    assert "alpha=0.1 l1_ratio=0.1" in result.out  # the runs are still shown
    assert _no_models(project)


def test_crashing_grid_point_fails_alone(project, cli):
    _edit(
        project,
        estimator={
            "class": "sklearn.linear_model.ElasticNet",
            "grid": [
                {"alpha": 0.5, "l1_ratio": 0.5},
                {"alpha": -1.0, "l1_ratio": 0.5},
                {"alpha": 0.1, "l1_ratio": 0.1},
            ],
        },
    )
    result = cli("train", "--json")
    assert result.code == 0, result.err
    out = json.loads(result.out)
    statuses = [r["status"] for r in out["training"]["runs"]]
    assert statuses == ["FINISHED", "FAILED", "FINISHED"]
    failed = out["training"]["runs"][1]
    assert out["training"]["failed"] == [failed["run_id"]]
    assert "alpha" in failed["error"]
    run = _client(project).get_run(failed["run_id"])
    assert run.info.status == "FAILED"
    assert "alpha" in run.data.tags["vintage.error"]
    human = cli("train")
    assert "1 run(s) failed: ElasticNet alpha=-1.0 l1_ratio=0.5" in human.out


def test_all_points_failing_is_a_training_error(project, cli):
    _edit(project, estimator={"class": "sklearn.linear_model.ElasticNet", "grid": {"alpha": [-1.0, -2.0]}})
    result = cli("train")
    assert result.code == 1
    assert "all 2 grid points failed; first error: InvalidParameterError" in result.err
    assert _no_models(project)


def test_unreachable_tracking_server_is_a_clear_runtime_error(project, cli, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://user:hunter22@127.0.0.1:{port}")
    result = cli("train")
    assert result.code == 1
    assert f"cannot reach the MLflow tracking server at http://127.0.0.1:{port}" in result.err
    assert "hunter22" not in result.err + result.out


def test_yaml_syntax_error_points_at_line(project, cli):
    (project / "vintage.yaml").write_text("experiment: x\nestimator: [\n")
    result = cli("config", "validate")
    assert result.code == 2
    assert "vintage.yaml:3:1: invalid YAML" in result.err


def test_config_show_prints_resolved_spec(project, cli):
    result = cli("config", "show", "--json")
    assert result.code == 0
    shown = json.loads(result.out)
    assert shown["grid_size"] == 3
    assert shown["selection"]["direction"] == "minimize"
    assert shown["tracking_uri"].startswith("sqlite:///") and shown["tracking_uri"].endswith(
        ".vintage/mlflow.db"
    )
    assert yaml.safe_load(cli("config", "show").out)["model_name"] == "winequality"


def _unexpected_error(monkeypatch) -> None:
    """A bug inside a command: loading the workload raises a plain exception carrying a secret value."""
    from vintage import config, redact

    redact.register("s3cr3t-in-message")

    def broken(*args, **kwargs):
        raise RuntimeError("boom with s3cr3t-in-message\nsecond line")

    monkeypatch.setattr(config, "load_spec", broken)


def test_unexpected_error_keeps_its_traceback_in_the_state_dir(project, cli, monkeypatch):
    _unexpected_error(monkeypatch)
    result = cli("train", "--n-jobs", "1")
    assert result.code == 1
    assert result.err == (
        "error: unexpected RuntimeError: boom with [REDACTED] (full traceback: .vintage/logs/errors.log)\n"
    )
    log = project / ".vintage" / "logs" / "errors.log"
    assert log.stat().st_mode & 0o777 == 0o600
    text = log.read_text()
    assert "command: vintage train --n-jobs 1\n" in text
    assert "Traceback (most recent call last):" in text and "in broken" in text
    assert "RuntimeError: boom with [REDACTED]\nsecond line" in text
    assert "s3cr3t" not in text

    cli("train", "--n-jobs", "2")  # a second error is appended
    assert log.read_text().startswith(text) and "command: vintage train --n-jobs 2" in log.read_text()


def test_unexpected_error_log_hides_secret_options_and_uri_credentials():
    from vintage.cli.main import _safe_args

    assert _safe_args(["x", "--api-token", "t0k3n", "--password=pw", "http://u:pw@h:1/x"]) == [
        "x",
        "--api-token",
        "[REDACTED]",
        "--password=[REDACTED]",
        "http://h:1/x",
    ]


def test_unexpected_error_without_a_writable_state_dir_points_to_verbose(project, cli, monkeypatch):
    _unexpected_error(monkeypatch)
    (project / "not-a-dir").write_text("")
    monkeypatch.setenv("VINTAGE_STATE_DIR", str(project / "not-a-dir" / "state"))
    result = cli("train")
    assert result.code == 1
    assert result.err == (
        "error: unexpected RuntimeError: boom with [REDACTED]\n"
        "Run with --verbose to see the full traceback.\n"
    )


def _state_with_history(project: Path) -> Path:
    from vintage import audit
    from vintage.pipeline.state import StateStore

    state = project / ".vintage"
    StateStore(state).create_run("20261201-000000-abcd", "me", "digest", [("build", None, ["train"])], {})
    audit.record(state, "run.start", "20261201-000000-abcd")
    return state


def test_damaged_pipeline_and_audit_databases_are_errors_naming_the_file(project, cli):
    state = _state_with_history(project)
    for name in ("pipeline.db", "audit.db"):
        (state / name).write_bytes(b"\x00garbage" * 1000)
    runs = cli("runs", "list")
    assert runs.code == 1
    assert runs.err.startswith(
        "error: the pipeline state .vintage/pipeline.db is damaged: is not an SQLite database\n"
        "hint: restore it from a backup, or move it aside"
    )
    assert "no pipeline runs yet" not in runs.out
    trail = cli("audit")
    assert trail.code == 1
    assert trail.err.startswith(
        "error: the audit trail .vintage/audit.db is damaged: is not an SQLite database"
    )
    assert "empty" not in trail.out
    assert cli("status").code == 0  # environments do not live in those files


def test_empty_pipeline_database_is_not_an_empty_history(project, cli):
    state = _state_with_history(project)
    (state / "pipeline.db").write_bytes(b"")
    runs = cli("runs", "list", "--json")
    assert runs.code == 1 and runs.out == ""
    assert "the pipeline state .vintage/pipeline.db is damaged: is empty (0 bytes)" in runs.err
