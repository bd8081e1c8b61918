"""`vintage image build/push` for real: buildah builds, podman runs, a docker-registry on 127.0.0.1 stores.

The base image is built once per machine (cached); the model image once per run of this module, then once
more to check that the digest is reproducible. Containers and the registry are stopped by name / PID
afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from support.containers import ComponentError, docker_env, docker_registry, private_dockerd
from support.scoring import invoke
from support.servers import free_port
from vintage.config import WINE_FEATURES

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
VINTAGE = str(Path(sys.executable).parent / "vintage")
TOOLS = ("buildah", "podman", "skopeo", "docker-registry")
UID = 10001

if missing := [t for t in TOOLS if shutil.which(t) is None]:
    pytest.fail(
        f"container tools missing: {', '.join(missing)} (run: bash scripts/install-container-deps.sh)",
        pytrace=False,
    )


def _run(*argv: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=timeout)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained project: winequality version 1 (ElasticNet, the default linear model)."""
    proj = tmp_path_factory.mktemp("image-project")
    shutil.copy(REPO / "vintage.yaml", proj / "vintage.yaml")
    subprocess.run([VINTAGE, "train"], cwd=proj, check=True, capture_output=True)
    return proj


@pytest.fixture(scope="module")
def key() -> str:
    return "img-" + secrets.token_hex(24)


