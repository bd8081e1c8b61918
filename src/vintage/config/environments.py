"""``environments`` of vintage.yaml: the keys every deploy target shares, and each target's own settings.

A key of an environment that is not common to every target belongs to the target named in ``target``; it is
validated by that target's ``Settings`` model (loaded through :data:`vintage.plugins.DEPLOY_TARGETS`), so a
new deploy target brings its settings in its own module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    Field,
    ModelWrapValidatorHandler,
    SerializeAsAny,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from vintage.config.base import Strict as _Strict
from vintage.config.base import in_table as _in
from vintage.plugins import DEPLOY_TARGETS

LOOPBACK: frozenset[str] = frozenset({"127.0.0.1", "localhost", "::1"})


class TargetSettings(_Strict):
    """The settings a deploy target takes beyond the common environment keys: a target's ``Settings``
    class subclasses this (strict: an unknown key is an error). Empty itself: the settings of a target
    that declares none (``local``)."""


def target_settings_model(target: str) -> type[BaseModel]:
    """The settings model of the deploy target ``target`` (its ``Settings``; :class:`TargetSettings`
    when it declares none), loaded through :data:`vintage.plugins.DEPLOY_TARGETS`.

    Raises:
        ConfigError: ``target`` is not a row of the table.
        TypeError: the target's ``Settings`` is not a pydantic model that forbids unknown keys.
    """
    model = getattr(DEPLOY_TARGETS.load(target), "Settings", None) or TargetSettings
    if not (isinstance(model, type) and issubclass(model, BaseModel)) or (
        model.model_config.get("extra") != "forbid"
    ):
        raise TypeError(
            f"the Settings of deploy target {target!r} must be a pydantic model that forbids unknown "
            "keys (subclass vintage.config.environments.TargetSettings)"
        )
    return model


_S = TypeVar("_S", bound=BaseModel)


class InferenceLogSpec(_Strict):
    """``environments.<env>.inference_log``: what the environment's scoring server records of its traffic.

    On by default: one request in ten (``sample: 0.1``) has its rows (features, prediction, model version,
    latency, time) written to ``<state_dir>/envs/<env>/inference/`` for ``vintage monitor``. ``sample: 0``
    turns it off. The local and container deploy targets and ``vintage serve -e ENV`` record; the kubernetes
    target does not yet.
    """

    sample: Annotated[float, Field(ge=0.0, le=1.0)] = 0.1
    """Share of requests recorded (every row of a sampled request); 0 = off."""
    max_queue_rows: Annotated[int, Field(ge=1, le=10_000_000)] = 10_000
    """Rows waiting for the writer thread; beyond, rows are dropped and counted in ``/metrics``."""
    rotate_rows: Annotated[int, Field(ge=1, le=10_000_000)] = 100_000
    """A file is written when it holds this many rows ..."""
    rotate_seconds: Annotated[float, Field(gt=0.0, le=86_400.0)] = 60.0
    """... or when its first row is this many seconds old (``vintage monitor`` sees rows after that)."""

    @property
    def enabled(self) -> bool:
        """Whether anything is recorded."""
        return self.sample > 0.0

    def server_settings(self, directory: Path) -> dict[str, Any] | None:
        """The scoring server's settings (``ServerCommand.inference_log``), or ``None`` when off."""
        if not self.enabled:
            return None
        return {"directory": str(directory), **self.model_dump()}


