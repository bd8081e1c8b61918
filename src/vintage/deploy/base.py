"""What every deploy target offers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, Self

if TYPE_CHECKING:
    from vintage.config import Spec
    from vintage.config.environments import TargetSettings


@dataclass(frozen=True)
class Deployment:
    """What an environment serves now.

    Attributes:
        environment: environment name (``staging``, ``production``).
        model_name: registered model name.
        version: registered version served.
        model_dir: the materialised model directory the server loaded.
        url: base URL of the scoring server.
        pid: server process id (local target).
        since: ISO-8601 UTC time this version started serving.
        healthy: ``/ready`` answered 200 when the status was taken.
        digest: content digest of the model directory deployed (``sha256:...``).
        served_digest: the digest the server reported when the status was taken (``None``: it did not
            answer); differs from ``digest`` when someone changed what the server runs.
        container: the container serving it (container target), else ``None``.
        image: the image reference that container runs (container target).
        image_digest: that image's manifest digest (``sha256:...``), when known.
        target: the deploy target that made it (``local``, ``container``, ``kubernetes``); records written
            before targets were recorded are the local target's.
        replicas: the replicas wanted (kubernetes target), else ``None``.
        ready_replicas: the replicas ready when the status was taken (kubernetes target).
        revision: the Deployment's revision (kubernetes target).
    """

    environment: str
    model_name: str
    version: int
    model_dir: str
    url: str
    pid: int | None
    since: str
    healthy: bool = True
    digest: str | None = None
    served_digest: str | None = None
    container: str | None = None
    image: str | None = None
    image_digest: str | None = None
    target: str = "local"
    replicas: int | None = None
    ready_replicas: int | None = None
    revision: int | None = None

    @property
    def tampered(self) -> bool:
        """The server answers with another model than the one deployed."""
        return self.served_digest is not None and self.served_digest != self.digest


@dataclass(frozen=True)
class DeployOutcome:
    """Result of one deploy: what serves now and what served before (for rollback)."""

    current: Deployment
    previous: Deployment | None
    action: str  # "started" | "swapped" | "unchanged"
    history: list[Deployment] = field(default_factory=list)


class DeployTarget(Protocol):
    """One environment's deploy target.

    An implementation is a class named in :data:`vintage.plugins.DEPLOY_TARGETS` (the row's name is what
    ``environments.<env>.target`` says); the pipeline and the CLI build it with :meth:`from_spec`.
    """

    TYPE: str
    Settings: type[TargetSettings]
    """The keys of ``environments.<env>`` this target takes beyond the common ones (a strict pydantic model;
    config validates them with it, ``from_spec`` reads them with ``env.settings_as(cls.Settings)``)."""

    @classmethod
    def from_spec(cls, spec: Spec, environment: str) -> Self:
        """The target of ``environments.<environment>`` (the environment exists in ``spec``)."""
        ...

    def deploy(self, model_dir: Path, model_name: str, version: int) -> DeployOutcome:
        """Serve ``model_dir``: start the server if none runs, else hot-swap with zero downtime.

        Idempotent: deploying what already serves returns action ``unchanged``. Returns once the new
        model answers ``/ready``.
        """
        ...

    def restore(self, previous: Deployment | None) -> Deployment | None:
        """Serve ``previous`` again (hot swap back); ``None`` stops the server (there was nothing before)."""
        ...

    def status(self) -> Deployment | None:
        """What serves now (``healthy`` from a live probe), or ``None`` when nothing runs."""
        ...

    def stop(self) -> bool:
        """Stop the server (graceful drain); ``False`` when nothing ran."""
        ...

    def crashed(self) -> str | None:
        """Why nothing serves although nobody stopped it (the server died, was killed, or the machine
        restarted), as one line; ``None`` when it serves, was stopped, or never started. Reads only."""
        ...

    def history(self) -> list[Deployment]:
        """Every deployment of this environment, oldest first."""
        ...
