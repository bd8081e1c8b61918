"""Pydantic models of vintage.yaml.

Every model forbids unknown keys, so a typo is a config error naming the key path instead of a setting
silently ignored.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from vintage.config.base import Strict as _Strict
from vintage.config.base import in_table as _in
from vintage.config.environments import (
    EnvironmentSpec,
    default_environments,
    merge_environments,
)
from vintage.config.estimators import (
    DEFAULT_ESTIMATOR,
    EstimatorSpec,
)
from vintage.config.estimators import MLLIB_RESERVED as MLLIB_RESERVED  # re-exported: their old home
from vintage.config.estimators import estimator_param_names as estimator_param_names
from vintage.config.estimators import import_estimator as import_estimator
from vintage.config.estimators import is_mllib as is_mllib
from vintage.plugins import COMPUTE_ENGINES, SECRET_PROVIDERS

WINE_FEATURES: tuple[str, ...] = (
    "fixed acidity",
    "volatile acidity",
    "citric acid",
    "residual sugar",
    "chlorides",
    "free sulfur dioxide",
    "total sulfur dioxide",
    "density",
    "pH",
    "sulphates",
    "alcohol",
)

Metric = Literal["rmse", "mae", "r2", "acc_0.5", "acc_1.0", "accuracy", "balanced_accuracy"]
CLASSIFIER_METRICS: frozenset[str] = frozenset({"accuracy", "balanced_accuracy"})  # the others: regressors
Direction = Literal["minimize", "maximize"]
DEFAULT_DIRECTION: dict[str, Direction] = {
    "rmse": "minimize",
    "mae": "minimize",
    "r2": "maximize",
    "acc_0.5": "maximize",  # share of rows predicted within 0.5 of the truth (vintage.evaluation.metrics)
    "acc_1.0": "maximize",
    "accuracy": "maximize",  # classifiers (detected with scikit-learn's is_classifier)
    "balanced_accuracy": "maximize",
}


class SplitSpec(_Strict):
    """Holdout split. The default (0.25, seed 40) is the original MLflow wine tutorial's convention:
    ``np.random.seed(40); train_test_split(data)``.

    With ``group_duplicates`` (the default), rows with identical features and target form one group
    that never straddles the train/holdout split nor a cross-validation fold
    (:func:`vintage.data.load.split_rows`);
    ``false`` is the tutorial's split of whole rows, the same rows for the same seed as before."""

    test_size: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.25
    seed: int = 40
    group_duplicates: bool = True


class DataSpec(_Strict):
    """Where the data comes from and which columns matter."""

    dataset: Literal["red", "white"] | None = None
    path: Path | None = None
    target: str = "quality"
    features: Annotated[tuple[str, ...], Field(min_length=1)] = WINE_FEATURES
    split: SplitSpec = SplitSpec()

    @model_validator(mode="after")
    def _one_source(self) -> DataSpec:
        if self.dataset is not None and self.path is not None:
            raise ValueError("give either `dataset` (packaged wine-quality set) or `path`, not both")
        if self.dataset is None and self.path is None:
            object.__setattr__(self, "dataset", "red")
        if self.target in self.features:
            raise ValueError(f"the target column {self.target!r} is also listed in `features`")
        if len(set(self.features)) != len(self.features):
            dupes = sorted({f for f in self.features if self.features.count(f) > 1})
            raise ValueError(f"duplicate feature columns: {dupes}")
        return self

    @property
    def source_label(self) -> str:
        """Human-readable name of the data source (never a machine path)."""
        return f"wine-quality/{self.dataset}" if self.dataset else self.path.name if self.path else "?"


class SelectionSpec(_Strict):
    """How the best run is chosen and gated. With ``cv`` set, selection uses the K-fold cross-validated
    metric on the training part (``cv_<metric>``); ``threshold`` always applies to the chosen run's
    holdout ``metric``, so with ``cv`` the figure that gates was not used to choose."""

    metric: Metric = "rmse"
    direction: Direction | None = None
    threshold: float | None = None
    cv: Annotated[int, Field(ge=2, le=50)] | None = None

    @model_validator(mode="after")
    def _default_direction(self) -> SelectionSpec:
        if self.direction is None:
            object.__setattr__(self, "direction", DEFAULT_DIRECTION[self.metric])
        return self

    @property
    def selection_key(self) -> str:
        """Name of the MLflow metric selection compares (``cv_rmse`` when cv is on)."""
        return f"cv_{self.metric}" if self.cv else self.metric

    def better(self, a: float, b: float) -> bool:
        """True when value ``a`` is strictly better than ``b``."""
        return a < b if self.direction == "minimize" else a > b

    def meets_threshold(self, value: float) -> bool:
        """True when ``value`` (the chosen run's holdout ``metric``) passes the threshold (strictly, like
        the original ``rmse < 0.8``)."""
        return self.threshold is None or self.better(value, self.threshold)