class EnvironmentSpec(_Strict):
    """One deployment environment (``staging``, ``production``, ...).

    The keys declared here are common to every deploy target. Any other key of the environment is a
    setting of its target, validated by the target's own ``Settings`` model (:func:`target_settings_model`)
    and kept, validated, in :attr:`settings`; vintage.yaml and :meth:`model_dump` keep them flat, next to
    ``target``.
    """

    target: Annotated[str, _in(DEPLOY_TARGETS)] = "local"
    """A row of :data:`vintage.plugins.DEPLOY_TARGETS`."""
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8081
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    api_keys: bool = False
    key_scope: str | None = None
    public_metadata: bool = False
    approvers: list[str] = Field(default_factory=list)
    forbid_self_approval: bool = False
    approval_ttl_hours: Annotated[float, Field(gt=0)] = 24.0
    lock_behavior: Literal["sequential", "run_latest"] = "sequential"
    lock_timeout_s: Annotated[float, Field(gt=0)] = 600.0
    inference_log: InferenceLogSpec = InferenceLogSpec()
    settings: SerializeAsAny[BaseModel] = Field(default_factory=TargetSettings)
    """The target's own settings (an instance of its ``Settings``); not a key of vintage.yaml."""

    @model_validator(mode="wrap")
    @classmethod
    def _target_settings(
        cls, data: Any, handler: ModelWrapValidatorHandler[EnvironmentSpec]
    ) -> EnvironmentSpec:
        if not isinstance(data, dict):
            return handler(data)
        common = {k: v for k, v in data.items() if k in COMMON_ENVIRONMENT_KEYS}
        rest = {k: v for k, v in data.items() if k not in COMMON_ENVIRONMENT_KEYS}
        target = common.get("target", cls.model_fields["target"].default)
        errors: list[Any] = []
        if isinstance(target, str) and target in DEPLOY_TARGETS:
            model = target_settings_model(target)
            try:
                common["settings"] = model.model_validate(rest)
            except ValidationError as exc:
                errors = [_for_target(err, target, model) for err in exc.errors()]
        # else: the unknown target is the error; its settings cannot be checked
        try:
            env = handler(common)
        except ValidationError as exc:
            errors = [*exc.errors(), *errors]
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return env

    @model_serializer(mode="wrap")
    def _flat(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        settings = data.pop("settings", None) or {}
        return {"target": data.pop("target"), **settings, **data} if "target" in data else data

    def settings_as(self, model: type[_S]) -> _S:
        """:attr:`settings` as ``model`` (the target's ``Settings``), as :meth:`from_spec` reads them."""
        if isinstance(self.settings, model):
            return self.settings
        return model.model_validate(self.settings.model_dump())

    @field_validator("host")
    @classmethod
    def _loopback(cls, value: str, info: ValidationInfo) -> str:
        # The embedded target serves on this machine only; other targets check their own hosts.
        # (``target`` is declared first, so it is validated before ``host``.)
        if info.data.get("target") == "local" and value not in LOOPBACK:
            raise ValueError(
                "the local target binds loopback only (127.0.0.1); "
                "another deploy target (environments.<env>.target) is needed to expose it"
            )
        return value


COMMON_ENVIRONMENT_KEYS: tuple[str, ...] = tuple(n for n in EnvironmentSpec.model_fields if n != "settings")
"""The keys of an environment every deploy target shares; the others belong to the target's settings."""


def _for_target(err: Any, target: str, model: type[BaseModel]) -> Any:
    """A line error of a target's settings; an unknown key names the target and the keys it accepts."""
    if err["type"] != "extra_forbidden":
        return err
    own = [f.alias or n for n, f in model.model_fields.items()]
    keys = ", ".join([*COMMON_ENVIRONMENT_KEYS, *own])
    message = "unknown key for the {target} target; expected one of: {keys}"
    context = {"target": target, "keys": keys}
    return {
        "type": PydanticCustomError("extra_forbidden", message, context),
        "loc": err["loc"],
        "input": err["input"],
    }


# The built-in environments. vintage.yaml's ``environments`` merges over them key by key: overriding one
# setting of one environment keeps the other settings and the other environments.
DEFAULT_ENVIRONMENTS: dict[str, dict[str, Any]] = {
    "staging": {"port": 8081},
    "production": {"port": 8082, "api_keys": True},
}


def default_environments() -> dict[str, EnvironmentSpec]:
    return {name: EnvironmentSpec.model_validate(values) for name, values in DEFAULT_ENVIRONMENTS.items()}


def merge_environments(value: object) -> object:
    """``environments`` from vintage.yaml laid over :data:`DEFAULT_ENVIRONMENTS`, key by key.

    ``production: {port: 9202}`` keeps production's ``api_keys: true``; naming only ``staging`` keeps
    ``production``; a new name (``qa``) adds an environment with the :class:`EnvironmentSpec` defaults.
    An empty entry (``production:``) keeps the built-in one. Anything that is not a mapping is left to
    the validation that follows (it reports the key path).
    """
    if value is None:
        return {name: dict(values) for name, values in DEFAULT_ENVIRONMENTS.items()}
    if not isinstance(value, dict):
        return value
    merged: dict[Any, Any] = {name: dict(values) for name, values in DEFAULT_ENVIRONMENTS.items()}
    for name, values in value.items():
        base = merged.get(name, {})
        if values is None:
            merged[name] = base
        elif isinstance(values, dict):
            merged[name] = {**base, **values}
        else:
            merged[name] = values
    return merged
