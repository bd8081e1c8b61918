"""The plug-in points of vintage: one lazily resolved table per pluggable part.

A table maps a name (what vintage.yaml or a command-line option says) to ``"module:attribute"``. The
module is imported on first use only, so ``vintage --help`` and config validation import none of the
implementations (no MLflow, no Spark, no SDK). Config checks names against :meth:`Table.names`;
the layer that uses a part calls :meth:`Table.load` and then the implementation's ``from_spec``.

Adding an implementation is one row here and one module (docs/architecture.md, "Adding a deploy target").
Tests swap or add rows with :meth:`Table.override` instead of patching modules.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator, Mapping
from typing import Any

from vintage.errors import ConfigError
from vintage.extras import require

__all__ = [
    "COMPUTE_ENGINES",
    "DEPLOY_TARGETS",
    "SCORING_ENGINES",
    "SECRET_PROVIDERS",
    "STAGE_BACKENDS",
    "TABLES",
    "Table",
]


class Table:
    """Name -> implementation, resolved lazily by :mod:`importlib`.

    Args:
        kind: What the implementations are, for messages (``deploy target``).
        key: The config key or option that names one (``environments.<env>.target``), for hints.
        rows: Name -> ``"module:attribute"``.
        extras: Name -> the extra (:data:`vintage.extras.MODULES`) its implementation needs beyond the core;
            :meth:`load` checks it is installed before importing anything.
    """

    def __init__(
        self, kind: str, key: str, rows: Mapping[str, str], extras: Mapping[str, str] | None = None
    ) -> None:
        self.kind = kind
        self.key = key
        self._rows: dict[str, str | object] = dict(rows)
        self._loaded: dict[str, object] = {}
        self.extras: dict[str, str] = dict(extras or {})

    def names(self) -> tuple[str, ...]:
        """The known names, in table order."""
        return tuple(self._rows)

    def __contains__(self, name: object) -> bool:
        return name in self._rows

    def row(self, name: str) -> str | object:
        """The row of ``name``: its ``"module:attribute"`` (or an object put there by :meth:`override`)."""
        return self._rows[self.check(name)]

    def unknown(self, name: object) -> str:
        """The one-line message for a name that is not in the table."""
        return f"unknown {self.kind} {name!r}; known: {', '.join(self._rows) or 'none'}"

    def check(self, name: str) -> str:
        """``name`` when it is in the table.

        Raises:
            ConfigError: unknown name (headline names the kind, the name and the known names).
        """
        if name not in self._rows:
            raise ConfigError(self.unknown(name), hint=f"set {self.key} to one of: {', '.join(self._rows)}")
        return name

    def load(self, name: str) -> Any:
        """The implementation of ``name``, imported now (once).

        Raises:
            ConfigError: unknown name.
            MissingExtra: the implementation needs an extra that is not installed.
        """
        row = self.row(name)
        if name in self._loaded:
            return self._loaded[name]
        if not isinstance(row, str):
            return row
        if name in self.extras:
            sep = " " if "--" in self.key else ": "  # "vintage score --engine local", "compute.engine: spark"
            require(self.extras[name], f"{self.key}{sep}{name}")
        module, _, attribute = row.partition(":")
        found = getattr(importlib.import_module(module), attribute)
        self._loaded[name] = found
        return found

    @contextlib.contextmanager
    def override(self, name: str, implementation: str | object) -> Iterator[None]:
        """Within the block, ``name`` is ``implementation`` (a row string or the object itself); the
        table is restored afterwards. For tests (a fake deploy target) and embedding applications."""
        had = name in self._rows
        old_row, old_loaded = self._rows.get(name), self._loaded.pop(name, None)
        self._rows[name] = implementation
        try:
            yield
        finally:
            self._loaded.pop(name, None)
            if had:
                self._rows[name] = old_row
                if old_loaded is not None:
                    self._loaded[name] = old_loaded
            else:
                del self._rows[name]


DEPLOY_TARGETS = Table(
    "deploy target",
    "environments.<env>.target",
    {
        "local": "vintage.deploy.local:LocalTarget",
        "container": "vintage.deploy.container:ContainerTarget",
        "kubernetes": "vintage.deploy.k8s.target:KubernetesTarget",
    },
    extras={"container": "containers", "kubernetes": "kubernetes"},
)
"""Where an environment serves: :class:`vintage.deploy.base.DeployTarget` classes with
``from_spec(spec, environment)``."""

STAGE_BACKENDS = Table(
    "stage backend",
    "compute.engine",
    {
        "local": "vintage.pipeline.backends:LocalBackend",
        "databricks": "vintage.pipeline.remote:DatabricksBackend",
    },
    extras={"databricks": "databricks"},
)
"""Where a pipeline stage runs: :class:`vintage.pipeline.backends.StageBackend` classes with
``from_spec(spec, stage)``. A stage that trains runs on the backend named like ``compute.engine`` when
there is one, every other stage on ``local``."""

SECRET_PROVIDERS = Table(
    "secret provider",
    "secrets.providers",
    {
        "env": "vintage.secrets.env:EnvProvider",
        "local": "vintage.secrets.local:LocalStore",
        "databricks": "vintage.secrets.databricks:DatabricksProvider",
    },
    extras={"databricks": "databricks"},
)
"""Where ``${secret:...}`` references are looked up: :class:`vintage.secrets.base.Provider` classes with
``from_spec(spec, state_dir)``."""

SCORING_ENGINES = Table(
    "scoring engine",
    "vintage score --engine",
    {
        "local": "vintage.scoring.local:score_file",
        "spark": "vintage.scoring.spark:score_file",
    },
    extras={"local": "scoring", "spark": "spark"},
)
"""How ``vintage score`` runs: ``score_file(job, progress)`` functions (:data:`vintage.scoring.Engine`)."""

COMPUTE_ENGINES = Table(
    "compute engine",
    "compute.engine",
    {
        "local": "vintage.training.executor:LocalExecutor",
        "spark": "vintage.training.spark:SparkExecutor",
        "databricks": "vintage.training.executor:WholeStages",
    },
    extras={"spark": "spark"},
)
"""Where the grid trains (``compute.engine``): :class:`vintage.training.runner.GridExecutor` classes with
``from_spec(spec, points, init_args, n_jobs=..., protect=...)``. ``databricks`` trains no grid in this
process: its stage runs on the ``databricks`` stage backend (inside the job, on the cluster's Spark)."""

TABLES: dict[str, Table] = {
    "deploy_targets": DEPLOY_TARGETS,
    "stage_backends": STAGE_BACKENDS,
    "secret_providers": SECRET_PROVIDERS,
    "scoring_engines": SCORING_ENGINES,
    "compute_engines": COMPUTE_ENGINES,
}