DEFAULT_MAX_GRID_POINTS = 10_000


class TrainingSpec(_Strict):
    """How the grid runs on this machine."""

    n_jobs: Annotated[int, Field(ge=1)] | None = None
    # A larger grid is a config error when the file is read, before any point is expanded.
    max_grid_points: Annotated[int, Field(ge=1)] = DEFAULT_MAX_GRID_POINTS
    model_format: Literal["cloudpickle", "pickle", "skops"] = "cloudpickle"
    # Fit the chosen point again on every row (train + holdout) and register that model (its own run,
    # tagged vintage.refit, with no holdout metrics: it has seen the holdout).
    refit: bool = False


# ${secret:scope/key} or ${secret:environment/scope/key}; the names are checked again when resolved.
SECRET_REF = re.compile(
    r"\$\{secret:(?:[A-Za-z0-9][A-Za-z0-9_-]{0,63}/){1,2}[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\}"
)


# "__" (or "--", "..", "_-") would read as a boundary between parts in the environment variable a name maps
# to, so one name could spell another's variable; the secrets layer refuses it, this catches it on load.
_DOUBLED_SEPARATOR = re.compile(r"[_.-]{2}|[_.-](?=/|\})")


STATE_URL_SCHEMES = ("postgresql", "postgresql+psycopg2")


def check_state_url(value: str | None) -> str | None:
    """``state_url``: a PostgreSQL URL whose password, if any, is a secret reference (never a literal).

    Raises:
        ValueError: another scheme, no host or database, or a literal password.
    """
    if value is None or not value.strip():
        return None
    value = value.strip()
    check_secret_refs(value, "state_url")
    from urllib.parse import urlsplit

    shown = SECRET_REF.sub("REF", value)
    parts = urlsplit(shown)
    if parts.scheme not in STATE_URL_SCHEMES:
        raise ValueError(
            f"state_url must be a PostgreSQL URL (postgresql://USER@HOST:PORT/DATABASE), not {parts.scheme!r}"
            "; leave it out for the embedded SQLite state in state_dir"
        )
    if not parts.hostname or not parts.path.strip("/"):
        raise ValueError("state_url needs a host and a database: postgresql://USER@HOST:PORT/DATABASE")
    if parts.password is not None and parts.password != "REF":
        raise ValueError(
            "state_url holds a literal password; write it as a secret reference, e.g. "
            "postgresql://vintage:${secret:ci/state_password}@HOST:5432/vintage (or set PGPASSWORD)"
        )
    return value


def check_secret_refs(value: object, where: str) -> None:
    """Raise ValueError when a string inside ``value`` holds a malformed ``${secret:...}`` reference."""
    if isinstance(value, str):
        for ref in SECRET_REF.findall(value):
            if _DOUBLED_SEPARATOR.search(ref):
                raise ValueError(
                    f"secret reference in {where} ({ref[:60]!r}) has a doubled or trailing '_', '-' or '.'; "
                    "names may not (see docs/secrets.md)"
                )
        rest = SECRET_REF.sub("", value)
        if "${secret:" in rest:
            bad = rest[rest.index("${secret:") :][:60]
            raise ValueError(
                f"malformed secret reference in {where}: {bad!r}; expected ${{secret:scope/key}} "
                "or ${secret:environment/scope/key}"
            )
    elif isinstance(value, dict):
        for v in value.values():
            check_secret_refs(v, where)
    elif isinstance(value, list | tuple):
        for v in value:
            check_secret_refs(v, where)


ProviderName = Annotated[str, _in(SECRET_PROVIDERS)]


class DatabricksSecretsSpec(_Strict):
    """Where the Databricks secret provider connects. The token never lives here: databricks-sdk reads
    ``DATABRICKS_TOKEN`` (or a profile of ~/.databrickscfg)."""

    host: str | None = None
    profile: str | None = None


