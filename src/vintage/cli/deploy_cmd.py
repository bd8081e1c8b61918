"""``vintage deploy render`` and ``vintage deploy keys``: an environment's manifests for GitOps, and a key
rotation that restarts its pods (docs/kubernetes.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vintage.cli import complete, state

app = typer.Typer(
    help="Manifests of an environment (GitOps) and key rotation (kubernetes target).", no_args_is_help=True
)


@app.command("render")
def render(
    environment: Annotated[
        str,
        typer.Argument(
            help="Environment to render (its target: kubernetes).", autocompletion=complete.environments
        ),
    ],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write one YAML file per object into this directory."),
    ] = None,
    check: Annotated[
        bool,
        typer.Option(
            "--check", help="Use the API versions the cluster offers and run a server-side dry run."
        ),
    ] = False,
) -> None:
    """Write the Kubernetes manifests of what ENVIRONMENT serves now: Secret (no values: fill it from your
    secret manager), Service, Deployment, PodDisruptionBudget, HorizontalPodAutoscaler.

    Without --output, one YAML stream on stdout.
    """
    import yaml

    from vintage.pipeline.ops import render as render_env

    objects = render_env(state.load(), environment, check=check)
    if output is None:
        typer.echo(yaml.safe_dump_all(objects, sort_keys=False), nl=False)
    else:
        output.mkdir(parents=True, exist_ok=True)
        for obj in objects:
            path = output / f"{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"
            path.write_text(yaml.safe_dump(obj, sort_keys=False), encoding="utf-8")
            state.err().print(f"wrote {path}", markup=False, highlight=False)
    if check:
        state.err().print(f"server-side dry run: {len(objects)} objects accepted")


@app.command("keys")
def keys(
    environment: Annotated[
        str,
        typer.Argument(
            help="Environment whose pods take the scope's keys.", autocompletion=complete.environments
        ),
    ],
) -> None:
    """Sync ENVIRONMENT's API keys from its secret scope into the cluster and restart its pods (rolling,
    no capacity lost); returns once no pod holds the old keys, so a removed key is refused from then on."""
    from vintage.pipeline.ops import rotate_keys

    current = rotate_keys(state.load(), environment)
    state.err().print(
        f"{environment}: keys synced; {current.ready_replicas}/{current.replicas} pods ready "
        f"(revision {current.revision})"
    )
