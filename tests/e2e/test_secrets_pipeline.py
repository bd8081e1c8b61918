"""Secrets in a real pipeline run: resolved only where needed, never written anywhere.

The build stage runs as its own process with a tracking token and an estimator credential taken from
secret scopes; one grid point fails with an error quoting its credential (and logs it), like a careless
client library. Afterwards every file of the project (state directory, MLflow store and artifacts, audit
trail, secret store) and everything the process printed is scanned for each secret value and its
encodings: zero hits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vintage.redact import encodings

VINTAGE = str(Path(sys.executable).with_name("vintage"))
REPO = Path(__file__).resolve().parents[2]

MODEL_TOKEN = "mdl/T0ken+with=odd&chars?x9"  # URL-encodes and base64-encodes to different text
TRACKING_TOKEN = "trk-9f8e7d6c5b4a39281706"
CI_TOKEN = "dapi-ci-only-4b3a29181716"


def _project(tmp_path: Path, estimators: list[dict[str, object]], **extra: object) -> Path:
    spec = yaml.safe_load((REPO / "vintage.yaml").read_text())
    spec["estimator"] = estimators
    spec.update(extra)
    (tmp_path / "vintage.yaml").write_text(yaml.safe_dump(spec))
    return tmp_path


def _vintage(project: Path, *args: str, stdin: str | None = None, env: dict[str, str] | None = None):
    return subprocess.run(
        [VINTAGE, *args],
        cwd=project,
        input=stdin.encode() if stdin is not None else None,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "tests"), **(env or {})},
        timeout=300,
    )


def _hits(root: Path, blobs: list[bytes], values: dict[str, str]) -> list[str]:
    found = []
    for name, value in values.items():
        for form in encodings(value):
            needle = form.encode()
            found += [
                f"{name} as {form!r} in {label}"
                for label, blob in blobs_and_files(root, blobs)
                if needle in blob
            ]
    return found


def blobs_and_files(root: Path, blobs: list[bytes]):
    yield from (("captured output", b) for b in blobs)
    for path in root.rglob("*"):
        if path.is_file():
            yield str(path.relative_to(root)), path.read_bytes()


@pytest.mark.slow
def test_build_stage_with_secrets_writes_no_secret_anywhere(tmp_path, monkeypatch, request):
    ElasticNet = {  # noqa: N806 - the default grid, so a model is still chosen and registered
        "class": "sklearn.linear_model.ElasticNet",
        "params": {"random_state": 42},
        "grid": [{"alpha": 0.1, "l1_ratio": 0.1}],
    }
    project = _project(
        tmp_path,
        [
            ElasticNet,
            {
                "class": "support.secret_estimator.TokenRegressor",
                "params": {"token": "${secret:ci/model_token}"},
                "grid": [{"fail": False}, {"fail": True}],
            },
        ],
        tracking_token="${secret:ci/mlflow_token}",
    )
    assert _vintage(project, "secrets", "create-scope", "ci").returncode == 0
    assert (
        _vintage(project, "secrets", "put", "-s", "ci", "-k", "model_token", stdin=MODEL_TOKEN).returncode
        == 0
    )
    ci_env = {"VINTAGE_SECRET__CI__MLFLOW_TOKEN": TRACKING_TOKEN, "VINTAGE_SECRET__CI__UNUSED": CI_TOKEN}

    train = _vintage(project, "--verbose", "train", env=ci_env)
    assert train.returncode == 0, train.stderr.decode()[-3000:]
    runs = _vintage(project, "runs", "grid", "--json", env=ci_env)  # these read the tracking token too
    assert runs.returncode == 0, runs.stderr.decode()
    models = _vintage(project, "models", "--json", env=ci_env)
    assert [m["version"] for m in json.loads(models.stdout)] == [1]
    audit = _vintage(project, "audit", "--json", "--limit", "500")
    outputs = [p.stdout + p.stderr for p in (train, runs, models, audit)]

    hits = _hits(project, outputs, {"model token": MODEL_TOKEN, "tracking token": TRACKING_TOKEN})
    assert hits == []

    # ...and the secrets really were in play: the failing point's error was redacted, not absent
    text = train.stdout.decode() + train.stderr.decode()
    assert "feature service refused token [REDACTED]" in text
    import mlflow

    uri = f"sqlite:///{project / '.vintage' / 'mlflow.db'}"
    # set_tracking_uri, not only the variable: an earlier in-process test may have set MLflow's global URI
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    previous_uri = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    request.addfinalizer(lambda: mlflow.set_tracking_uri(previous_uri))
    client = mlflow.MlflowClient(tracking_uri=uri)
    by_name = {r["name"]: r for r in json.loads(runs.stdout)}
    failed = client.get_run(by_name["TokenRegressor fail=True"]["run_id"])
    assert failed.data.tags["vintage.error"].endswith("feature service refused token [REDACTED]")
    ok = client.get_run(by_name["TokenRegressor fail=False"]["run_id"])
    assert ok.data.params["token"] == "${secret:ci/model_token}"  # the reference is logged, not the value
    error_txt = client.download_artifacts(failed.info.run_id, "error.txt", str(tmp_path / "dl"))
    assert "[REDACTED]" in Path(error_txt).read_text()
    # the saved model holds the reference too, so it can be shared without the credential
    loaded = mlflow.sklearn.load_model(f"runs:/{ok.info.run_id}/model")
    assert loaded.token == "${secret:ci/model_token}"

    reads = [e for e in json.loads(audit.stdout) if e["action"] == "secret.read"]
    by_target = {(e["target"], e["reader"], e["outcome"]) for e in reads}
    assert ("ci/model_token", "stage:build", "ok") in by_target
    assert ("ci/mlflow_token", "stage:build", "ok") in by_target
    assert any(e["detail"] == "provider=env" for e in reads if e["target"] == "ci/mlflow_token")
    assert not any(e["target"] == "ci/unused" for e in reads)  # only what the run needed was read


def test_build_stage_cannot_read_environment_scopes(tmp_path):
    project = _project(
        tmp_path,
        [
            {
                "class": "support.secret_estimator.TokenRegressor",
                "params": {"token": "${secret:production/azureml/client_secret}"},
            }
        ],
    )
    assert _vintage(project, "secrets", "create-scope", "production/azureml").returncode == 0
    put = _vintage(
        project, "secrets", "put", "-s", "production/azureml", "-k", "client_secret", stdin="prod-only-value"
    )
    assert put.returncode == 0
    train = _vintage(project, "train")
    err = train.stderr.decode()
    assert train.returncode == 1
    assert "stage:build (a stage without an environment) may not read scope production/azureml" in err
    assert "prod-only-value" not in err + train.stdout.decode()
    models = _vintage(project, "models", "--json")
    assert json.loads(models.stdout or b"[]") == []  # nothing trained, nothing registered
    audit = json.loads(_vintage(project, "audit", "--json", "--action", "secret.read").stdout)
    assert [(e["target"], e["outcome"]) for e in audit] == [("production/azureml/client_secret", "denied")]


def test_missing_secret_names_scope_and_key(tmp_path):
    project = _project(
        tmp_path,
        [{"class": "sklearn.linear_model.ElasticNet", "grid": [{"alpha": 0.5}]}],
        tracking_token="${secret:ci/mlflow_token}",
    )
    train = _vintage(project, "train")
    assert train.returncode == 1
    first = train.stderr.decode().splitlines()[0]
    assert first == "error: secret ci/mlflow_token not found (looked in: env, local)"
    assert "vintage secrets put --scope ci --key mlflow_token" in train.stderr.decode()


@pytest.mark.parametrize(
    "extra, needle",
    [
        ({"tracking_token": "a-literal-token-123"}, "tracking_token must be a secret reference"),
        (
            {"tracking_uri": "http://${secret:nokey}@127.0.0.1:1"},
            "malformed secret reference in tracking_uri",
        ),
        ({"secrets": {"providers": ["local", "local"]}}, "listed more than once"),
        ({"secrets": {"providers": ["vault"]}}, "secrets.providers[0]"),
    ],
)
def test_bad_secret_settings_are_config_errors(tmp_path, extra, needle):
    project = _project(tmp_path, [{"class": "sklearn.linear_model.ElasticNet"}], **extra)
    res = _vintage(project, "config", "validate")
    assert res.returncode == 2
    assert needle in res.stderr.decode()
    assert "a-literal-token-123" not in res.stderr.decode()


@pytest.mark.slow
def test_whole_pipeline_with_secrets_writes_no_secret_anywhere(tmp_path):
    from support.scoring import free_port

    project = _project(
        tmp_path,
        [
            {
                "class": "sklearn.linear_model.ElasticNet",
                "params": {"random_state": 42},
                "grid": [{"alpha": 0.1, "l1_ratio": 0.1}],
            },
            {
                "class": "support.secret_estimator.TokenRegressor",
                "params": {"token": "${secret:ci/model_token}"},
                "grid": [{"fail": True}],
            },
        ],
        tracking_token="${secret:ci/mlflow_token}",
        environments={
            "staging": {"port": free_port()},
            "production": {"port": free_port(), "api_keys": True},
        },
    )
    assert _vintage(project, "secrets", "create-scope", "ci").returncode == 0
    assert (
        _vintage(project, "secrets", "put", "-s", "ci", "-k", "model_token", stdin=MODEL_TOKEN).returncode
        == 0
    )
    assert _vintage(project, "secrets", "create-scope", "production/serving").returncode == 0
    put = _vintage(project, "secrets", "put", "-s", "production/serving", "-k", "primary", "--generate")
    assert put.returncode == 0
    api_key = _vintage(project, "secrets", "get", "-s", "production/serving", "-k", "primary").stdout.decode()
    ci_env = {"VINTAGE_SECRET__CI__MLFLOW_TOKEN": TRACKING_TOKEN}
    try:
        run = _vintage(project, "--verbose", "run", "--auto-approve", env=ci_env)
        assert run.returncode == 0, run.stderr.decode()[-3000:]
        [listed] = json.loads(_vintage(project, "runs", "list", "--json").stdout)
        outputs = [
            run.stdout + run.stderr,
            _vintage(project, "runs", "show", listed["id"]).stdout,
            _vintage(project, "release", "show").stdout,
            _vintage(project, "status").stdout,
            _vintage(project, "audit", "--json", "--limit", "1000").stdout,
        ]
    finally:
        for env in ("staging", "production"):
            _vintage(project, "stop", env)
    values = {"model token": MODEL_TOKEN, "tracking token": TRACKING_TOKEN, "production API key": api_key}
    assert _hits(project, outputs, values) == []
    # in play: the smoke test used the key, the failing point's error was redacted
    reads = json.loads(outputs[-1])
    assert any(
        e["target"] == "production/serving/primary" and e["reader"] == "stage:production" for e in reads
    )
    assert b"connecting with token [REDACTED]" in run.stderr  # the worker logged it, redacted


def test_a_run_without_the_production_key_stops_before_anything_is_trained(tmp_path: Path) -> None:
    # Without the check the run trained, registered and served staging, and failed at production's deploy.
    project = _project(tmp_path, yaml.safe_load((REPO / "vintage.yaml").read_text())["estimator"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("VINTAGE_SECRET__")}
    res = subprocess.run(
        [VINTAGE, "run", "--auto-approve"], cwd=project, capture_output=True, text=True, env=env, timeout=300
    )
    assert res.returncode == 1, res.stderr
    assert res.stderr.startswith(
        "error: production serves behind API keys, but its key production/serving/primary is missing: "
        "secret production/serving/primary not found (looked in: env, local); nothing was started"
    ), res.stderr
    assert "vintage secrets put --scope production/serving --key primary --generate" in res.stderr
    assert not (project / ".vintage" / "mlflow.db").exists()  # nothing trained
    runs = subprocess.run([VINTAGE, "runs", "list", "--json"], cwd=project, capture_output=True, text=True)
    assert json.loads(runs.stdout) == []  # no pipeline run recorded
    trail = subprocess.run([VINTAGE, "audit", "--json"], cwd=project, capture_output=True, text=True)
    assert [(e["action"], e["outcome"], e["target"]) for e in json.loads(trail.stdout)] == [
        ("secret.read", "missing", "production/serving/primary")
    ]
