"""The container deploy target: an environment served by the model's OCI image under podman (or docker).

State of an environment lives under ``<state_dir>/envs/<environment>/`` (mode 0700), as for the local
target:

``deployments.json``
    every deployment, oldest first, in the local target's format plus ``container``, ``image`` and
    ``image_digest`` (written atomically);
``keys/<container>/keys``
    the API keys of a running container (environments with ``api_keys: true``): the directory is mode
    0500 and the file 0400, both owned by the image's user; the directory is bind-mounted read-only into
    that container and removed when the container stops. The keys never reach an environment variable,
    an argument or an image layer.
``inference/``
    the inference log (``environments.<env>.inference_log``, on by default): mode 0700, owned by the image's
    user and bind-mounted read-write at ``/var/lib/vintage/inference``; the server writes ``.npz`` files
    there (the lean image has no pyarrow), which ``vintage monitor`` reads.

The container is named ``vintage-<environment>-<12 hex digits of the model digest>-<project key>``, labelled
with the environment, model, version, model digest and project key (a digest of the state directory, so
two projects on one machine never touch each other's containers), and publishes its port 8080 on
``127.0.0.1:<port>`` only, with a read-only root file system, a pids limit and a memory limit.

A deploy builds (or reuses) the image of the model directory, starts it on a temporary loopback port and
waits for ``/ready`` and the right model digest on ``/version`` while the old container keeps serving.
Then it switches: the old container stops (drains), the new one starts on the environment's port; if it
does not come up, it is removed and the old one starts again. The old container is kept stopped, so a
rollback (a failed smoke test, ``vintage rollback``) starts it again without a build; older ones are
removed. During the switch the port refuses connections (about the time the new container takes to
answer ``/ready``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import shutil
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from vintage.config.environments import TargetSettings
from vintage.deploy.base import Deployment, DeployOutcome
from vintage.deploy.records import EnvironmentRecords, as_int, verified
from vintage.deploy.runtime import ContainerRuntime, RunSpec, labels_of, running, user_ids
from vintage.errors import DeployError, ServingError, VintageError
from vintage.fsutil import write_private
from vintage.model import digest as model_digest
from vintage.serving.auth import OPEN_FLAG
from vintage.serving.client import ServerClient
from vintage.serving.inference_log import log_dir
from vintage.serving.launch import inference_log_args
from vintage.shared_state import display

if TYPE_CHECKING:
    from typing import Self

    from vintage.config import Spec

READY_TIMEOUT_S = 60.0
POLL_S = 0.05
STOP_TIMEOUT_S = 30
KEY_DIR_IN_CONTAINER = "/run/secrets/vintage"
KEY_FILE = "keys"  # the image reads /run/secrets/vintage/keys (vintage image build)
LOG_DIR_IN_CONTAINER = "/var/lib/vintage/inference"
LABEL_ENV = "vintage.environment"
LABEL_MODEL = "vintage.model"
LABEL_VERSION = "vintage.version"
LABEL_DIGEST = "vintage.digest"
LABEL_PROJECT = "vintage.project"
LABEL_OPTIONS = "vintage.serve-options"
LABEL_ROLE = "vintage.role"


class ContainerSettings(TargetSettings):
    """The keys of ``environments.<env>`` that only the container target takes (flat, next to ``target``)."""

    runtime: Literal["podman", "docker"] = "podman"
    """The container runtime."""
    memory: str | None = Field(default="1g", pattern=r"^[0-9]+[bkmgBKMG]?$")
    """The container's memory limit (``512m``, ``2g``; null: none)."""
    pids_limit: Annotated[int, Field(ge=16, le=65536)] = 256
    """The most processes in the container."""


@dataclasses.dataclass(frozen=True)
class _Image:
    reference: str
    digest: str | None
    image_id: str | None = None


