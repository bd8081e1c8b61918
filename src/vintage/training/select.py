"""Choose the best run under the threshold."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from vintage.errors import SelectionError

if TYPE_CHECKING:
    from vintage.config import SelectionSpec
    from vintage.training.runner import PointRun


def select_best(runs: list[PointRun], selection: SelectionSpec) -> PointRun:
    """The finished run with the best selection metric among those meeting the threshold.

    Ties go to the earlier grid point, so the choice is deterministic.

    Raises:
        SelectionError: no finished run meets the threshold (the message shows the best value found).
    """
    key = selection.selection_key
    scored = sorted(
        (r for r in runs if r.status == "FINISHED" and math.isfinite(r.metrics.get(key, math.nan))),
        key=lambda r: r.index,
    )
    if not scored:
        raise SelectionError(f"no finished run has the selection metric {key!r}; nothing was registered")
    best = scored[0]
    for run in scored[1:]:
        if selection.better(run.metrics[key], best.metrics[key]):
            best = run
    value = best.metrics[key]
    if not selection.meets_threshold(value):
        op = "<" if selection.direction == "minimize" else ">"
        raise SelectionError(
            f"no run meets the threshold {key} {op} {selection.threshold}: "
            f"the best {key} is {value:.4f} ({best.name}); nothing was registered",
            hint="widen the grid, change the estimator, or relax selection.threshold in vintage.yaml",
        )
    return best
