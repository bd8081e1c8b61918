"""``build_image``: a reproducible OCI image of a materialised model, from Debian packages and the lock.

Layers, bottom to top (docs/image.md):

1. the Debian base (:mod:`vintage.image.base`), built once and cached;
2. the server's Python dependencies (:mod:`vintage.image.runtime`), cached per package set;
3. the vintage package (source + hash-based ``.pyc``);
4. the model directory, checked against its recorded digest.

The builder is buildah (no daemon) with ``--timestamp 0``: every file in every layer gets the time 0, the
image's creation time is 0, the build context is written in sorted order with fixed modes, and no ``.pyc``
holds a time, so the same model and the same vintage give the same image digest. ``docker`` (a configured
daemon) builds the same context, without that guarantee.

The container runs ``python3 -m vintage.serving`` as uid 10001 on 0.0.0.0:8080 inside its own network
namespace (the runtime publishes it on 127.0.0.1 only), reads its API keys from the file
``/run/secrets/vintage/keys`` that the runtime mounts (never from the image, an argument or the
environment), writes only below /tmp (a tmpfs with ``--read-only``), and has a health check on ``/ready``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from vintage.errors import ConfigError, ImageError
from vintage.image import base, runtime, tools

BUILDERS: Final = ("buildah", "docker")
BUILDER_ENV: Final = "VINTAGE_IMAGE_BUILDER"
PORT: Final = 8080
ROOT: Final = "/opt/vintage"
MODEL_DIR: Final = f"{ROOT}/model"
APP_DIR: Final = f"{ROOT}/app"
SITE_DIR: Final = runtime.SITE_DIR
KEYS_FILE: Final = "/run/secrets/vintage/keys"
STATE_DIR: Final = "/tmp/vintage"
USER: Final = f"{base.UID}:{base.UID}"
_TAG_RE: Final = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_NAME_RE: Final = re.compile(r"[^a-z0-9._-]+")
_HEALTH: Final = (
    "import sys, urllib.request as u; "
    f"sys.exit(0 if u.urlopen('http://127.0.0.1:{PORT}/ready', timeout=2).status == 200 else 1)"
)


@dataclass(frozen=True)
class BuiltImage:
    """An image in local storage.

    Attributes:
        reference: e.g. ``localhost/vintage-winequality:v3-0123456789ab`` (model version, model digest).
        image_id: the builder's image id (``sha256:`` of the config).
        digest: ``sha256:`` of the image manifest in local storage: the reproducible one (a registry
            stores compressed layers, so its digest differs; :func:`vintage.image.push.push_image` says it).
            A docker daemon has no manifest before a push: there it is the image id.
        model_digest: the model directory's content digest (``sha256:...``).
        size_bytes: the image's size, all layers uncompressed.
        labels: the image labels (``org.opencontainers.image.*`` and ``vintage.*``).
    """

    reference: str
    image_id: str
    digest: str
    model_digest: str
    size_bytes: int
    labels: dict[str, str] = field(default_factory=dict)
    builder: str = "buildah"
    base: str = ""
    predictor: str = ""
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (``vintage image build --json``, the release record)."""
        out = asdict(self)
        out["entrypoint"] = list(self.entrypoint)
        out["cmd"] = list(self.cmd)
        return out


def resolve_builder(builder: str | None) -> str:
    """``builder``, else ``$VINTAGE_IMAGE_BUILDER``, else buildah.

    Raises:
        ConfigError: not one of :data:`BUILDERS`.
    """
    name = builder or os.environ.get(BUILDER_ENV) or "buildah"
    if name not in BUILDERS:
        raise ConfigError(f"unknown image builder {name!r}", hint=f"use one of: {', '.join(BUILDERS)}")
    return name