@pytest.fixture(scope="module")
def built(project: Path, key: str) -> Iterator[dict[str, object]]:
    """`vintage image build --json` of version 1, with the API key lying next to the model and in the
    environment of the build (neither may reach the image)."""
    (project / "keys").write_text(key + "\n")
    env = {**os.environ, "VINTAGE_TEST_API_KEY": key}
    proc = subprocess.run(
        [VINTAGE, "image", "build", "--model", "1", "--json"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr
    image = json.loads(proc.stdout)
    yield image
    _run("podman", "rmi", str(image["reference"]), check=False)  # the tag; shared layers stay


@pytest.fixture(scope="module")
def rows() -> dict[str, object]:
    """The original pipeline's request: 10 rows of the wine data, split orientation."""
    wine = pd.read_csv(REPO / "src/vintage/data/wine_quality/winequality-red.csv", sep=";")
    return {"dataframe_split": json.loads(wine[list(WINE_FEATURES)].head(10).to_json(orient="split"))}


@contextlib.contextmanager
def container(image: str, *args: str, cmd: tuple[str, ...] = ()) -> Iterator[tuple[str, str]]:
    """Run ``image`` read-only, published on 127.0.0.1:<free port>; yields (name, base URL)."""
    name = f"vintage-e2e-{uuid.uuid4().hex[:10]}"
    port = free_port()
    _run(
        "podman",
        "run",
        "-d",
        "--name",
        name,
        "--read-only",
        "-p",
        f"127.0.0.1:{port}:8080",
        *args,
        image,
        *cmd,
    )
    try:
        yield name, f"http://127.0.0.1:{port}"
    finally:
        _run("podman", "rm", "-f", "-t", "2", name, check=False)


def wait_ready(name: str, url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(url + "/ready", timeout=2) as resp:
            if resp.status == 200:
                return
        state = _run("podman", "inspect", "--format", "{{.State.Status}}", name).stdout.strip()
        if state != "running":
            pytest.fail(f"container {state}: {_run('podman', 'logs', name).stderr[-2000:]}")
        time.sleep(0.1)
    pytest.fail(f"container not ready after {timeout} s: {_run('podman', 'logs', name).stderr[-2000:]}")


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory: pytest.TempPathFactory, key: str) -> Path:
    """The key file as the deploy target mounts it: mode 0400, owned by the container's user."""
    path = tmp_path_factory.mktemp("keys") / "keys"
    path.write_text(key + "\n")
    os.chown(path, UID, UID)
    path.chmod(0o400)
    path.parent.chmod(0o755)
    return path


@pytest.fixture(scope="module")
def served(built: dict[str, object], keys_file: Path) -> Iterator[tuple[str, str]]:
    mount = f"{keys_file}:{built['labels']['vintage.keys-file']}:ro"  # type: ignore[index]
    with container(str(built["reference"]), "-v", mount) as (name, url):
        wait_ready(name, url)
        yield name, url


def test_build_reports_the_model_and_a_small_image(built):
    assert str(built["reference"]).startswith("localhost/vintage-winequality:v1-")
    assert str(built["digest"]).startswith("sha256:")
    assert built["predictor"] == "linear"
    assert 0 < int(built["size_bytes"]) <= 300_000_000  # type: ignore[call-overload]
    assert built["entrypoint"][:3] == ["/usr/bin/python3", "-m", "vintage.serving"]  # type: ignore[index]
    assert built["cmd"] == ["--api-key-file", "/run/secrets/vintage/keys"]


def test_same_model_same_digest(project, built):
    proc = subprocess.run(
        [VINTAGE, "image", "build", "--model", "1", "--json"], cwd=project, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    again = json.loads(proc.stdout)
    assert again["reference"] == built["reference"]
    assert again["digest"] == built["digest"]
    assert again["image_id"] == built["image_id"]


def test_labels_and_annotations_name_the_model(built, project):
    from vintage.model.digest import recorded

    model_dir = project / ".vintage" / "models" / "winequality-v1"
    inspect = json.loads(_run("skopeo", "inspect", f"containers-storage:{built['reference']}").stdout)
    labels = inspect["Labels"]
    assert labels["vintage.model.name"] == "winequality"
    assert labels["vintage.model.version"] == "1"
    assert labels["org.opencontainers.image.version"] == "1"
    assert labels["vintage.model.digest"] == recorded(model_dir) == built["model_digest"]
    assert len(labels["vintage.model.run_id"]) == 32
    manifest = json.loads(
        _run("skopeo", "inspect", "--raw", f"containers-storage:{built['reference']}").stdout
    )
    assert manifest["annotations"]["vintage.model.digest"] == built["model_digest"]


def test_no_api_key_in_any_layer(built, key, tmp_path):
    """Every layer tarball and the config, byte for byte: the key is nowhere (it was in the build's
    environment and next to the model)."""
    out = tmp_path / "oci"
    _run("skopeo", "copy", "--quiet", f"containers-storage:{built['reference']}", f"oci:{out}:x")
    blobs = sorted((out / "blobs" / "sha256").iterdir())
    layers = 0
    for blob in blobs:
        data = blob.read_bytes()
        assert key.encode() not in data, blob.name
        if tarfile.is_tarfile(blob):
            layers += 1
            with tarfile.open(blob) as tar:  # compressed or not: the members' contents too
                for member in tar:
                    if member.isfile():
                        fh = tar.extractfile(member)
                        assert fh is not None
                        assert key.encode() not in fh.read(), member.name
    assert layers >= 4  # base, dependencies, vintage, model


def test_container_scores_the_10_rows_with_the_key_only(served, rows, key, project):
    from vintage.model.load import load_model_dir

    _, url = served
    expected = load_model_dir(project / ".vintage" / "models" / "winequality-v1")
    frame = pd.DataFrame(rows["dataframe_split"]["data"], columns=rows["dataframe_split"]["columns"])
    want = expected.predict(frame[list(expected.info.columns)].to_numpy(dtype="float64")).tolist()

    status, body = invoke(url, rows, key=key)
    assert status == 200
    assert body["predictions"] == pytest.approx(want, rel=1e-12)
    assert invoke(url, rows)[0] == 401
    assert invoke(url, rows, key="x" * 40)[0] == 401


def test_container_runs_as_non_root_on_a_read_only_root(served):
    name, _ = served
    assert _run("podman", "exec", name, "id", "-u").stdout.strip() == str(UID)
    assert (
        _run("podman", "inspect", "--format", "{{.HostConfig.ReadonlyRootfs}}", name).stdout.strip() == "true"
    )
    denied = _run("podman", "exec", name, "touch", "/opt/vintage/model/x", check=False)
    assert denied.returncode != 0
    health = _run("podman", "exec", name, *json.loads(_label(served, "vintage.healthcheck")), check=False)
    assert health.returncode == 0, health.stderr


def _label(served: tuple[str, str], label: str) -> str:
    name, _ = served
    return _run(
        "podman", "inspect", "--format", f'{{{{index .Config.Labels "{label}"}}}}', name
    ).stdout.strip()


def test_container_without_keys_refuses_unless_told(built, rows):
    with container(str(built["reference"])) as (name, _):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = _run("podman", "inspect", "--format", "{{.State.Status}}", name).stdout.strip()
            if status == "exited":
                break
            time.sleep(0.1)
        assert status == "exited"
        assert "cannot read the API key file keys" in _run("podman", "logs", name).stderr
    with container(str(built["reference"]), cmd=("--allow-unauthenticated-network-access",)) as (name, url):
        wait_ready(name, url)
        status, body = invoke(url, rows)
        assert status == 200
        assert len(body["predictions"]) == 10


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """docker-registry on 127.0.0.1:<free port>, storage in a temp dir; stopped by PID."""
    try:
        with docker_registry(tmp_path_factory.mktemp("registry")) as address:
            yield address
    except ComponentError as exc:
        pytest.fail(str(exc), pytrace=False)


def test_push_then_pull_by_digest(built, registry):
    proc = subprocess.run(
        [VINTAGE, "image", "push", str(built["reference"]), "--registry", registry, "--json"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    pushed = json.loads(proc.stdout)
    remote = str(pushed["reference"])
    assert remote == f"{registry}/" + str(built["reference"]).split("/", 1)[1]
    inspect = json.loads(_run("skopeo", "inspect", "--tls-verify=false", f"docker://{remote}").stdout)
    assert inspect["Digest"] == pushed["digest"]
    assert inspect["Labels"]["vintage.model.digest"] == built["model_digest"]
    by_digest = remote.rsplit(":", 1)[0] + "@" + pushed["digest"]
    pulled = _run("podman", "pull", "--quiet", "--tls-verify=false", by_digest).stdout.strip()
    try:  # the same config (same image id): the very image that was built
        assert "sha256:" + pulled == built["image_id"]
    finally:
        _run("podman", "rmi", by_digest, check=False)


def test_push_to_an_unreachable_registry_says_so(built):
    port = free_port()
    proc = subprocess.run(
        [VINTAGE, "image", "push", str(built["reference"]), "--registry", f"127.0.0.1:{port}"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert f"error: registry 127.0.0.1:{port} is unreachable" in proc.stderr
    assert "hint:" in proc.stderr


def test_build_of_an_unknown_version_says_so(project):
    proc = subprocess.run(
        [VINTAGE, "image", "build", "--model", "99"], cwd=project, capture_output=True, text=True
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("error:")
    assert "99" in proc.stderr.splitlines()[0]


def test_linear_image_has_no_scikit_learn_nor_mlflow(built):
    names = "('sklearn', 'scipy', 'mlflow', 'pandas')"
    probe = f"import importlib.util as u; print([m for m in {names} if u.find_spec(m)])"
    out = _run(
        "podman",
        "run",
        "--rm",
        "--read-only",
        "--entrypoint",
        "python3",
        str(built["reference"]),
        "-c",
        probe,
    )
    assert out.stdout.strip() == "[]"


def test_estimator_model_image_carries_scikit_learn(tmp_path, rows):
    """A RandomForest cannot take the NumPy fast path: its image has scikit-learn (and what it needs)."""
    import yaml

    from vintage.model.load import load_model_dir

    proj = tmp_path / "rf"
    proj.mkdir()
    spec = yaml.safe_load((REPO / "vintage.yaml").read_text())
    spec["estimator"] = {
        "class": "sklearn.ensemble.RandomForestRegressor",
        "params": {"n_estimators": 10},
        "grid": [{}],
    }
    (proj / "vintage.yaml").write_text(yaml.safe_dump(spec))
    subprocess.run([VINTAGE, "train"], cwd=proj, check=True, capture_output=True)
    proc = subprocess.run(
        [VINTAGE, "image", "build", "--model", "1", "--tag", "rf-e2e", "--json"],
        cwd=proj,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    image = json.loads(proc.stdout)
    try:
        assert image["predictor"] == "estimator"
        model = load_model_dir(proj / ".vintage" / "models" / "winequality-v1")
        frame = pd.DataFrame(rows["dataframe_split"]["data"], columns=rows["dataframe_split"]["columns"])
        want = model.predict(frame[list(model.info.columns)].to_numpy(dtype="float64")).tolist()
        with container(image["reference"], cmd=("--allow-unauthenticated-network-access",)) as (name, url):
            wait_ready(name, url)
            status, body = invoke(url, rows)
        assert status == 200
        assert body["predictions"] == pytest.approx(want, rel=1e-12)
    finally:
        _run("podman", "rmi", image["reference"], check=False)


@pytest.fixture(scope="module")
def dockerd() -> Iterator[dict[str, str]]:
    """A docker daemon of our own (socket and data in a temp dir; no bridge, no iptables), stopped by PID.

    ``make test`` installs dockerd (scripts/install-container-deps.sh); without it this fails, never skips."""
    try:
        with private_dockerd() as host:
            yield docker_env(host)
    except ComponentError as exc:
        pytest.fail(str(exc), pytrace=False)


def test_docker_builder_keeps_the_healthcheck_and_pushes(project, dockerd, registry, keys_file, key):
    proc = subprocess.run(
        [VINTAGE, "image", "build", "--model", "1", "--builder", "docker", "--tag", "docker-e2e", "--json"],
        cwd=project,
        env=dockerd,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr
    image = json.loads(proc.stdout)
    ref = image["reference"]
    assert image["builder"] == "docker"
    assert image["labels"]["vintage.model.name"] == "winequality"
    doc = json.loads(
        subprocess.run(["docker", "image", "inspect", ref], env=dockerd, capture_output=True).stdout
    )
    health = doc[0]["Config"]["Healthcheck"]["Test"]
    assert health[0] == "CMD" and "/ready" in health[-1]

    name = f"vintage-e2e-{uuid.uuid4().hex[:10]}"
    run = ["docker", "run", "-d", "--name", name, "--network", "none", "--read-only", "--tmpfs", "/tmp"]
    run += ["-v", f"{keys_file}:/run/secrets/vintage/keys:ro", ref]
    subprocess.run(run, env=dockerd, check=True, capture_output=True)
    try:  # no published port without a bridge: the health check itself, inside the container
        deadline = time.monotonic() + 60
        while subprocess.run(
            ["docker", "exec", name, *health[1:]], env=dockerd, capture_output=True
        ).returncode:
            assert time.monotonic() < deadline, "the container never got ready"
            time.sleep(0.2)
        uid = subprocess.run(
            ["docker", "exec", name, "id", "-u"], env=dockerd, capture_output=True, text=True
        )
        assert uid.stdout.strip() == str(UID)
    finally:
        subprocess.run(["docker", "rm", "-f", name], env=dockerd, capture_output=True)

    push = subprocess.run(
        [VINTAGE, "image", "push", ref, "--registry", registry, "--builder", "docker", "--json"],
        env=dockerd,
        capture_output=True,
        text=True,
    )
    assert push.returncode == 0, push.stderr
    pushed = json.loads(push.stdout)
    inspect = json.loads(
        _run("skopeo", "inspect", "--tls-verify=false", f"docker://{pushed['reference']}").stdout
    )
    assert inspect["Digest"] == pushed["digest"]
    assert inspect["Labels"]["vintage.model.digest"] == image["model_digest"]


def test_a_model_that_needs_a_package_the_image_lacks_fails_the_build(tmp_path):
    """The class's module ships with the model (tests/support is project code) but imports pandas, which the
    image does not hold: it loads here, not in the image."""
    import yaml

    proj = tmp_path / "custom"
    proj.mkdir()
    spec = yaml.safe_load((REPO / "vintage.yaml").read_text())
    spec["estimator"] = {
        "class": "support.pandas_estimator.PandasElasticNet",
        "params": {"random_state": 42},
        "grid": [{"alpha": 0.1, "l1_ratio": 0.1}],
    }
    (proj / "vintage.yaml").write_text(yaml.safe_dump(spec))
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests")}
    subprocess.run([VINTAGE, "train"], cwd=proj, env=env, check=True, capture_output=True)
    proc = subprocess.run(
        [VINTAGE, "image", "build", "--model", "1", "--tag", "custom-e2e"],
        cwd=proj,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert "error: the image cannot load its model: " in proc.stderr
    assert "No module named 'pandas'" in proc.stderr, proc.stderr  # whole, if it ever differs
    assert "hint:" in proc.stderr
    gone = _run("podman", "image", "exists", "localhost/vintage-winequality:custom-e2e", check=False)
    assert gone.returncode == 1  # no broken image left behind


def test_a_model_with_project_code_serves_from_the_image(tmp_path):
    """A project class (wineshop.models.ClippedRidge) ships in the model's code/ folder: the image loads it
    (the build's load check) and the read-only container serves the predictions the pickle gives at home."""
    import yaml

    from support.project_code import write_package

    proj = tmp_path / "shop"
    write_package(proj, "wineshop", offset=0.25)
    spec = yaml.safe_load((REPO / "vintage.yaml").read_text())
    spec["estimator"] = {"class": "wineshop.models.ClippedRidge", "grid": [{"alpha": 0.5}]}
    (proj / "vintage.yaml").write_text(yaml.safe_dump(spec))
    env = {**os.environ, "PYTHONPATH": str(proj)}
    subprocess.run([VINTAGE, "train"], cwd=proj, env=env, check=True, capture_output=True)
    proc = subprocess.run(
        [VINTAGE, "image", "build", "--model", "1", "--tag", "code-e2e", "--json"],
        cwd=proj,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    image = json.loads(proc.stdout)
    try:
        wine = pd.read_csv(REPO / "src/vintage/data/wine_quality/winequality-red.csv", sep=";")
        frame = wine[list(WINE_FEATURES)].head(25)
        at_home = subprocess.run(  # the pickle itself, read with the project on the path
            [
                sys.executable,
                "-c",
                "import json, pickle, sys, warnings; import pandas as pd; warnings.simplefilter('ignore');"
                "m = pickle.load(open(sys.argv[1], 'rb'));"
                "print(json.dumps(m.predict(pd.read_json(sys.stdin, orient='split').to_numpy()).tolist()))",
                str(proj / ".vintage" / "models" / "winequality-v1" / "model.pkl"),
            ],
            input=frame.to_json(orient="split", double_precision=15),
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        want = json.loads(at_home.stdout)
        body = {"dataframe_split": {"columns": list(frame.columns), "data": frame.to_numpy().tolist()}}
        with container(image["reference"], cmd=("--allow-unauthenticated-network-access",)) as (name, url):
            wait_ready(name, url)
            status, answer = invoke(url, body)
        assert status == 200, answer
        assert answer["predictions"] == pytest.approx(want, rel=1e-12)
    finally:
        _run("podman", "rmi", image["reference"], check=False)
