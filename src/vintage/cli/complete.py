"""Shell completion of environment and stage names (``vintage start <TAB>``, ``vintage stage <TAB>``).

Read straight from vintage.yaml with a YAML parser, without validating the config (which imports the
estimator classes: a second or more): a TAB answers at once. A config that cannot be read completes the
built-in names.
"""

from __future__ import annotations

from typing import Any

import typer

from vintage.cli.state import STATE

_DEFAULT_STAGES = ("build", "staging", "production")


def _raw(ctx: typer.Context) -> dict[str, Any]:
    """vintage.yaml as plain data: ``-c FILE`` if the command line has it (the top-level callback does not
    run while completing), else ``$VINTAGE_CONFIG`` or ./vintage.yaml."""
    import yaml

    from vintage.config.load import resolve_config_path

    root = ctx.find_root()
    try:
        path = resolve_config_path(root.params.get("config") or STATE.config)
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def environments(ctx: typer.Context, incomplete: str) -> list[str]:
    """The built-in environments and those vintage.yaml adds, starting with ``incomplete``."""
    from vintage.config.environments import DEFAULT_ENVIRONMENTS

    named = _raw(ctx).get("environments")
    names = list(DEFAULT_ENVIRONMENTS)
    if isinstance(named, dict):
        names += [str(n) for n in named if str(n) not in names]
    return [n for n in names if n.startswith(incomplete)]


def stages(ctx: typer.Context, incomplete: str) -> list[str]:
    """The stages of vintage.yaml's pipeline (else the default ones), starting with ``incomplete``."""
    pipeline = _raw(ctx).get("pipeline")
    listed = pipeline.get("stages") if isinstance(pipeline, dict) else None
    names = (
        [str(s["name"]) for s in listed if isinstance(s, dict) and "name" in s]
        if isinstance(listed, list)
        else list(_DEFAULT_STAGES)
    )
    return [n for n in names if n.startswith(incomplete)]
