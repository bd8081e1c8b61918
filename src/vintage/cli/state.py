"""Options shared by every command (set by the top-level callback)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

    from vintage.config import Spec


@dataclass
class CliState:
    """Global options."""

    config: Path | None = None
    verbose: bool = False


STATE = CliState()


def load() -> Spec:
    """Parse the config file the user pointed at."""
    from vintage.config import load_spec

    return load_spec(STATE.config)


def config_dir() -> Path:
    """Directory of the config file (its git commit is recorded on runs)."""
    from vintage.config import resolve_config_path

    return resolve_config_path(STATE.config).resolve().parent


def out() -> Console:
    """Console for results (stdout)."""
    import sys

    from rich.console import Console

    # Piped output (CI logs, `| tee`) is not limited to 80 columns: tables stay readable.
    width = None if sys.stdout.isatty() else 160
    return Console(highlight=False, width=width)


def err() -> Console:
    """Console for progress and errors (stderr)."""
    from rich.console import Console

    # soft_wrap: an error headline stays one line, whatever the terminal width (grep-able in CI logs).
    return Console(stderr=True, highlight=False, soft_wrap=True)


def print_json(data: object) -> None:
    """Machine-readable output: plain JSON on stdout, no colour."""
    import json
    import sys

    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
