"""``--model`` for the commands that load a model (``vintage serve``, ``vintage score``)."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from vintage.cli import state

MODEL_HELP: Final = (
    "models:/NAME@ALIAS (or NAME@ALIAS), models:/NAME/VERSION, runs:/RUN_ID/model, a version number or "
    "an alias of model_name, or a local MLflow model directory."
)


def local_model_dir(model: str, reader: str = "cli:serve") -> Path:
    """A local model directory for ``model``, materialised from the registry into the state directory.

    ``model`` is a local model directory (returned as is), a version number (``3`` ->
    ``models:/<model_name>/3``), an alias (``candidate`` -> ``models:/<model_name>@candidate``), a model
    and alias (``winequality@production`` -> ``models:/winequality@production``), or a
    ``models:/``/``runs:/`` URI. A registry model is downloaded once per version into
    ``<state_dir>/models`` (see :func:`vintage.model.materialize.materialize`).

    Args:
        model: What the user passed as ``--model``.
        reader: Name recorded in the secrets audit trail if the tracking store needs a token.

    Raises:
        ServingError: unknown model, alias, version or run, or a model that cannot be loaded.
        TrackingError: the tracking server does not answer.
        ConfigError: vintage.yaml is invalid.
    """
    if Path(model).is_dir():
        return Path(model)
    project = state.project()
    path = project.model_dir(model, reader=reader)
    state.err().print(f"model {project.model_uri(model)} materialised in {path}")
    return path