def image_reference(name: str | None, version: str | None, model_digest: str, tag: str | None) -> str:
    """``localhost/vintage-<name>:v<version>-<12 hex of the model digest>``, or ``tag`` applied to it.

    ``tag`` is either a tag (``staging``) or a whole reference (``registry.example:5000/team/wine:1``).

    Raises:
        ConfigError: ``tag`` is not a valid tag.
    """
    repo = "localhost/vintage-" + (_NAME_RE.sub("-", (name or "model").lower()).strip("-._") or "model")
    if tag is None:
        short = model_digest.removeprefix("sha256:")[:12]
        return f"{repo}:v{version or '0'}-{short}"
    if "/" in tag:
        if ":" not in tag.rsplit("/", 1)[1]:
            raise ConfigError(f"image reference {tag!r} has no tag", hint="end it with :TAG, e.g. :v3")
        return tag
    if not _TAG_RE.match(tag):
        raise ConfigError(
            f"invalid image tag {tag!r}",
            hint="letters, digits, '_', '.', '-' (at most 128, not starting with '.' or '-')",
        )
    return f"{repo}:{tag}"


def entrypoint(model_digest: str) -> list[str]:
    """The image's ENTRYPOINT: the lean server on 0.0.0.0:8080, checking the model digest before loading."""
    return [
        "/usr/bin/python3",
        "-m",
        "vintage.serving",
        "--model-dir",
        MODEL_DIR,
        "--model-digest",
        model_digest,
        "--host",
        "0.0.0.0",
        "--port",
        str(PORT),
        "--state-dir",
        STATE_DIR,
    ]


def healthcheck() -> list[str]:
    """The health check command (exit 0 when ``/ready`` answers 200), run inside the container."""
    return ["/usr/bin/python3", "-c", _HEALTH]


def default_cmd() -> list[str]:
    """The image's CMD: keys from the mounted file.

    Without that file the server refuses to start, unless the command is replaced by
    ``--allow-unauthenticated-network-access`` (then anyone reaching the published port can score).
    """
    return ["--api-key-file", KEYS_FILE]


def build_image(
    model_dir: Path, *, tag: str | None = None, builder: str | None = None, verify: bool = False
) -> BuiltImage:
    """Build the image of the materialised model in ``model_dir``.

    Args:
        model_dir: a model directory materialised by vintage (it holds its content manifest).
        tag: a tag or a whole reference (default ``v<version>-<model digest>``).
        builder: ``buildah`` (default) or ``docker``.
        verify: load the model inside the finished image (:func:`check_loads`), as ``vintage image build``
            does; a deploy target that starts the image and waits for ``/ready`` before switching finds the
            same failure itself.

    Raises:
        ServingError: the directory is not a materialised model, or its files changed since.
        ImageError: the builder is missing or fails, the packages cannot be installed, the model does not
            load inside the image (``verify``).
        ConfigError: bad tag or builder name.
    """
    from vintage import __version__
    from vintage.model import digest
    from vintage.model.load import load_model_dir

    builder = resolve_builder(builder)
    tools.require(builder)
    model_dir = model_dir.resolve()
    model_digest = digest.verify(model_dir)
    model = load_model_dir(model_dir)
    info = model.info
    reference = image_reference(info.name, info.version, model_digest, tag)
    base_ref = base.ensure_base(builder)
    site = runtime.ensure_site(runtime.packages_for(model.predictor, info.serialization_format)) / "site"
    labels = {
        "org.opencontainers.image.title": reference.rsplit("/", 1)[-1].split(":", 1)[0],
        "org.opencontainers.image.description": "vintage scoring server with a registered model",
        "org.opencontainers.image.version": info.version or "",
        "org.opencontainers.image.base.name": base_ref,
        "vintage.version": __version__,
        "vintage.model.name": info.name or "",
        "vintage.model.version": info.version or "",
        "vintage.model.run_id": info.run_id or "",
        "vintage.model.digest": model_digest,
        "vintage.model.predictor": model.predictor,
        "vintage.keys-file": KEYS_FILE,
        "vintage.port": str(PORT),
        "vintage.healthcheck": json.dumps(healthcheck()),
    }
    work = tools.cache_dir() / "build"
    work.mkdir(exist_ok=True)
    context = Path(tempfile.mkdtemp(prefix="ctx-", dir=work))
    try:
        _link_tree(site, context / "site")
        _copy_app(context / "app" / "vintage")
        shutil.copytree(model_dir, context / "model", symlinks=False)
        tools.normalise(context / "model")
        (context / "Containerfile").write_text(
            containerfile(base_ref, model_digest, labels), encoding="utf-8"
        )
        tools.run(
            build_argv(builder, reference, context, annotations=labels),
            f"cannot build the image {reference}",
            hint=f"the last lines {builder} printed are listed above",
        )
    finally:
        shutil.rmtree(context, ignore_errors=True)
    image = _inspect(builder, reference, model_digest, base_ref, model.predictor)
    drop_intermediates(builder, reference)
    if verify:
        check_loads(builder, reference)
    return image