class SecretsSpec(_Strict):
    """Secret providers, in lookup order for ``${secret:...}`` references."""

    providers: Annotated[list[ProviderName], Field(min_length=1)] = Field(
        default_factory=lambda: ["env", "local"]
    )
    databricks: DatabricksSecretsSpec = DatabricksSecretsSpec()

    @field_validator("providers")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"providers are listed more than once: {value}")
        return value


class SparkSpec(_Strict):
    """Where Spark runs: ``local[N]``/``local[*]`` (in-process), ``spark://host:port`` (standalone) or
    ``sc://host:port`` (Spark Connect)."""

    master: Annotated[str, Field(pattern=r"^(local(\[(\d+|\*)\])?|spark://[^\s/]+|sc://[^\s/]+)$")] = (
        "local[*]"
    )
    conf: dict[str, str] = Field(default_factory=dict)


class DatabricksComputeSpec(_Strict):
    """A Databricks workspace and the job cluster a stage runs on (``engine: databricks``)."""

    host: str | None = None
    token: str | None = None
    job_cluster: dict[str, Any] = Field(
        default_factory=lambda: {
            "spark_version": "15.4.x-cpu-ml-scala2.12",
            "node_type_id": "Standard_DS3_v2",
            "autoscale": {"min_workers": 1, "max_workers": 4},
        }
    )

    @field_validator("host")
    @classmethod
    def _host_refs(cls, value: str | None) -> str | None:
        check_secret_refs(value, "compute.databricks.host")
        return value

    @field_validator("token")
    @classmethod
    def _token_is_ref(cls, value: str | None) -> str | None:
        if value is not None and not SECRET_REF.fullmatch(value.strip()):
            raise ValueError(
                "compute.databricks.token must be a secret reference such as ${secret:ci/databricks_token}"
            )
        return value


class ComputeSpec(_Strict):
    """Where training (and batch scoring) run: this machine, a Spark cluster, or Databricks job clusters."""

    engine: Annotated[str, _in(COMPUTE_ENGINES)] = "local"
    spark: SparkSpec = SparkSpec()
    databricks: DatabricksComputeSpec = DatabricksComputeSpec()


StepName = Literal[
    "validate", "train", "register", "release", "deploy", "smoke_test", "champion_gate", "approval", "promote"
]
# Steps that act on an environment: their stage must name one.
ENVIRONMENT_STEPS: frozenset[str] = frozenset({"deploy", "smoke_test", "approval", "promote"})


class StageSpec(_Strict):
    """One pipeline stage: named steps, run in order, optionally in an environment."""

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][\w-]*$")]
    environment: str | None = None
    depends_on: list[str] = Field(default_factory=list)
    condition: Literal["succeeded", "always"] = "succeeded"
    steps: Annotated[list[StepName], Field(min_length=1)]

    @model_validator(mode="after")
    def _steps_fit(self) -> StageSpec:
        if len(set(self.steps)) != len(self.steps):
            raise ValueError(f"stage {self.name!r} lists a step more than once: {self.steps}")
        needs = sorted(set(self.steps) & ENVIRONMENT_STEPS)
        if needs and self.environment is None:
            raise ValueError(f"stage {self.name!r} has step(s) {needs} but no `environment`")
        return self


def _default_stages() -> list[StageSpec]:
    return [
        StageSpec(name="build", steps=["validate", "train", "register", "release"]),
        StageSpec(
            name="staging",
            environment="staging",
            depends_on=["build"],
            steps=["deploy", "smoke_test", "champion_gate", "promote"],
        ),
        StageSpec(
            name="production",
            environment="production",
            depends_on=["staging"],
            steps=["approval", "deploy", "smoke_test", "promote"],
        ),
    ]


SMOKE_ROWS_MAX = 100  # pipeline.smoke_rows' upper bound: the rows load_dataset keeps (HEAD_ROWS)