class ContainerTarget(EnvironmentRecords):
    """Runs an environment's scoring server as a container on ``127.0.0.1:port``.

    Args:
        environment: The environment served (``staging``, ``production``).
        state_dir: The project's state directory (environment state, audit trail, local secret store).
        port: The loopback port the container's server is published on.
        runtime: ``podman`` (default) or ``docker``.
        key_scope: Secret scope holding the API keys (``primary``, ``secondary``); ``None`` = no keys.
        secrets: The ``secrets`` settings of vintage.yaml (providers), as a plain mapping.
        public_metadata: Serve ``/version``, ``/metrics``, ``/openapi.json`` without the API key.
        workers: Server worker processes in the container.
        memory: The container's memory limit (``"1g"``); ``None`` = no limit.
        pids_limit: The most processes the container may run.
        project: What identifies the project (default: the state directory; with a shared state, its
            database URL without the password).

    Raises:
        DeployError: the runtime is not installed (one line, with the fix).
    """

    TYPE = "container"
    Settings = ContainerSettings

    def __init__(
        self,
        environment: str,
        state_dir: Path,
        *,
        port: int,
        runtime: str = "podman",
        key_scope: str | None = None,
        secrets: dict[str, Any] | None = None,
        public_metadata: bool = False,
        workers: int = 1,
        memory: str | None = "1g",
        pids_limit: int = 256,
        project: str | None = None,
        inference_log: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(environment, state_dir)
        self.port = port
        self.key_scope = key_scope
        self.secrets: dict[str, Any] = dict(secrets or {})
        self.public_metadata = public_metadata
        self.workers = max(1, workers)
        self.memory = memory
        self.pids_limit = pids_limit
        self.keys_dir = self.dir / "keys"
        self.url = f"http://127.0.0.1:{port}"
        # The project is its state: the state directory, or the shared state database (state_url), so the
        # CI jobs of one project on different checkouts find (and replace) each other's containers.
        self.project = hashlib.sha256((project or str(self.state_dir)).encode()).hexdigest()[:8]
        self.runtime = ContainerRuntime(runtime)
        # the server's inference log settings, its directory being the mount point in the container
        self.inference_log = inference_log
        self.log_dir = log_dir(self.state_dir, environment)

    @classmethod
    def from_spec(cls, spec: Spec, environment: str) -> Self:
        """The target of ``environment`` as vintage.yaml configures it."""
        env = spec.environments[environment]
        settings = env.settings_as(cls.Settings)
        return cls(
            environment,
            spec.state_dir.resolve(),
            port=env.port,
            runtime=settings.runtime,
            key_scope=spec.key_scope(environment),
            secrets=spec.secrets.model_dump(mode="json"),
            public_metadata=env.public_metadata,
            workers=env.workers,
            memory=settings.memory,
            pids_limit=settings.pids_limit,
            project=display(spec.state_url) if spec.state_url else None,
            inference_log=env.inference_log.server_settings(Path(LOG_DIR_IN_CONTAINER)),
        )

    # -- the DeployTarget protocol ----------------------------------------------------------------------

    def deploy(self, model_dir: Path, model_name: str, version: int) -> DeployOutcome:
        """Serve ``model_dir`` from its image: start, or switch from the running container.

        Raises:
            DeployError: the image cannot be built, the container did not become ready (the old one then
                serves again), or the port is taken by something else.
        """
        model_dir = Path(model_dir).resolve()
        detail = f"{model_name} v{version}"
        try:
            digest = verified(model_dir)
            current, previous, action = self._deploy(model_dir, model_name, version, digest)
        except VintageError as exc:
            self._audit("deploy", "failed", f"{detail}: {exc.headline}")
            raise
        self._audit(
            "deploy", "ok", f"{detail} ({model_digest.short(digest)}) {action} in {current.container}"
        )
        return DeployOutcome(current=current, previous=previous, action=action, history=self.history())

    def restore(self, previous: Deployment | None) -> Deployment | None:
        """Serve ``previous`` again (its stopped container, else a new one from its image); ``None`` stops.

        Raises:
            DeployError: the previous container could not be started.
        """
        if previous is None:
            stopped = self._stop()
            self._audit("rollback", "ok", "stopped" if stopped else "nothing was running")
            return None
        detail = f"{previous.model_name} v{previous.version}"
        try:
            model_dir = Path(previous.model_dir)
            digest = verified(model_dir, previous.digest)
            current, _, action = self._deploy(
                model_dir, previous.model_name, previous.version, digest, reuse=previous
            )
        except VintageError as exc:
            self._audit("rollback", "failed", f"{detail}: {exc.headline}")
            raise
        self._audit("rollback", "ok", f"{detail} {action} in {current.container}")
        return current

    def status(self) -> Deployment | None:
        """What serves now (``healthy`` from ``/ready``, ``served_digest`` from ``/version``), or ``None``."""
        live = self._live()
        if live is None:
            return None
        name, info = live
        healthy = self._client(self.port).ready()
        served = self._served(self.port, name)
        served_digest = served.get("digest") if served else None
        history = self.history()
        if history and history[-1].container == name:
            return dataclasses.replace(history[-1], healthy=healthy, served_digest=served_digest)
        labels = labels_of(info)
        return Deployment(
            target=self.TYPE,
            environment=self.environment,
            model_name=labels.get(LABEL_MODEL, ""),
            version=as_int(labels.get(LABEL_VERSION)),
            model_dir="",
            url=self.url,
            pid=None,
            since=str((info.get("State") or {}).get("StartedAt", ""))[:19],
            healthy=healthy,
            digest=labels.get(LABEL_DIGEST),
            served_digest=served_digest,
            container=name,
            image=_image_ref(info),
        )

    def crashed(self) -> str | None:
        """``stop`` removes this environment's containers, so the last deployed one, still there but not
        running, ended by itself (or its runtime restarted without it)."""
        history = self.history()
        if not history or not history[-1].container or self._live() is not None:
            return None
        name = history[-1].container
        info = self.runtime.inspect(name)
        if info is None:
            return None
        state = info.get("State") or {}
        how = (
            "was killed for lack of memory"
            if state.get("OOMKilled")
            else f"exited with code {state.get('ExitCode')}"
        )
        when = str(state.get("FinishedAt") or "")[:19]
        logs = f"{Path(self.runtime.binary).name} logs {name}"
        return f"its container {name} {how}" + (f" at {when}" if when else "") + f"; its log: {logs}"

    def stop(self) -> bool:
        """Stop the running container (SIGTERM: it drains) and remove this environment's containers and
        key files; ``False`` when nothing ran."""
        stopped = self._stop()
        if stopped:
            self._audit("stop", "ok", f"port {self.port}")
        return stopped

    # -- deploy ------------------------------------------------------------------------------------------

    def name_for(self, digest: str) -> str:
        """The container name of a model digest in this environment and project."""
        return f"vintage-{self.environment}-{digest.split(':', 1)[-1][:12]}-{self.project}"

    def _labels(self, model_name: str, version: int, digest: str) -> dict[str, str]:
        return {
            LABEL_ENV: self.environment,
            LABEL_MODEL: model_name,
            LABEL_VERSION: str(version),
            LABEL_DIGEST: digest,
            LABEL_PROJECT: self.project,
            LABEL_OPTIONS: " ".join(self._serve_args()),
        }

    def _serve_args(self) -> list[str]:
        """The server's arguments (the image's command): where the keys are, or none; never a key."""
        # Without keys: the server listens on 0.0.0.0 in the container's own network namespace and the
        # runtime publishes it on 127.0.0.1 only, so only local users reach it (as with the local target).
        keys = ["--api-key-file", f"{KEY_DIR_IN_CONTAINER}/{KEY_FILE}"]
        args = keys if self.key_scope else [OPEN_FLAG]
        if self.public_metadata:
            args.append("--public-metadata")
        if self.workers > 1:
            args += ["--workers", str(self.workers)]
        if self.inference_log is not None:
            args += inference_log_args(self.inference_log)
        return args

    def _fits(self, info: dict[str, Any]) -> bool:
        """A container was created with this environment's current options (keys, public metadata)."""
        return labels_of(info).get(LABEL_OPTIONS) == " ".join(self._serve_args())

    def _deploy(
        self,
        model_dir: Path,
        model_name: str,
        version: int,
        digest: str,
        *,
        reuse: Deployment | None = None,
    ) -> tuple[Deployment, Deployment | None, str]:
        self._prepare_dirs()
        history = self.history()
        last = history[-1] if history else None
        name = self.name_for(digest)
        live = self._live()
        in_place = False
        if live is not None and live[0] == name:
            if self._fits(live[1]) and self._client(self.port).ready():
                return self._unchanged(live[1], last, model_dir, model_name, version, digest)
            in_place = True  # this model, but other options (API keys on/off) or not answering: replaced
        live_name = live[0] if live else None
        if live is None and not _port_free(self.port):
            raise self._port_taken()
        previous = (
            last if last is not None and live_name is not None and last.container == live_name else None
        )
        existing = None if in_place else self.runtime.inspect(name)
        if existing is not None and not self._fits(existing):
            self._discard(name)
            existing = None
        if existing is not None and reuse is not None:
            # a rollback: the container kept from before starts again, no build
            image = _Image(_image_ref(existing), reuse.image_digest)
            self._switch(name, live_name, digest, create=None)
        else:
            image = self._image(model_dir, reuse)
            if existing is not None and _same_image(existing, image):
                # this model served here before from this very image: it starts again, no pre-check
                self._switch(name, live_name, digest, create=None)
            else:
                labels = self._labels(model_name, version, digest)
                self._precheck(name, image, labels, digest)
                if in_place:
                    self._discard(name)
                self._switch(name, None if in_place else live_name, digest, create=(image, labels))
        self._prune(keep={n for n in (name, live_name) if n})
        current = self._record(
            history, model_dir, model_name, version, digest, name, image.reference, image.digest
        )
        return current, previous, "swapped" if live is not None else "started"

    def _unchanged(
        self,
        info: dict[str, Any],
        last: Deployment | None,
        model_dir: Path,
        model_name: str,
        version: int,
        digest: str,
    ) -> tuple[Deployment, Deployment | None, str]:
        """The running container already serves ``digest``: refresh its keys, record it if the history
        does not say so yet."""
        name = str(info.get("Name") or "").lstrip("/")
        self._refresh_keys(name)
        if last is not None and last.container == name and last.digest == digest:
            return last, last, "unchanged"
        current = self._record(self.history(), model_dir, model_name, version, digest, name, _image_ref(info))
        return current, last, "unchanged"

    def _record(
        self,
        history: list[Deployment],
        model_dir: Path,
        model_name: str,
        version: int,
        digest: str,
        container: str,
        image: str,
        image_digest: str | None = None,
    ) -> Deployment:
        """Append what serves now (container ``container`` of ``image``) to the history; returns it."""
        current = Deployment(
            target=self.TYPE,
            environment=self.environment,
            model_name=model_name,
            version=version,
            model_dir=str(model_dir),
            url=self.url,
            pid=None,
            since=datetime.now(UTC).isoformat(timespec="seconds"),
            healthy=True,
            digest=digest,
            served_digest=digest,
            container=container,
            image=image,
            image_digest=image_digest,
        )
        self.write_history([*history, current])
        return current

    def _image(self, model_dir: Path, reuse: Deployment | None) -> _Image:
        """The image serving ``model_dir``: the recorded one when the runtime still has it, else built."""
        if reuse is not None and reuse.image and self.runtime.image(reuse.image) is not None:
            return _Image(reuse.image, reuse.image_digest)
        from vintage.image.build import build_image

        built = build_image(model_dir, builder="docker" if self.runtime.name == "docker" else None)
        return _Image(built.reference, built.digest, built.image_id)

    def _precheck(self, name: str, image: _Image, labels: dict[str, str], digest: str) -> None:
        """Run the new image on a temporary loopback port until it is ready and serves ``digest``; the
        container serving the environment is not touched."""
        check = f"{name}-check"
        self._discard(check)
        try:
            port = _free_port()
            self._create(check, image, {**labels, LABEL_ROLE: "check"}, port)
            self._wait_ready(check, port)
            self._confirm(check, port, digest)
        finally:
            self._discard(check)

    def _switch(
        self, name: str, old: str | None, digest: str, create: tuple[_Image, dict[str, str]] | None
    ) -> None:
        """Stop ``old`` (kept for a rollback), then start ``name`` on the environment's port (a new
        container from ``create``'s image, else the existing stopped one). If it does not become ready
        and serve ``digest``, it is removed and ``old`` starts again."""
        if old is not None:
            self.runtime.stop(old, STOP_TIMEOUT_S)
            self._drop_keys(old)
        try:
            if create is not None:
                self._discard(name)
                self._create(name, create[0], create[1], self.port)
            else:
                self._write_keys(name)
                self.runtime.start(name)
            self._wait_ready(name, self.port)
            self._confirm(name, self.port, digest)
        except DeployError as exc:
            self._discard(name)
            if old is None:
                raise
            try:
                self._write_keys(old)
                self.runtime.start(old)
                self._wait_ready(old, self.port)
            except DeployError as again:
                raise DeployError(
                    f"{exc.headline}; starting the container that served before failed too: {again.headline}",
                    hint=f"`{self.runtime.name} ps -a` and `{self.runtime.name} logs {old}`",
                    details=exc.details,
                ) from exc
            raise DeployError(
                f"{exc.headline}; the container that served before ({old}) serves again",
                hint=exc.hint,
                details=exc.details,
            ) from exc

    def _create(self, name: str, image: _Image, labels: dict[str, str], port: int) -> None:
        mounts: dict[str, str] = {}
        writable: dict[str, str] = {}
        if self.key_scope:
            mounts[str(self._write_keys(name, image.reference))] = KEY_DIR_IN_CONTAINER
        if self.inference_log is not None:
            writable[str(self._log_dir_for(image.reference))] = LOG_DIR_IN_CONTAINER
        self.runtime.run(
            RunSpec(
                name=name,
                image=image.reference,
                host_port=port,
                labels=labels,
                mounts=mounts,
                writable=writable,
                memory=self.memory,
                pids_limit=self.pids_limit,
                args=self._serve_args(),
            )
        )

    def _wait_ready(self, name: str, port: int) -> None:
        """Until ``/ready`` answers 200 on ``port``.

        Raises:
            DeployError: the container exited or was not ready in time (with its last log lines).
        """
        deadline = time.monotonic() + READY_TIMEOUT_S
        why = f"it was not ready after {READY_TIMEOUT_S:.0f} s"
        while time.monotonic() < deadline:
            if self._client(port).ready():
                return
            info = self.runtime.inspect(name)
            if not running(info):
                code = ((info or {}).get("State") or {}).get("ExitCode")
                why = f"it exited with code {code}" if info else "it is gone"
                break
            time.sleep(POLL_S)
        raise DeployError(
            f"the container {name} for {self.environment} did not start: {why}",
            hint="its last log lines are below (a container that fails to start is removed)",
            details=self.runtime.logs(name),
        )

    def _confirm(self, name: str, port: int, digest: str) -> None:
        """The server in ``name`` reports ``digest`` on ``/version`` (when it reports one)."""
        served = self._served(port, name)
        found = served.get("digest") if served else None
        if found is not None and found != digest:
            raise DeployError(
                f"the container {name} should serve {model_digest.short(digest)} but serves "
                f"{model_digest.short(str(found))}",
                hint="rebuild the image: vintage image build",
            )

    def _port_taken(self) -> DeployError:
        return DeployError(
            f"port {self.port} on 127.0.0.1 is already in use by another process, "
            f"so the container for {self.environment} cannot start",
            hint=f"stop whatever listens on port {self.port}, or give {self.environment} another port",
        )

    # -- containers ----------------------------------------------------------------------------------------

    def _ours(self) -> list[str]:
        return self.runtime.names({LABEL_ENV: self.environment, LABEL_PROJECT: self.project})

    def _live(self) -> tuple[str, dict[str, Any]] | None:
        """The running container serving this environment (not a pre-check one), with its ``inspect``."""
        for name in self._ours():
            info = self.runtime.inspect(name)
            if running(info) and labels_of(info).get(LABEL_ROLE) != "check":
                assert info is not None
                return name, info
        return None

    def _discard(self, name: str) -> None:
        self.runtime.remove(name)
        self._drop_keys(name)

    def _prune(self, keep: set[str]) -> None:
        """Remove this environment's containers except ``keep``, and key files of stopped containers."""
        for name in self._ours():
            if name not in keep:
                self._discard(name)
        if self.keys_dir.is_dir():
            for path in self.keys_dir.iterdir():
                if path.name not in keep or not running(self.runtime.inspect(path.name)):
                    self._drop_keys(path.name)

    def _stop(self) -> bool:
        live = self._live()
        if live is not None:
            self.runtime.stop(live[0], STOP_TIMEOUT_S)
        self._prune(keep=set())
        return live is not None

    # -- API keys ------------------------------------------------------------------------------------------

    def _read_keys(self) -> list[str]:
        from vintage.serving.auth import ApiKeys, ScopeKeys

        assert self.key_scope is not None
        keys = ScopeKeys(self.key_scope, self.environment, str(self.state_dir), self.secrets).read()
        return ApiKeys._check(keys)

    def _write_keys(self, name: str, image: str | None = None) -> Path:
        """Write the keys for container ``name`` (a directory for its read-only mount); its path.

        The directory (0500) and the file (0400) belong to the image's user, so only that user in the
        container (and root on the host) reads them. Rewritten atomically: a running server re-reads it on
        SIGHUP.
        """
        folder = self.keys_dir / name
        if not self.key_scope:
            return folder
        owner = self._owner(image or self._image_of(name), "the API key file", "turn api_keys off")
        text = "\n".join(self._read_keys()) + "\n"
        folder.mkdir(mode=0o700, exist_ok=True)
        path = folder / KEY_FILE
        write_private(path, text.encode())
        if owner is not None:
            os.chown(path, *owner)
            os.chown(folder, *owner)
        path.chmod(0o400)
        folder.chmod(0o500)
        return folder

    def _refresh_keys(self, name: str) -> None:
        """Rewrite a running container's key file when the scope's keys changed, SIGHUP its server (it
        re-reads the file; several workers are replaced one by one) and wait until the new key is taken.

        Raises:
            DeployError: the server did not take the new key in time.
        """
        if not self.key_scope:
            return
        path = self.keys_dir / name / KEY_FILE
        try:
            before = path.read_bytes()
        except OSError:
            before = b""
        self._write_keys(name)
        if path.read_bytes() == before:
            return
        self.runtime.signal(name, "HUP")
        if self.public_metadata:
            return  # /version answers any caller: nothing tells the new key from the old one
        new = path.read_text(encoding="utf-8").split()
        gone = [k for k in before.decode("utf-8", errors="replace").split() if k not in new]
        deadline = time.monotonic() + READY_TIMEOUT_S
        passed = 0
        # Several workers are replaced one by one, and the kernel spreads connections over them: the new
        # key must be taken and the removed ones refused on many fresh connections in a row.
        while passed < 4 * self.workers:
            if time.monotonic() > deadline:
                raise DeployError(
                    f"the container {name} for {self.environment} did not take the new API keys",
                    hint=f"`{self.runtime.name} logs {name}`; deploy again to retry",
                )
            ok = self._served(self.port, name) is not None and all(
                self._client(self.port, k).status_code("/version") == 401 for k in gone
            )
            passed = passed + 1 if ok else 0
            if not ok:
                time.sleep(POLL_S)

    def _log_dir_for(self, image: str) -> Path:
        """The inference log directory (0700), owned by the user ``image`` runs as so its server can write."""
        self.log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        owner = self._owner(image, "the inference log directory", "set inference_log.sample: 0")
        if owner is not None:
            os.chown(self.log_dir, *owner)
        self.log_dir.chmod(0o700)
        return self.log_dir

    def _drop_keys(self, name: str) -> None:
        folder = self.keys_dir / name
        if folder.exists():
            with contextlib.suppress(OSError):
                folder.chmod(0o700)
            shutil.rmtree(folder, ignore_errors=True)

    def _image_of(self, name: str) -> str:
        return _image_ref(self.runtime.inspect(name) or {})

    def _owner(self, image: str, what: str, instead: str) -> tuple[int, int] | None:
        """``uid, gid`` to own ``what`` (the key file, the log directory): the image's numeric user;
        ``None`` when files need no owner change (the image runs as root, or as the deploying user).
        ``instead``: how to do without it, for the error's hint."""
        info = self.runtime.image(image)
        ids = user_ids(info) if info else None
        if ids is None or ids[0] in (0, os.geteuid()):
            if info is not None and ids is None and str((info.get("Config") or {}).get("User") or ""):
                raise DeployError(
                    f"the image {image} runs as a user given by name; the container target needs a numeric "
                    f"USER (uid:gid) to give it {what}",
                    hint="rebuild it with vintage image build",
                )
            return None
        if os.geteuid() != 0:
            raise DeployError(
                f"only root can hand {what} to the container's user (uid {ids[0]})",
                hint=f"deploy as root (rootful podman), or {instead} for this environment",
            )
        return ids

    # -- HTTP ------------------------------------------------------------------------------------------------

    def _key(self, name: str) -> str | None:
        if not self.key_scope:
            return None
        try:
            lines = (self.keys_dir / name / KEY_FILE).read_text(encoding="utf-8").split()
        except OSError:
            return None
        return lines[0] if lines else None

    def _client(self, port: int, key: str | None = None) -> ServerClient:
        """The client of the server published on ``port`` (``key`` sent on ``/version``; probes send none)."""
        return ServerClient(f"http://127.0.0.1:{port}", api_key=key)

    def _served(self, port: int, name: str) -> dict[str, Any] | None:
        """``/version`` of the server (with the container's key), or ``None`` when it does not answer."""
        try:
            return self._client(port, self._key(name)).version()
        except ServingError:  # nothing answers, another status than 200, or not a JSON object
            return None

    # -- files -----------------------------------------------------------------------------------------------

    def _prepare_dirs(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        self.keys_dir.mkdir(mode=0o700, exist_ok=True)


def _same_image(info: dict[str, Any], image: _Image) -> bool:
    """A container was created from ``image`` (same image id)."""
    found = str(info.get("Image") or "").removeprefix("sha256:")
    return bool(found) and found == str(image.image_id or "").removeprefix("sha256:")


def _image_ref(info: dict[str, Any]) -> str:
    """The image a container was created from (name as given, else id)."""
    return str(info.get("ImageName") or info.get("Image") or "")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
