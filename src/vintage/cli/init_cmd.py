"""``vintage init [DIR]``: start a project."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from vintage.cli import state


def init(
    directory: Annotated[
        Path, typer.Argument(help="Project directory (created if missing).", file_okay=False)
    ] = Path(),
    force: Annotated[bool, typer.Option("--force", help="Replace an existing vintage.yaml.")] = False,
) -> None:
    """Start a project: a commented vintage.yaml (the wine-quality workload, environments included) and
    a .gitignore for the state directory; then print the next steps.

    Exit codes: 0 created; 1 the directory cannot be written; 2 vintage.yaml exists (see --force).
    """
    from vintage.config.init import new_project

    made = new_project(directory, force=force)
    err = state.err()
    ignored = f" and .gitignore ({', '.join(made.ignore_added)})" if made.ignore_added else ""
    err.print(f"created {made.config}{ignored}", markup=False, highlight=False)
    steps = [] if directory.resolve() == Path.cwd().resolve() else [(f"cd {shlex.quote(str(directory))}", "")]
    steps += [
        ("vintage config validate", "check the config"),
        ("vintage train", "train the grid, register the best model"),
        ("vintage secrets put --scope production/serving --key primary --generate", "production's API key"),
        ("vintage run", "the pipeline: build, staging, your approval, production"),
        ("vintage status", "what each environment serves"),
    ]
    width = max(len(cmd) for cmd, _ in steps if len(cmd) <= 32)
    err.print("next:", markup=False)
    for cmd, what in steps:
        line = f"  {cmd.ljust(width)}  # {what}" if what else f"  {cmd}"
        err.print(line, markup=False, highlight=False)
