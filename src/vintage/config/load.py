"""Read vintage.yaml into a :class:`~vintage.config.models.Spec`, with errors that name the file, the key
path and what was expected.

Precedence for the settings that can come from several places: environment variable > vintage.yaml >
default. ``VINTAGE_CONFIG`` names the file, ``VINTAGE_STATE_DIR`` the state directory,
``VINTAGE_STATE_URL`` the shared state database and ``MLFLOW_TRACKING_URI`` the tracking store.
"""

from __future__ import annotations

import os
import sys
import types
import typing
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from vintage.config.models import ProjectSettings, Spec
from vintage.errors import ConfigError

DEFAULT_CONFIG_FILE = "vintage.yaml"
_MAX_VALUE_CHARS = 60


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (PyYAML silently keeps the last one)."""


def _construct_mapping(
    loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False
) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, Hashable):
            raise yaml.constructor.ConstructorError(
                None, None, f"a {type(key).__name__} cannot be a mapping key", key_node.start_mark
            )
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def resolve_config_path(path: str | Path | None = None) -> Path:
    """The config file to read: the argument, else ``$VINTAGE_CONFIG``, else ./vintage.yaml."""
    return Path(path or os.environ.get("VINTAGE_CONFIG") or DEFAULT_CONFIG_FILE)


def load_spec(path: str | Path | None = None) -> Spec:
    """Parse and validate the workload spec.

    Relative ``data.path`` values are taken relative to the config file's directory; ``state_dir`` is
    relative to the working directory (like MLflow's ``./mlruns``).

    Raises:
        ConfigError: the file is missing, is not valid YAML, or does not match the schema.
    """
    file = resolve_config_path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{file}: config file not found",
            hint="run vintage from the project directory, or pass --config PATH (or set VINTAGE_CONFIG)",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: cannot read the config file ({exc.__class__.__name__})") from exc
    raw = _parse_yaml(file, text)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{file}: expected a mapping of settings at the top level, got {type(raw).__name__}"
        )
    _apply_environment(raw)
    project_importable(file.parent)
    try:
        spec = Spec.model_validate(raw)
    except ValidationError as exc:
        raise _config_error(file, exc) from None
    if spec.data.path is not None and not spec.data.path.is_absolute():
        data = spec.data.model_copy(update={"path": (file.parent / spec.data.path)})
        spec = spec.model_copy(update={"data": data})
    return spec


def project_importable(directory: Path) -> None:
    """Let estimator classes be imported from the project: the config file's directory goes at the end
    of ``sys.path`` (and so into the training workers' path), where it never shadows an installed module
    of the same name. ``PYTHONPATH=.`` or installing the package is not needed."""
    entry = str(directory.resolve())
    if entry not in sys.path:
        sys.path.append(entry)


def load_settings(path: str | Path | None = None) -> ProjectSettings:
    """Only ``state_dir`` and ``secrets`` of the config file (defaults when there is no file and none was
    asked for explicitly); the rest of the file is not validated.

    Raises:
        ConfigError: the file is unreadable or invalid YAML, or these two settings are wrong.
    """
    file = resolve_config_path(path)
    explicit = path is not None or bool(os.environ.get("VINTAGE_CONFIG"))
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"{file}: config file not found") from None
        text = ""
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: cannot read the config file ({exc.__class__.__name__})") from exc
    raw = _parse_yaml(file, text) or {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{file}: expected a mapping of settings at the top level, got {type(raw).__name__}"
        )
    _apply_environment(raw)
    try:
        return ProjectSettings.model_validate(raw)
    except ValidationError as exc:
        raise _config_error(file, exc) from None


def _parse_yaml(file: Path, text: str) -> Any:
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark else str(file)
        raise ConfigError(f"{where}: invalid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: invalid YAML: {exc}") from None


def _apply_environment(raw: dict[str, Any]) -> None:
    if uri := os.environ.get("MLFLOW_TRACKING_URI"):
        raw["tracking_uri"] = uri
    if state := os.environ.get("VINTAGE_STATE_DIR"):
        raw["state_dir"] = state
    if url := os.environ.get("VINTAGE_STATE_URL"):
        raw["state_url"] = url


def _config_error(file: Path, exc: ValidationError) -> ConfigError:
    lines = [_format_error(file, err) for err in exc.errors(include_url=False)]
    more = len(lines) - 1
    return ConfigError(
        lines[0] + (f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""),
        hint="fix the key above; `vintage config validate` checks the file without running anything",
        details=lines[1:],
    )


def _format_error(file: Path, err: Any) -> str:
    loc = tuple(err["loc"])
    path = _key_path(loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        if (err.get("ctx") or {}).get("keys"):  # a deploy target's settings: the message names its keys
            return f"{file}: {path}: {err['msg']}"
        allowed = _allowed_keys(loc[:-1])
        expected = f"; expected one of: {', '.join(allowed)}" if allowed else ""
        return f"{file}: {path}: unknown key{expected}"
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "missing":
        return f"{file}: {path}: required key is missing"
    # A value under a key that may hold a credential is never echoed back.
    shown = None if any("token" in str(p) for p in loc) else _short(err.get("input"))
    got = f" (got {shown})" if shown is not None and not err["type"].startswith("value_error") else ""
    return f"{file}: {path}: {msg}{got}"


def _key_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif "[" in str(part) or str(part).startswith("function-"):
            continue  # pydantic's union-member tags are not keys the user wrote
        else:
            out += f".{part}" if out else str(part)
    return out


def _short(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    text = repr(value)
    return text if len(text) <= _MAX_VALUE_CHARS else text[: _MAX_VALUE_CHARS - 3] + "..."


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys the model at ``loc`` accepts (aliases where set), for 'unknown key' messages."""
    model: type[BaseModel] | None = Spec
    for part in loc:
        if model is None:
            return []
        if isinstance(part, int):
            continue
        field = next(
            (f for n, f in model.model_fields.items() if part in (n, f.alias)),
            None,
        )
        model = _model_in(field.annotation) if field else None
    if model is None:
        return []
    return [f.alias or n for n, f in model.model_fields.items()]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    if isinstance(annotation, types.UnionType):
        return None
    return None
