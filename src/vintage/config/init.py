"""``vintage init``: a new project directory with a commented vintage.yaml and a .gitignore."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from vintage.errors import ConfigError, VintageError

CONFIG_NAME = "vintage.yaml"
IGNORED = (".vintage/", "__pycache__/", "*.pyc")
"""What .gitignore gets: the state directory (tracking store, models, secrets, logs) and byte-code."""


@dataclass(frozen=True)
class NewProject:
    """What :func:`new_project` wrote: the config, and the .gitignore lines it added (an existing
    .gitignore keeps its lines)."""

    directory: Path
    config: Path
    ignore_added: tuple[str, ...]


def template() -> str:
    """The commented vintage.yaml of a new project (the wine-quality workload, every section explained,
    environments included): the same file as this repository's vintage.yaml (a test keeps them equal)."""
    return resources.files("vintage.config").joinpath("template", CONFIG_NAME).read_text(encoding="utf-8")


def new_project(directory: Path, *, force: bool = False) -> NewProject:
    """Write ``directory/vintage.yaml`` and add the state directory to ``directory/.gitignore``.

    Raises:
        ConfigError: vintage.yaml exists there (``force`` replaces it), or ``directory`` is a file.
        VintageError: the directory cannot be written.
    """
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{directory} is a file, not a directory", hint="name a new or existing directory")
    config = directory / CONFIG_NAME
    if config.exists() and not force:
        raise ConfigError(
            f"{config} already exists; nothing was changed",
            hint="edit it, or replace it with the template: vintage init --force",
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
        config.write_text(template(), encoding="utf-8")
        added = _ignore(directory / ".gitignore")
    except OSError as exc:
        raise VintageError(
            f"cannot write the project in {directory}: {exc.strerror or exc}",
            hint="check that this user may write there",
        ) from exc
    return NewProject(directory, config, added)


def _ignore(path: Path) -> tuple[str, ...]:
    """Append the lines of :data:`IGNORED` that ``path`` lacks (its own lines stay); returns them."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    present = {line.strip() for line in text.splitlines()}
    missing = tuple(line for line in IGNORED if line not in present)
    if missing:
        sep = "" if not text else "\n" if text.endswith("\n") else "\n\n"
        block = "# vintage: the state directory (tracking store, models, secrets, logs)\n"
        with path.open("a", encoding="utf-8") as fh:
            fh.write(sep + block + "".join(f"{line}\n" for line in missing))
    return missing
