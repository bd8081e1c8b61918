"""Options shared by every command (set by the top-level callback)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, cast

if TYPE_CHECKING:
    from rich.console import Console

    from vintage.api import Project
    from vintage.config import ProjectSettings, Spec
    from vintage.secrets.access import SecretReader


@dataclass
class CliState:
    """Global options."""

    config: Path | None = None
    verbose: bool = False


STATE = CliState()


def load() -> Spec:
    """Parse the config file the user pointed at (:func:`vintage.api.load_config`)."""
    return project().spec


def project() -> Project:
    """The project of the config file the user pointed at (:class:`vintage.api.Project`)."""
    from vintage.api import Project

    return Project(STATE.config)


def settings() -> ProjectSettings:
    """Only the project settings (state_dir, secrets): fast, and works without a valid workload."""
    from vintage.config import load_settings
    from vintage.shared_state import attach

    found = load_settings(STATE.config)
    attach(found)
    return found


def out() -> Console:
    """Console for results (stdout)."""
    import sys

    from rich.console import Console

    from vintage.redact import RedactingStream

    # Piped output (CI logs, `| tee`) is not limited to 80 columns: tables stay readable.
    width = None if sys.stdout.isatty() else 160
    return Console(file=cast("IO[str]", RedactingStream(sys.stdout)), highlight=False, width=width)


def err() -> Console:
    """Console for progress and errors (stderr)."""
    import sys

    from rich.console import Console

    from vintage.redact import RedactingStream

    # soft_wrap: an error headline stays one line, whatever the terminal width (grep-able in CI logs).
    return Console(file=cast("IO[str]", RedactingStream(sys.stderr)), highlight=False, soft_wrap=True)


def print_json(data: object) -> None:
    """Machine-readable output: plain JSON on stdout, no colour."""
    import json
    import sys

    from vintage.redact import redact

    sys.stdout.write(redact(json.dumps(data, indent=2, default=str)) + "\n")


def secret_reader(
    reader: str, environment: str | None = None, *, operator: bool = False, spec: Spec | None = None
) -> SecretReader:
    """A secret reader over the configured providers, recorded in the audit trail as ``reader``."""
    from vintage.secrets.access import SecretReader

    spec = spec or load()
    return SecretReader.from_spec(
        spec.secrets, spec.state_dir.resolve(), reader=reader, environment=environment, operator=operator
    )
