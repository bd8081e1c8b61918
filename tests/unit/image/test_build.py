"""vintage.image: the pieces of a reproducible image that need no builder (names, recipe, files, errors)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from vintage.errors import ConfigError, ImageError, ServingError
from vintage.image import base, build, runtime, tools
from vintage.image.push import check_registry, remote_reference

DIGEST = "sha256:" + "ab" * 32


def test_default_reference_names_model_version_and_digest() -> None:
    assert (
        build.image_reference("WineQuality", "3", DIGEST, None)
        == "localhost/vintage-winequality:v3-abababababab"
    )
    assert build.image_reference("a b/c", None, DIGEST, None) == "localhost/vintage-a-b-c:v0-abababababab"


def test_tag_or_whole_reference() -> None:
    assert build.image_reference("wine", "3", DIGEST, "staging") == "localhost/vintage-wine:staging"
    assert (
        build.image_reference("wine", "3", DIGEST, "reg.example:5000/t/wine:1") == "reg.example:5000/t/wine:1"
    )
    with pytest.raises(ConfigError, match="invalid image tag"):
        build.image_reference("wine", "3", DIGEST, "-bad")
    with pytest.raises(ConfigError, match="has no tag"):
        build.image_reference("wine", "3", DIGEST, "reg.example:5000/t/wine")


def test_builder_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(build.BUILDER_ENV, raising=False)
    assert build.resolve_builder(None) == "buildah"
    monkeypatch.setenv(build.BUILDER_ENV, "docker")
    assert build.resolve_builder(None) == "docker"
    with pytest.raises(ConfigError, match="unknown image builder 'kaniko'"):
        build.resolve_builder("kaniko")


def test_containerfile_runs_the_lean_server_as_non_root_with_the_keys_file() -> None:
    text = build.containerfile("localhost/vintage-base:x", DIGEST, {"b": "2", "a": "1"})
    lines = text.splitlines()
    assert lines[0] == "FROM localhost/vintage-base:x"
    assert "USER 10001:10001" in lines
    entry = json.loads(next(ln for ln in lines if ln.startswith("ENTRYPOINT ")).split(" ", 1)[1])
    assert entry[:3] == ["/usr/bin/python3", "-m", "vintage.serving"]
    assert entry[entry.index("--host") + 1] == "0.0.0.0"
    assert entry[entry.index("--model-digest") + 1] == DIGEST
    assert json.loads(next(ln for ln in lines if ln.startswith("CMD ")).split(" ", 1)[1]) == [
        "--api-key-file",
        "/run/secrets/vintage/keys",
    ]
    assert 'LABEL "a"="1" "b"="2"' in lines  # sorted: the config does not depend on dict order
    assert any(ln.startswith("HEALTHCHECK ") and "/ready" in ln for ln in lines)


def test_buildah_build_is_reproducible_by_construction(tmp_path: Path) -> None:
    argv = build.build_argv("buildah", "localhost/x:1", tmp_path, annotations={"k": "v"})
    assert argv[argv.index("--timestamp") + 1] == "0"
    assert argv[argv.index("--format") + 1] == "oci"  # docker format records the random build container id
    assert "--no-cache" in argv
    assert "--annotation=k=v" in argv


def test_pyc_files_do_not_depend_on_time_or_build_directory(tmp_path: Path) -> None:
    """Two compilations of the same source, in different directories at different times: same bytes."""
    outputs = []
    for name, mtime in (("one", 1_000_000), ("two", 2_000_000)):
        src = tmp_path / name / "pkg"
        src.mkdir(parents=True)
        (src / "mod.py").write_text("def f():\n    raise ValueError('x')\n")
        os.utime(src / "mod.py", (mtime, mtime))
        runtime.compile_tree(src, "/opt/vintage/app/pkg")
        outputs.append((src / "__pycache__" / "mod.cpython-311.pyc").read_bytes())
    assert outputs[0] == outputs[1]
    assert b"/opt/vintage/app/pkg/mod.py" in outputs[0]


def test_normalise_fixes_modes(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir(mode=0o700)
    (tmp_path / "d" / "f").write_text("x")
    (tmp_path / "d" / "f").chmod(0o600)
    (tmp_path / "d" / "x").write_text("x")
    (tmp_path / "d" / "x").chmod(0o700)
    tools.normalise(tmp_path)
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "d" / "f").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d" / "x").stat().st_mode) == 0o755


LOCK = """\
numpy==2.4.6 \\
    --hash=sha256:aaa \\
    --hash=sha256:bbb
    # via vintage (pyproject.toml)
orjson==3.13.0 \\
    --hash=sha256:ccc
    # via
    #   vintage (pyproject.toml)
