"""``vintage image build`` and ``vintage image push``: the model as an OCI image (docs/image.md)."""

from __future__ import annotations

from typing import Annotated

import typer

from vintage.cli import state
from vintage.cli.models_ref import MODEL_HELP

app = typer.Typer(
    help="Build an OCI image of a model (lean server + model, no MLflow) and push it to a registry.",
    no_args_is_help=True,
)


@app.command("build")
def build(
    model: Annotated[str, typer.Option("--model", "-m", help=MODEL_HELP)] = "candidate",
    tag: Annotated[
        str | None,
        typer.Option(
            help="Image tag, or a whole reference HOST/NAME:TAG (default v<version>-<model digest>)."
        ),
    ] = None,
    builder: Annotated[
        str | None,
        typer.Option(help="buildah (no daemon; the default, or $VINTAGE_IMAGE_BUILDER) or docker."),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Build the image: Debian base (built once, cached), the server's dependencies, vintage, the model.

    The same model and the same vintage give the same image digest (buildah). The container listens on
    8080, runs as uid 10001, works with a read-only root filesystem and reads its API keys from the file
    /run/secrets/vintage/keys that the runtime mounts.
    """
    from vintage.cli.models_ref import local_model_dir
    from vintage.image.build import build_image, resolve_builder
    from vintage.image.tools import require

    require(resolve_builder(builder))  # a typo or a missing builder fails before the model is downloaded
    model_dir = local_model_dir(model, reader="cli:image")
    state.err().print(f"building the image of {model_dir.name} (the first build also builds the base)...")
    image = build_image(model_dir, tag=tag, builder=builder, verify=True)
    if json_out:
        state.print_json(image.to_json())
        return
    con = state.out()
    con.print(f"built {image.reference}")
    con.print(f"  digest        {image.digest}")
    con.print(f"  model digest  {image.model_digest}")
    con.print(f"  size          {image.size_bytes / 1e6:.0f} MB ({image.predictor} model)")
    con.print(
        "  run           podman run --read-only -p 127.0.0.1:8080:8080 "
        f"-v KEYS_FILE:{image.labels.get('vintage.keys-file', '')}:ro {image.reference}"
    )


@app.command("push")
def push(
    image: Annotated[str, typer.Argument(help="Local image reference (from vintage image build).")],
    registry: Annotated[str, typer.Option(help="Registry HOST:PORT, e.g. 127.0.0.1:5000.")],
    builder: Annotated[
        str | None,
        typer.Option(
            help="Where the image is: buildah (containers storage, the default) or docker (the daemon)."
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Push an image to a registry (TLS verified, except on 127.0.0.1/localhost)."""
    from vintage.image.push import push_image

    pushed = push_image(image, registry, builder=builder)
    if json_out:
        state.print_json(pushed.to_json())
        return
    con = state.out()
    con.print(f"pushed {pushed.reference}")
    con.print(f"  digest  {pushed.digest}")
