"""Expand the estimators of a spec into grid points."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vintage.errors import ConfigError

if TYPE_CHECKING:
    from vintage.config import Spec


@dataclass(frozen=True)
class GridPoint:
    """One grid point: an estimator class and its constructor arguments.

    Attributes:
        index: position in the expanded grid (stable; breaks ties in selection).
        label: estimator label (``name`` or class name).
        class_path: import path of the estimator class.
        params: every constructor argument set by the spec (fixed ``params`` overlaid by the point).
        grid_params: the arguments that vary in this grid (shown in run names and tables).
        structure: for a composite estimator (a Pipeline, Voting, ...), its classes and slots
            (:meth:`vintage.config.estimators.EstimatorNode.structure`); ``params`` are then keyed
            the scikit-learn way (``elasticnet__alpha``). ``None`` for one plain class.
    """

    index: int
    label: str
    class_path: str
    params: dict[str, Any] = field(default_factory=dict)
    grid_params: dict[str, Any] = field(default_factory=dict)
    structure: dict[str, Any] | None = None

    @property
    def run_name(self) -> str:
        """MLflow run name, e.g. ``ElasticNet alpha=0.5 l1_ratio=0.5``."""
        args = " ".join(f"{k}={v}" for k, v in self.grid_params.items())
        return f"{self.label} {args}".strip()

    @property
    def estimator_text(self) -> str:
        """The estimator as logged in the run's ``estimator`` parameter: the class path, or for a
        composite its structure in one line (``Pipeline(StandardScaler, ElasticNet)``)."""
        from vintage.config.estimators import describe

        return describe(self.structure) if self.structure is not None else self.class_path

    @property
    def class_paths(self) -> list[str]:
        """Every class the point's estimator is built from (the class, or each class of a composite's
        structure, in order, once): what a saved model's requirements and a worker's imports cover."""
        if self.structure is None:
            return [self.class_path]
        found: list[str] = []

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                if isinstance(node.get("class"), str) and node["class"] not in found:
                    found.append(node["class"])
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)

        walk(self.structure)
        return found

    def build(self) -> Any:
        """The unfitted estimator of this point (its class, or its composite structure, with ``params``).

        Raises:
            ValueError: the class cannot be imported (or a parameter names no step).
            TypeError: the constructor refuses a parameter.
        """
        from vintage.config.estimators import build_estimator, import_estimator

        if self.structure is None:
            return import_estimator(self.class_path)(**self.params)
        return build_estimator(self.structure, self.params)


def expand_grid(spec: Spec) -> list[GridPoint]:
    """All grid points of all estimators, in spec order.

    An estimator that takes ``random_state`` and was not given one gets the split seed, so the same
    seed always gives the same metrics (in a composite: every nested estimator that takes one).

    Raises:
        ConfigError: the grid has more points than ``training.max_grid_points`` (checked from the list
            lengths before anything is expanded; :func:`~vintage.config.load_spec` already refuses such a
            file, this guards a spec built another way).
    """
    problem = spec.grid_cap_problem()
    if problem:
        raise ConfigError(problem, hint="the cap is training.max_grid_points in vintage.yaml")
    points: list[GridPoint] = []
    for est in spec.estimators:
        seeded = {k: spec.data.split.seed for k in sorted(est.random_state_keys())}
        structure = est.structure() if est.is_composite else None
        for grid_params in est.points():
            params = {**seeded, **est.flat_params(), **grid_params}
            points.append(GridPoint(len(points), est.label, est.class_path, params, grid_params, structure))
    return points


def training_key(
    point: GridPoint,
    data_digest: str,
    test_size: float,
    seed: int,
    library_version: str,
    *,
    split_mode: str = "",
) -> str:
    """Identity of a trained model: same key -> same estimator, data, split and library -> same model.

    Registration uses it so re-running an unchanged workload adds runs but no new model version.
    ``split_mode`` names another way of splitting than whole rows (``"grouped"``: duplicate groups kept
    together; ``"refit"``: fitted on every row); empty keeps the keys of the row split as they were.
    """
    identity = {
        "class": point.class_path,
        "params": point.params,
        "data": data_digest,
        "split": [test_size, seed, split_mode] if split_mode else [test_size, seed],
        "lib": library_version,
    }
    if point.structure is not None:  # only then: the keys of plain estimators stay as they were
        identity["structure"] = point.structure
    blob = json.dumps(
        identity,
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]