class PipelineSpec(_Strict):
    """The stages of ``vintage run`` (default: build -> staging -> production, like the original pipeline)."""

    stages: Annotated[list[StageSpec], Field(min_length=1)] = Field(default_factory=_default_stages)
    champion_tolerance: Annotated[float, Field(ge=0)] = 0.0
    # At most the first rows the data pass keeps (vintage.data.load.HEAD_ROWS; a unit test keeps the two
    # equal): the smoke test never loads the whole data set.
    smoke_rows: Annotated[int, Field(ge=1)] = 10

    @field_validator("smoke_rows")
    @classmethod
    def _smoke_rows(cls, value: int) -> int:
        if value > SMOKE_ROWS_MAX:
            raise ValueError(
                f"at most {SMOKE_ROWS_MAX} (got {value}): the smoke test posts the first rows kept by the "
                "data's validating pass, never the whole data set"
            )
        return value

    @model_validator(mode="after")
    def _graph(self) -> PipelineSpec:
        names = [s.name for s in self.stages]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"stage names must be unique; repeated: {dupes}")
        for stage in self.stages:
            unknown = [d for d in stage.depends_on if d not in names]
            if unknown:
                raise ValueError(
                    f"stage {stage.name!r} depends on unknown stage(s) {unknown}; stages: {names}"
                )
        self.order()  # raises on a cycle
        return self

    def order(self) -> list[StageSpec]:
        """Stages in dependency order (stable: YAML order among independent stages).

        Raises:
            ValueError: the ``depends_on`` graph has a cycle.
        """
        by_name = {s.name: s for s in self.stages}
        done: list[str] = []
        visiting: list[str] = []

        def visit(name: str) -> None:
            if name in done:
                return
            if name in visiting:
                cycle = [*visiting[visiting.index(name) :], name]
                raise ValueError(f"stages depend on each other in a cycle: {' -> '.join(cycle)}")
            visiting.append(name)
            for dep in by_name[name].depends_on:
                visit(dep)
            visiting.pop()
            done.append(name)

        for stage in self.stages:
            visit(stage.name)
        return [by_name[n] for n in done]


class MonitoringSpec(_Strict):
    """``monitoring``: when ``vintage monitor`` calls a feature (or the predictions) drifted.

    A feature is flagged when any one threshold is crossed: its PSI against the training data is above
    ``psi``, the two-sample KS test's p-value is below ``ks_p``, or the share of missing or out-of-range
    values (outside the training minimum and maximum) is above ``missing_rate`` / ``out_of_range_rate``.
    With fewer than ``min_rows`` logged rows, PSI and KS are computed but not judged (too noisy).
    """

    psi: Annotated[float, Field(gt=0.0)] = 0.2
    """PSI above this is drift (0.1-0.2 is the usual "watch" band, above 0.2 "act")."""
    ks_p: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.001
    """KS p-value below this is drift; 0 turns the KS criterion off."""
    missing_rate: Annotated[float, Field(ge=0.0, le=1.0)] = 0.01
    """Share of missing values (NaN, null) above this is a problem."""
    out_of_range_rate: Annotated[float, Field(ge=0.0, le=1.0)] = 0.05
    """Share of values outside the training range above this is a problem."""
    min_rows: Annotated[int, Field(ge=1)] = 100
    """Fewest logged rows for PSI and KS to be judged."""
    bins: Annotated[int, Field(ge=2, le=100)] = 10
    """PSI bins: the training data's quantiles (fewer when values repeat)."""


