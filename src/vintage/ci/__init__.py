"""CI files generated from vintage.yaml's pipeline (``vintage ci render``): GitHub Actions and Azure
Pipelines, one job per stage, each running ``vintage stage NAME --run-id <CI run id>``.

The renderers are listed in one table of dotted paths and imported only when chosen.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from vintage.errors import ConfigError

if TYPE_CHECKING:
    from vintage.ci.plan import IdStyle
    from vintage.config.models import Spec

# kind -> (module, the job id rules it follows)
RENDERERS: dict[str, tuple[str, IdStyle]] = {
    "github-actions": ("vintage.ci.github", "github"),
    "azure-pipelines": ("vintage.ci.azure", "azure"),
}


def _entry(kind: str) -> tuple[str, IdStyle]:
    try:
        return RENDERERS[kind]
    except KeyError:
        raise ConfigError(f"unknown CI {kind!r}", hint=f"choose one of: {', '.join(RENDERERS)}") from None


def render(spec: Spec, kind: str, *, config_path: Path, cwd: Path, allow_local_state: bool = False) -> str:
    """The CI file of ``kind`` for ``spec``.

    Args:
        spec: the loaded vintage.yaml.
        kind: a key of :data:`RENDERERS`.
        config_path: the config file the jobs read (inside ``cwd``).
        cwd: the repository root, where the jobs start.
        allow_local_state: render although the state is not shared (the jobs must share one machine).

    Raises:
        ConfigError: unknown ``kind``, state not shared, or a pipeline the CI cannot express.
    """
    from vintage.ci.plan import plan

    module, style = _entry(kind)
    jobs = plan(spec, style, config_path=config_path, cwd=cwd, allow_local_state=allow_local_state)
    text: str = importlib.import_module(module).render(jobs)
    return text
