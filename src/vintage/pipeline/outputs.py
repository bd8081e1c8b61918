"""What each pipeline step returns: one typed, validated object per step, stored as the same JSON as before.

A step returns a :class:`StepOutput`; the runner stores :meth:`StepOutput.to_json` (plus ``seconds``) in
``.vintage/pipeline.db``; a later step reads it back with :meth:`StepContext.result` (validated) or as the
raw mapping with :meth:`StepContext.output`. The JSON keys, their order and which keys are left out when
empty are the ones the step dictionaries had, so run state, release records and ``vintage runs show
--json`` read the same (``tests/unit/pipeline/test_outputs.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from vintage.deploy.base import Deployment
    from vintage.registry import RegisteredVersion

RUNNER_KEYS = frozenset({"seconds"})
"""Keys the runner adds to every stored output (not part of the step's own output)."""


class StepOutput(BaseModel):
    """The output of one step. ``STEP`` is the step's name; fields listed in ``OMIT_NONE`` are left out
    of the JSON when they are ``None`` (they were optional keys of the step's dictionary)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    STEP: ClassVar[str] = ""
    OMIT_NONE: ClassVar[frozenset[str]] = frozenset()

    def to_json(self) -> dict[str, Any]:
        """The stored JSON object (plain Python values, keys in field order)."""
        data = self.model_dump()
        return {k: v for k, v in data.items() if not (v is None and k in self.OMIT_NONE)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        """Validate a stored output (the runner's ``seconds`` is ignored).

        Raises:
            pydantic.ValidationError: the stored object does not have this step's shape.
        """
        return cls.model_validate({k: v for k, v in data.items() if k not in RUNNER_KEYS})


class ValidateOutput(StepOutput):
    """``validate``: the data set read. A stage run as a Databricks job records only the digest."""

    STEP = "validate"
    OMIT_NONE = frozenset({"source", "rows", "databricks"})

    source: str | None = None
    rows: int | None = None
    digest: str
    databricks: dict[str, Any] | None = None


class Selected(BaseModel):
    """The run the train step chose (what registration needs: a :class:`~vintage.registry.RunToRegister`)."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    name: str
    estimator: str
    metrics: dict[str, float]
    model_uri: str | None
    training_key: str | None


class TrainOutput(StepOutput):
    """``train``: the grid trained, the run chosen (nothing registered yet)."""

    STEP = "train"
    OMIT_NONE = frozenset({"databricks", "refit"})

    parent_run_id: str
    data_digest: str
    selection_key: str
    runs: int
    failed: int
    selected: Selected
    databricks: dict[str, Any] | None = None
    refit: Selected | None = None
    """The chosen point fitted again on every row (``training.refit``; no metrics): the one registered."""

    @property
    def to_register(self) -> Selected:
        """The run whose model registration takes: the refit when there is one, else the chosen run."""
        return self.refit or self.selected


class RegisterOutput(StepOutput):
    """``register``: the version holding the chosen model. ``run_id`` is the run that produced it; when the
    chosen run only reproduced an existing version, it is ``reproduced_by_run_id``."""

    STEP = "register"
    OMIT_NONE = frozenset({"reproduced_by_run_id", "databricks"})

    model_name: str
    version: int
    run_id: str
    reused: bool
    reproduced_by_run_id: str | None = None
    databricks: dict[str, Any] | None = None

    @classmethod
    def of(cls, version: RegisteredVersion, chosen_run_id: str) -> RegisterOutput:
        """The output for ``version``, registered (or found again) for the chosen run."""
        source = version.source_run_id or chosen_run_id
        return cls(
            model_name=version.name,
            version=version.version,
            run_id=source,
            reused=version.reused,
            reproduced_by_run_id=chosen_run_id if source != chosen_run_id else None,
        )


class ReleaseOutput(StepOutput):
    """``release``: where the release record was written (relative to the state directory)."""

    STEP = "release"
    OMIT_NONE = frozenset({"report"})

    path: str
    report: str | None = None
    """The evaluation report (relative to the state directory), when one was made."""


class DeployOutput(StepOutput):
    """``deploy``: what serves now and what served before (a :class:`Deployment` as its fields)."""

    STEP = "deploy"

    action: str
    current: dict[str, Any]
    previous: dict[str, Any] | None

    @classmethod
    def of(cls, action: str, current: Deployment, previous: Deployment | None) -> DeployOutput:
        return cls(action=action, current=asdict(current), previous=asdict(previous) if previous else None)

    def previous_deployment(self) -> Deployment | None:
        """What served before this deploy (``None``: nothing did)."""
        from vintage.deploy.base import Deployment

        return Deployment(**self.previous) if self.previous else None


class SmokeTestOutput(StepOutput):
    """``smoke_test``: rows sent and the largest difference to the registry model's own predictions."""

    STEP = "smoke_test"

    rows: int
    max_diff: float
    url: str


class ChampionOutput(StepOutput):
    """``champion_gate``: both scores on the same holdout and the verdict."""

    STEP = "champion_gate"
    OMIT_NONE = frozenset({"force_reason", "verdict"})

    candidate: int
    candidate_score: float
    metric: str
    champion: int | None
    champion_score: float | None
    tolerance: float
    forced: bool
    force_reason: str | None = None
    verdict: str | None = None


class ApprovalOutput(StepOutput):
    """``approval``: who approved (``auto``: ``--auto-approve``; ``time`` and ``comment``: a person)."""

    STEP = "approval"
    OMIT_NONE = frozenset({"auto", "time", "comment"})

    decision: str
    by: str
    auto: bool | None = None
    time: str | None = None
    comment: str | None = None


class PromoteOutput(StepOutput):
    """``promote``: the alias moved, to which version, from which (``None``: it pointed nowhere)."""

    STEP = "promote"

    alias: str
    version: int
    previous: int | None


OUTPUTS: dict[str, type[StepOutput]] = {
    cls.STEP: cls
    for cls in (
        ValidateOutput,
        TrainOutput,
        RegisterOutput,
        ReleaseOutput,
        DeployOutput,
        SmokeTestOutput,
        ChampionOutput,
        ApprovalOutput,
        PromoteOutput,
    )
}
"""Step name -> its output type."""