def containerfile(base_ref: str, model_digest: str, labels: dict[str, str]) -> str:
    """The Containerfile of the model image (the build context holds site/, app/ and model/)."""
    lines = [
        f"FROM {base_ref}",
        f"COPY site {SITE_DIR}",
        f"COPY app {APP_DIR}",
        f"COPY model {MODEL_DIR}",
        f"ENV PYTHONPATH={APP_DIR}:{SITE_DIR} PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PYTHONHASHSEED=0",
        f"USER {USER}",
        "WORKDIR /tmp",
        f"EXPOSE {PORT}/tcp",
        "HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 "
        f"CMD {json.dumps(healthcheck())}",
        "LABEL " + " ".join(f"{json.dumps(k)}={json.dumps(v)}" for k, v in sorted(labels.items())),
        f"ENTRYPOINT {json.dumps(entrypoint(model_digest))}",
        f"CMD {json.dumps(default_cmd())}",
    ]
    return "\n".join(lines) + "\n"


def build_argv(
    builder: str, reference: str, context: Path, annotations: dict[str, str] | None = None
) -> list[str]:
    """The build command: buildah with fixed timestamps (reproducible), or docker."""
    file = str(context / "Containerfile")
    if builder == "docker":
        return ["docker", "build", "--quiet", "-f", file, "-t", reference, str(context)]
    notes = [f"--annotation={k}={v}" for k, v in sorted((annotations or {}).items())]
    return [
        "buildah",
        "bud",
        "--quiet",
        "--isolation",
        "chroot",
        "--timestamp",
        "0",
        # OCI, not docker: buildah writes the build container's random id into a docker-format config, so
        # its digest would change with every build. The OCI format has no HEALTHCHECK field: the command is
        # in the label vintage.healthcheck for the runtime (podman run --health-cmd).
        "--format",
        "oci",
        "--layers",  # one layer per COPY: a new model pushes only its own layer
        "--no-cache",  # each build from its inputs (a cached layer would hide a non-reproducible one)
        *notes,
        "-f",
        file,
        "-t",
        reference,
        str(context),
    ]


def _inspect(builder: str, reference: str, model_digest: str, base_ref: str, predictor: str) -> BuiltImage:
    if builder == "docker":
        doc = json.loads(tools.run(["docker", "image", "inspect", reference], "cannot inspect " + reference))[
            0
        ]
        config = doc.get("Config") or {}
        image_id = str(doc["Id"])
        digests = doc.get("RepoDigests") or []
        manifest = str(digests[0]).rsplit("@", 1)[-1] if digests else image_id
        size = int(doc.get("Size") or 0)
    else:
        doc = json.loads(tools.run(["buildah", "inspect", "--type", "image", reference], "cannot inspect"))
        config = (doc.get("OCIv1") or {}).get("config") or {}
        image_id = "sha256:" + str(doc["FromImageID"]).removeprefix("sha256:")
        manifest = str(doc["FromImageDigest"])
        size = _manifest_size(doc)
    return BuiltImage(
        reference=reference,
        image_id=image_id,
        digest=manifest,
        model_digest=model_digest,
        size_bytes=size,
        labels=dict(sorted((config.get("Labels") or {}).items())),
        builder=builder,
        base=base_ref,
        predictor=predictor,
        entrypoint=tuple(config.get("Entrypoint") or ()),
        cmd=tuple(config.get("Cmd") or ()),
    )


