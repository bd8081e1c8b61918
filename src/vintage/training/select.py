"""Choose the best run, then gate it on its holdout figure.

The run is chosen by :attr:`SelectionSpec.selection_key` (``cv_rmse`` with ``selection.cv``: the K-fold
figure within the training part; else the holdout ``rmse``). The threshold always applies to the chosen
run's holdout ``metric``: with ``cv`` set, the figure that gates (and is reported) is one the choice did
not look at. Without ``cv`` both are the holdout figure, as in the original pipeline.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from vintage.errors import SelectionError

if TYPE_CHECKING:
    from vintage.config import SelectionSpec
    from vintage.training.runner import PointRun


def select_best(runs: list[PointRun], selection: SelectionSpec) -> PointRun:
    """The finished run with the best selection metric, if its holdout metric meets the threshold.

    Ties go to the earlier grid point, so the choice is deterministic. A chosen run that misses the
    threshold is not replaced by the next one: that would choose on the holdout after all.

    Raises:
        SelectionError: no finished run has the selection metric, or the chosen run's holdout metric
            misses the threshold (the message shows both figures).
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
    if selection.threshold is None:
        return best
    holdout = best.metrics.get(selection.metric, math.nan)
    if not math.isfinite(holdout) or not selection.meets_threshold(holdout):
        op = "<" if selection.direction == "minimize" else ">"
        rule = f"{selection.metric} {op} {selection.threshold}"
        if key == selection.metric:
            what = f"no run meets the threshold {rule}: the best {key} is {holdout:.4f} ({best.name})"
        else:
            what = (
                f"the chosen run misses the threshold {rule} on the holdout: {best.name} "
                f"(best {key} {best.metrics[key]:.4f}) has holdout {selection.metric} {holdout:.4f}"
            )
        raise SelectionError(
            f"{what}; nothing was registered",
            hint="widen the grid, change the estimator, or relax selection.threshold in vintage.yaml",
        )
    return best
