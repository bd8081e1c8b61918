"""What every deploy target keeps about an environment: its directory, deployment history, audit lines.

``<state_dir>/envs/<environment>/`` (mode 0700) holds ``deployments.json``, every deployment oldest first,
written atomically with mode 0600. Targets subclass :class:`EnvironmentRecords` and add their own files
next to it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from vintage import audit
from vintage.deploy.base import Deployment
from vintage.errors import DeployError, VintageError
from vintage.fsutil import write_private
from vintage.model import digest as model_digest

_FIELDS = frozenset(f.name for f in dataclasses.fields(Deployment))


class EnvironmentRecords:
    """An environment's directory, deployment history and audit lines (shared by every deploy target)."""

    def __init__(self, environment: str, state_dir: Path) -> None:
        self.environment = environment
        self.state_dir = Path(state_dir).resolve()
        self.dir = self.state_dir / "envs" / environment
        self.history_file = self.dir / "deployments.json"

    def history(self) -> list[Deployment]:
        """Every deployment of this environment, oldest first.

        Raises:
            DeployError: deployments.json is not readable.
        """
        try:
            raw = json.loads(self.history_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise DeployError(
                f"the deployment history of {self.environment} cannot be read ({exc.__class__.__name__})",
                hint=f"fix or remove {self.history_file}",
            ) from exc
        try:
            if not isinstance(raw, list):
                raise TypeError("not a list")
            return [Deployment(**{k: v for k, v in d.items() if k in _FIELDS}) for d in raw]
        except (TypeError, AttributeError) as exc:
            raise DeployError(
                f"the deployment history of {self.environment} is not a list of deployments",
                hint=f"fix or remove {self.history_file}",
            ) from exc

    def write_history(self, history: list[Deployment]) -> None:
        """Replace deployments.json (atomic: temp file + fsync + rename, mode 0600)."""
        self.history_file.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps([dataclasses.asdict(d) for d in history], indent=2) + "\n"
        write_private(self.history_file, data.encode())

    def _audit(self, action: str, outcome: str, detail: str) -> None:
        audit.record(
            self.state_dir, action, self.environment, outcome, environment=self.environment, detail=detail
        )


def verified(model_dir: Path, expected: str | None = None) -> str:
    """The digest of a materialised model directory, checked against its manifest.

    Raises:
        DeployError: no manifest, or the files changed since materialisation.
    """
    try:
        return model_digest.verify(model_dir, expected)
    except VintageError as exc:
        raise DeployError(f"cannot deploy {model_dir.name}: {exc.headline}", hint=exc.hint) from exc


def as_int(value: Any) -> int:
    """``value`` as an int, 0 when it is none (a version label read back from a server or a label)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
