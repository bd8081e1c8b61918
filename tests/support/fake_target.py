"""A deploy target in memory: implements :class:`vintage.deploy.base.DeployTarget` and keeps what each
environment serves in a :class:`World` shared by every instance of one test. Registered as the ``fake``
row of the deploy-target table for the duration of :func:`fake_targets` (``target: fake`` in the config).
Its own settings (``region``, ``replicas``) are declared here, in :class:`FakeSettings`, and nowhere in
the config models: ``environments.<env>: {target: fake, region: there}`` validates through the table.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal, Self

from pydantic import Field

from vintage.config.environments import TargetSettings
from vintage.deploy.base import Deployment, DeployOutcome
from vintage.deploy.records import EnvironmentRecords
from vintage.errors import DeployError
from vintage.plugins import DEPLOY_TARGETS

if TYPE_CHECKING:
    from vintage.config import Spec


@dataclass
class World:
    """What every fake environment serves, and every call made (``(environment, action, version)``)."""

    serving: dict[str, Deployment | None] = field(default_factory=dict)
    deployments: dict[str, list[Deployment]] = field(default_factory=dict)
    calls: list[tuple[str, str, int | None]] = field(default_factory=list)
    fail_deploy: str | None = None
    crashed: dict[str, str] = field(default_factory=dict)


class FakeSettings(TargetSettings):
    """The keys only ``target: fake`` takes."""

    region: Literal["here", "there"] = "here"
    replicas: Annotated[int, Field(ge=1, le=9)] = 1


class FakeTarget:
    """One environment of the :class:`World` of the enclosing :func:`fake_targets` block."""

    TYPE = "fake"
    Settings = FakeSettings
    world: ClassVar[World]

    def __init__(
        self,
        environment: str,
        port: int,
        world: World,
        settings: FakeSettings | None = None,
        state_dir: Path | None = None,
    ) -> None:
        self.environment = environment
        self.port = port
        self.settings = settings or FakeSettings()
        self._world = world
        # Like every real target, it keeps the environment's deployments.json (what ops reads to notice a
        # change of target) when it knows the state directory.
        self._records = EnvironmentRecords(environment, state_dir) if state_dir is not None else None

    @classmethod
    def from_spec(cls, spec: Spec, environment: str) -> Self:
        env = spec.environments[environment]
        return cls(environment, env.port, cls.world, env.settings_as(cls.Settings), spec.state_dir)

    def deploy(self, model_dir: Path, model_name: str, version: int) -> DeployOutcome:
        w = self._world
        if w.fail_deploy:
            raise DeployError(w.fail_deploy)
        previous = w.serving.get(self.environment)
        digest = f"sha256:{model_name}-{version}"
        if previous is not None and previous.digest == digest:
            w.calls.append((self.environment, "unchanged", version))
            return DeployOutcome(previous, previous, "unchanged", self.history())
        current = Deployment(
            target=self.TYPE,
            environment=self.environment,
            model_name=model_name,
            version=version,
            model_dir=str(model_dir),
            url=f"http://127.0.0.1:{self.port}",
            pid=None,
            since=datetime.now(UTC).isoformat(timespec="seconds"),
            digest=digest,
            served_digest=digest,
        )
        action = "started" if previous is None else "swapped"
        w.serving[self.environment] = current
        w.deployments.setdefault(self.environment, []).append(current)
        if self._records is not None:
            self._records.write_history(self.history())
        w.calls.append((self.environment, action, version))
        return DeployOutcome(current, previous, action, self.history())

    def restore(self, previous: Deployment | None) -> Deployment | None:
        w = self._world
        w.calls.append((self.environment, "restore", previous.version if previous else None))
        w.serving[self.environment] = replace(previous) if previous else None
        return previous

    def status(self) -> Deployment | None:
        return self._world.serving.get(self.environment)

    def stop(self) -> bool:
        w = self._world
        running = w.serving.get(self.environment) is not None
        w.serving[self.environment] = None
        w.calls.append((self.environment, "stop", None))
        return running

    def crashed(self) -> str | None:
        return self._world.crashed.get(self.environment)

    def history(self) -> list[Deployment]:
        return list(self._world.deployments.get(self.environment, []))


@contextlib.contextmanager
def fake_targets(world: World | None = None) -> Iterator[World]:
    """Within the block, ``target: fake`` is a deploy target serving from ``world`` (a new one by default)."""
    world = world or World()
    bound = type("BoundFakeTarget", (FakeTarget,), {"world": world})
    with DEPLOY_TARGETS.override("fake", bound):
        yield world