_LOAD_CHECK: Final = f"""
import sys
from pathlib import Path
try:
    from vintage.model.load import load_model_dir
    load_model_dir(Path({MODEL_DIR!r}))
except BaseException as exc:
    print(getattr(exc, "headline", None) or f"{{type(exc).__name__}}: {{exc}}")
    sys.exit(1)
"""


_RUNTIME_LOG = re.compile(r'^(WARN|ERRO|INFO|DEBU)\[\d+\]|^time="|^level=')


def check_loads(builder: str, reference: str) -> None:
    """Load the model inside the image, as its user, the way the server will (no server started).

    A model that loads on the build machine may not in the image: its pickle can name a module that only the
    build machine has (project modules ship in the model's ``code/`` folder; an installed package does
    not). Such an image is untagged again and the build fails.

    Raises:
        ImageError: the model does not load in the image.
    """
    exe = tools.require(builder)
    python = ["/usr/bin/python3", "-c", _LOAD_CHECK]
    if builder == "docker":
        argv = [exe, "run", "--rm", "--network", "none", "--read-only", "--entrypoint", python[0], reference]
        proc = subprocess.run([*argv, *python[1:]], capture_output=True, text=True, check=False)
    else:
        ctr = tools.run([exe, "from", "--pull-never", "--quiet", reference], f"cannot start {reference}")
        try:
            argv = [exe, "run", "--isolation", "chroot", "--user", USER, ctr, "--", *python]
            proc = subprocess.run(argv, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
        finally:
            subprocess.run([exe, "rm", ctr], capture_output=True, check=False)
    if proc.returncode == 0:
        return
    # The check prints its headline on stdout; the builder's own log lines (WARN[0000] ..., time="...")
    # on stderr are never the reason.
    said = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    logged = [ln for ln in proc.stderr.splitlines() if ln.strip() and not _RUNTIME_LOG.match(ln)]
    lines = said + logged
    rmi = [exe, "rmi", reference] if builder == "buildah" else [exe, "image", "rm", reference]
    subprocess.run(rmi, capture_output=True, check=False)
    raise ImageError(
        f"the image cannot load its model: {lines[0] if lines else f'exit code {proc.returncode}'}",
        hint="the image holds the model (with the project modules it was logged with, in its code/ folder), "
        "vintage and scikit-learn's stack only: a model that needs another installed package cannot be "
        "served from an image",
    )


def drop_intermediates(builder: str, reference: str) -> None:
    """Remove the untagged images that ``--layers`` left, one per instruction (the image keeps its layers).

    The last ``FROM <id>`` of the image's history is its direct parent; removing it removes its untagged
    ancestors too, down to the base image's tag. Nothing to do for docker, or when already gone.
    """
    if builder != "buildah":
        return
    doc = json.loads(tools.run(["buildah", "inspect", "--type", "image", reference], "cannot inspect"))
    history = ((doc.get("OCIv1") or {}).get("history")) or []
    parents = [str(h.get("comment") or "").split(" ", 1) for h in history]
    ids = [p[1] for p in parents if len(p) == 2 and p[0] == "FROM" and re.fullmatch(r"[0-9a-f]{12,64}", p[1])]
    if ids:
        exe = tools.require("buildah")
        subprocess.run([exe, "rmi", ids[-1]], capture_output=True, check=False, stdin=subprocess.DEVNULL)


def _manifest_size(doc: dict[str, Any]) -> int:
    """The sum of the layer sizes in the manifest (uncompressed tarballs in local storage)."""
    manifest = json.loads(str(doc.get("Manifest") or "{}"))
    return sum(int(layer.get("size") or 0) for layer in manifest.get("layers") or [])


def _link_tree(src: Path, dest: Path) -> None:
    """Hard-link ``src`` (a cached, already normalised tree) into the build context; copy across devices."""
    try:
        shutil.copytree(src, dest, copy_function=os.link)
    except OSError:
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(src, dest)


def _copy_app(dest: Path) -> None:
    """The vintage package's source files and package data (no caches), compiled with source hashes."""
    import vintage

    src = Path(vintage.__file__).resolve().parent
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo"))
    runtime.compile_tree(dest, f"{APP_DIR}/vintage")
    tools.normalise(dest)
