"""Read grid runs back from the tracking store."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from vintage.training.runner import PointRun
from vintage.training.track import TAG_ERROR, TAG_GRID, TAG_INDEX, TAG_KEY, TAG_MODEL_URI, TAG_ROLE

if TYPE_CHECKING:
    from vintage.tracking import TrackingSession


def recent_runs(session: TrackingSession, limit: int) -> list[PointRun]:
    """The newest ``limit`` grid-point runs of the session's experiment."""
    found = session.client.search_runs(
        [session.experiment_id],
        filter_string=f"tags.`{TAG_ROLE}` = 'grid-point'",
        order_by=["attributes.start_time DESC"],
        max_results=limit,
    )
    out = []
    # Points of one training share a start time: keep them in grid order within it.
    ordered = sorted(found, key=lambda r: (-r.info.start_time, int(r.data.tags.get(TAG_INDEX, "0"))))
    for run in ordered:
        params = dict(run.data.params)
        estimator = params.pop("estimator", run.data.tags.get("vintage.estimator", "?"))
        grid = _grid_params(run.data.tags.get(TAG_GRID), params)
        metrics = dict(run.data.metrics)
        out.append(
            PointRun(
                index=int(run.data.tags.get(TAG_INDEX, "0")),
                run_id=run.info.run_id,
                name=run.info.run_name or "",
                estimator=estimator,
                params=grid,
                status=run.info.status,
                metrics={k: v for k, v in metrics.items() if k != "fit_seconds"},
                error=run.data.tags.get(TAG_ERROR),
                seconds=metrics.get("fit_seconds", 0.0),
                model_uri=run.data.tags.get(TAG_MODEL_URI),
                training_key=run.data.tags.get(TAG_KEY),
            )
        )
    return out


def _grid_params(tag: str | None, params: dict[str, Any]) -> dict[str, Any]:
    """The parameters that varied in the grid (all params for runs logged without the tag)."""
    if not tag:
        return params
    try:
        keys = json.loads(tag)
    except ValueError:
        return params
    return {k: params.get(k, v) for k, v in keys.items()}
