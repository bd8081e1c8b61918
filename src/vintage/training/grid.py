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
    """

    index: int
    label: str
    class_path: str
    params: dict[str, Any] = field(default_factory=dict)
    grid_params: dict[str, Any] = field(default_factory=dict)

    @property
    def run_name(self) -> str:
        """MLflow run name, e.g. ``ElasticNet alpha=0.5 l1_ratio=0.5``."""
        args = " ".join(f"{k}={v}" for k, v in self.grid_params.items())
        return f"{self.label} {args}".strip()


def expand_grid(spec: Spec) -> list[GridPoint]:
    """All grid points of all estimators, in spec order.

    An estimator that takes ``random_state`` and was not given one gets the split seed, so the same
    seed always gives the same metrics.

    Raises:
        ConfigError: the grid has more points than ``training.max_grid_points`` (checked from the list
            lengths before anything is expanded; :func:`~vintage.config.load_spec` already refuses such a
            file, this guards a spec built another way).
    """
    from vintage.config.models import estimator_param_names, import_estimator

    problem = spec.grid_cap_problem()
    if problem:
        raise ConfigError(problem, hint="the cap is training.max_grid_points in vintage.yaml")
    points: list[GridPoint] = []
    for est in spec.estimators:
        seeded = "random_state" in estimator_param_names(import_estimator(est.class_path))
        fixed = {"random_state": spec.data.split.seed} if seeded else {}
        for grid_params in est.points():
            params = {**fixed, **est.params, **grid_params}
            points.append(GridPoint(len(points), est.label, est.class_path, params, grid_params))
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
    blob = json.dumps(
        {
            "class": point.class_path,
            "params": point.params,
            "data": data_digest,
            "split": [test_size, seed, split_mode] if split_mode else [test_size, seed],
            "lib": library_version,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]