pandas==2.3.0 \\
    --hash=sha256:ddd
"""


def test_pinned_takes_the_entries_with_their_hashes() -> None:
    text = runtime.pinned(LOCK, ["orjson", "NumPy"])
    assert text.splitlines() == [
        "numpy==2.4.6 \\",
        "    --hash=sha256:aaa \\",
        "    --hash=sha256:bbb",
        "orjson==3.13.0 \\",
        "    --hash=sha256:ccc",
    ]
    assert "pandas" not in text
    with pytest.raises(ImageError, match="no pinned version of mlflow"):
        runtime.pinned(LOCK, ["mlflow"])


def test_packages_scikit_learn_only_when_the_model_needs_it() -> None:
    linear = runtime.packages_for("linear", "cloudpickle")
    assert "scikit-learn" not in linear and "mlflow" not in linear and "pandas" not in linear
    assert {"uvicorn", "numpy", "orjson", "httptools", "uvloop"} <= set(linear)
    assert {"scikit-learn", "cloudpickle"} <= set(runtime.packages_for("estimator", "cloudpickle"))
    assert "skops" in runtime.packages_for("estimator", "skops")


def test_every_runtime_package_is_in_the_lock_file() -> None:
    lock = runtime.lock_file().read_text()
    for fmt in runtime.BY_FORMAT:  # raises if one is missing
        runtime.pinned(lock, runtime.closure(lock, runtime.packages_for("estimator", fmt)))


def test_mirrors_from_deb822_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n"
        "Components: main\n"
    )
    monkeypatch.setattr(base, "_SOURCES", (tmp_path / "sources.list", d))
    monkeypatch.delenv("VINTAGE_DEBIAN_MIRROR", raising=False)
    assert base.mirrors() == [
        "deb http://mirror.example/debian bookworm main",
        "deb http://mirror.example/debian bookworm-updates main",
        "deb http://mirror.example/debian-security bookworm-security main",
    ]
    monkeypatch.setenv("VINTAGE_DEBIAN_MIRROR", "http://other.example/debian")
    assert base.mirrors() == ["deb http://other.example/debian bookworm main"]


def test_recipe_hash_changes_with_the_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    before = base.recipe_hash()
    monkeypatch.setattr(base, "PACKAGES", (*base.PACKAGES, "curl"))
    assert base.recipe_hash() != before
    assert base.reference() == f"localhost/vintage-base:{base.recipe_hash()}"


def test_registry_address_and_remote_name() -> None:
    assert check_registry("127.0.0.1:5000") == ("127.0.0.1", 5000)
    with pytest.raises(ConfigError, match="invalid registry"):
        check_registry("http://127.0.0.1:5000")
    with pytest.raises(ConfigError, match="invalid registry"):
        check_registry("127.0.0.1:70000")
    assert remote_reference("localhost/vintage-wine:v1", "127.0.0.1:5000") == "127.0.0.1:5000/vintage-wine:v1"
    assert remote_reference("vintage-wine:v1", "reg:5000") == "reg:5000/vintage-wine:v1"


def test_a_directory_that_was_not_materialised_is_refused(tmp_path: Path) -> None:
    if tools.shutil.which("buildah") is None:
        pytest.skip("buildah is not installed")
    with pytest.raises(ServingError, match="no content manifest"):
        build.build_image(tmp_path)


def test_closure_follows_the_lock_files_via_comments() -> None:
    lock = (
        "a==1 \\\n    --hash=sha256:1\n    # via vintage (pyproject.toml)\n"
        "b==1 \\\n    --hash=sha256:2\n    # via\n    #   a\n    #   z\n"
        "c==1 \\\n    --hash=sha256:3\n    # via b\n"
        "d==1 \\\n    --hash=sha256:4\n    # via z\n"
    )
    assert runtime.closure(lock, ["a"]) == {"a", "b", "c"}
    with pytest.raises(ImageError, match="no pinned version of q"):
        runtime.closure(lock, ["q"])


def test_scikit_learn_brings_what_it_imports() -> None:
    lock = runtime.lock_file().read_text()
    linear = runtime.closure(lock, runtime.packages_for("linear", "cloudpickle"))
    assert {"click", "h11"} <= linear  # uvicorn's
    assert not linear & {"scikit-learn", "scipy", "mlflow", "pandas", "pyarrow"}
    estimator = runtime.closure(lock, runtime.packages_for("estimator", "cloudpickle"))
    assert {"scikit-learn", "scipy", "joblib", "narwhals", "cloudpickle"} <= estimator
    assert not estimator & {"mlflow", "pandas", "pyarrow", "pyspark"}
