"""``vintage config show|validate``."""

from __future__ import annotations

from typing import Annotated

import typer

from vintage.cli import state

app = typer.Typer(help="Show or check the workload spec (vintage.yaml).", no_args_is_help=True)


@app.command("show")
def show(json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Print the resolved config: defaults filled in, environment overrides applied."""
    import yaml

    from vintage.tracking import resolve_target

    spec = state.load()
    data = spec.model_dump(mode="json", by_alias=True)
    data["tracking_uri"] = resolve_target(
        spec, resolve=lambda text: text
    ).display  # references shown, not read
    data["grid_size"] = spec.grid_size()
    if json_out:
        state.print_json(data)
        return
    state.out().print(yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip(), markup=False)


@app.command("validate")
def validate() -> None:
    """Check the config (schema, estimator import paths, parameter names); exit 2 when it is wrong."""
    from vintage.config import resolve_config_path

    spec = state.load()
    names = ", ".join(e.label for e in spec.estimators)
    state.out().print(
        f"{resolve_config_path(state.STATE.config)}: OK ({spec.grid_size()} grid points; estimators: {names})"
    )