class Spec(_Strict):
    """The whole workload: vintage.yaml, parsed."""

    experiment: Annotated[str, Field(min_length=1, max_length=200)] = "DrinksQuality"
    model_name: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][\w.\-]*$")] = (
        "winequality"
    )
    tracking_uri: str | None = None
    tracking_token: str | None = None
    state_dir: Path = Path(".vintage")
    state_url: str | None = None
    data: DataSpec = DataSpec()
    estimators: Annotated[list[EstimatorSpec], Field(alias="estimator", min_length=1)] = Field(
        default_factory=lambda: [EstimatorSpec.model_validate(DEFAULT_ESTIMATOR)]
    )
    selection: SelectionSpec = SelectionSpec()
    training: TrainingSpec = TrainingSpec()
    secrets: SecretsSpec = SecretsSpec()
    compute: ComputeSpec = ComputeSpec()
    environments: dict[str, EnvironmentSpec] = Field(default_factory=default_environments)
    pipeline: PipelineSpec = PipelineSpec()
    monitoring: MonitoringSpec = MonitoringSpec()

    @field_validator("environments", mode="before")
    @classmethod
    def _merge_environments(cls, value: object) -> object:
        return merge_environments(value)

    @model_validator(mode="after")
    def _environments_known(self) -> Spec:
        for stage in self.pipeline.stages:
            if stage.environment is not None and stage.environment not in self.environments:
                raise ValueError(
                    f"pipeline stage {stage.name!r} uses environment {stage.environment!r}, which is not "
                    f"declared under `environments` ({', '.join(self.environments) or 'none declared'})"
                )
        prod = self.environments.get("production")
        if prod is not None and not prod.api_keys:
            raise ValueError(
                "environments.production.api_keys cannot be false: production always requires API keys"
            )
        seen: dict[tuple[str, int], str] = {}
        for name, env in self.environments.items():
            other = seen.setdefault((env.host, env.port), name)
            if other != name:
                raise ValueError(
                    f"environments {other} and {name} both use {env.host}:{env.port}; give each its own port"
                )
        problem = self.grid_cap_problem()
        if problem:
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _selection_metric_is_computed(self) -> Spec:
        if self.selection.metric.startswith("acc_") and any(is_mllib(e.class_path) for e in self.estimators):
            raise ValueError(
                f"selection.metric {self.selection.metric} is computed for scikit-learn estimators only; "
                "Spark MLlib points get rmse, mae and r2"
            )
        classifiers = [e.is_classifier for e in self.estimators]
        if any(classifiers) and not all(classifiers):
            labels = ", ".join(e.label for e in self.estimators if e.is_classifier)
            raise ValueError(
                f"the grid mixes classifiers ({labels}) with regressors: they get different metrics and "
                "cannot be compared; train them in separate workloads"
            )
        wanted = "classifier" if self.selection.metric in CLASSIFIER_METRICS else "regressor"
        if any(classifiers) != (wanted == "classifier"):
            hint = (
                "accuracy or balanced_accuracy" if any(classifiers) else "rmse, mae, r2, acc_0.5 or acc_1.0"
            )
            raise ValueError(
                f"selection.metric {self.selection.metric} is a {wanted} metric, but the estimators are "
                f"{'classifiers' if any(classifiers) else 'regressors'}; use {hint}"
            )
        return self

    def grid_cap_problem(self) -> str | None:
        """Why the grid is too large (more points than ``training.max_grid_points``), or ``None``.

        Counted from the list lengths, so a grid of 10^12 points is refused without being expanded.
        """
        size, cap = self.grid_size(), self.training.max_grid_points
        if size <= cap:
            return None
        parts = ", ".join(
            f"estimator[{i}] {e.label}: {e.point_count():,}" for i, e in enumerate(self.estimators)
        )
        return (
            f"the grid has {size:,} points ({parts}), more than training.max_grid_points = {cap:,}; "
            "use fewer values per grid parameter, or raise training.max_grid_points"
        )

    def key_scope(self, environment: str) -> str | None:
        """The secret scope of an environment's API keys (``None``: no keys required)."""
        env = self.environments[environment]
        if not env.api_keys:
            return None
        return env.key_scope or f"{environment}/serving"

    @field_validator("tracking_uri")
    @classmethod
    def _uri_refs(cls, value: str | None) -> str | None:
        check_secret_refs(value, "tracking_uri")
        return value

    @field_validator("state_url")
    @classmethod
    def _state_url(cls, value: str | None) -> str | None:
        return check_state_url(value)

    @field_validator("tracking_token")
    @classmethod
    def _token_is_ref(cls, value: str | None) -> str | None:
        if value is not None and not SECRET_REF.fullmatch(value.strip()):
            raise ValueError(
                "tracking_token must be a secret reference such as ${secret:ci/mlflow_token}; "
                "a token never belongs in vintage.yaml"
            )
        return value.strip() if value else value

    @field_validator("estimators", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, dict) else value

    def grid_size(self) -> int:
        """Number of grid points over all estimators (counted, not expanded)."""
        return sum(e.point_count() for e in self.estimators)


class ProjectSettings(BaseModel):
    """The project-wide settings alone (state directory, secret providers), for commands that need no
    workload: reading them does not import or check any estimator."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    state_dir: Path = Path(".vintage")
    state_url: str | None = None
    secrets: SecretsSpec = SecretsSpec()

    @field_validator("state_url")
    @classmethod
    def _state_url(cls, value: str | None) -> str | None:
        return check_state_url(value)
