"""Read grid runs back from the tracking store."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vintage.training.runner import PointRun
from vintage.training.track import TAG_ERROR, TAG_KEY, TAG_MODEL_URI, TAG_ROLE

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
    for run in found:
        params = dict(run.data.params)
        estimator = params.pop("estimator", run.data.tags.get("vintage.estimator", "?"))
        end = run.info.end_time or run.info.start_time
        out.append(
            PointRun(
                index=0,
                run_id=run.info.run_id,
                name=run.info.run_name or "",
                estimator=estimator,
                params=params,
                status=run.info.status,
                metrics=dict(run.data.metrics),
                error=run.data.tags.get(TAG_ERROR),
                seconds=max(0.0, (end - run.info.start_time) / 1000) if end else 0.0,
                model_uri=run.data.tags.get(TAG_MODEL_URI),
                training_key=run.data.tags.get(TAG_KEY),
            )
        )
    return out
