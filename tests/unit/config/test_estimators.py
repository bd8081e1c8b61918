"""Composite estimator entries in vintage.yaml: the forms that load, what they build, and the errors
that name the key."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import numpy as np
import pytest
from sklearn.compose import TransformedTargetRegressor
from sklearn.ensemble import StackingRegressor, VotingRegressor
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from vintage.config import Spec, load_spec
from vintage.config.estimators import build_estimator, default_names, describe, loggable_params
from vintage.errors import ConfigError
from vintage.training.grid import expand_grid, training_key

SCALER = "sklearn.preprocessing.StandardScaler"
ENET = "sklearn.linear_model.ElasticNet"
RIDGE = "sklearn.linear_model.Ridge"
TREE = "sklearn.tree.DecisionTreeRegressor"

PIPELINE_YAML = f"""
estimator:
  - class: {RIDGE}
  - name: scaled-elasticnet
    steps:
      - {{class: {SCALER}}}
      - {{class: {ENET}, params: {{random_state: 42}}}}
    grid: {{elasticnet__alpha: [0.01, 0.1], elasticnet__l1_ratio: [0.1, 0.5]}}
"""


def write(directory: Path, text: str) -> Path:
    path = directory / "vintage.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def config_error(directory: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as exc:
        load_spec(write(directory, text))
    return exc.value


def spec(estimator: object, seed: int = 40) -> Spec:
    return Spec.model_validate({"estimator": estimator, "data": {"split": {"seed": seed}}})


# --- forms that load and what they build ----------------------------------------------------------


def test_steps_build_a_pipeline_named_like_make_pipeline(tmp_path: Path) -> None:
    est = load_spec(write(tmp_path, PIPELINE_YAML)).estimators[1]

    built = est.build()

    assert isinstance(built, Pipeline)
    expected = make_pipeline(StandardScaler(), __import__("sklearn.linear_model").linear_model.ElasticNet())
    assert [name for name, _ in built.steps] == [name for name, _ in expected.steps]
    assert built.get_params()["elasticnet__random_state"] == 42
    assert est.label == "scaled-elasticnet"
    assert est.description == "Pipeline(StandardScaler, ElasticNet)"
    assert est.point_count() == 4


def test_pipeline_points_carry_flat_params_and_the_structure(tmp_path: Path) -> None:
    points = expand_grid(load_spec(write(tmp_path, PIPELINE_YAML)))

    enet = points[1:]
    assert enet[0].params == {
        "elasticnet__random_state": 42,
        "elasticnet__alpha": 0.01,
        "elasticnet__l1_ratio": 0.1,
    }
    assert enet[0].grid_params == {"elasticnet__alpha": 0.01, "elasticnet__l1_ratio": 0.1}
    assert enet[0].run_name == "scaled-elasticnet elasticnet__alpha=0.01 elasticnet__l1_ratio=0.1"
    assert enet[0].estimator_text == "Pipeline(StandardScaler, ElasticNet)"
    assert points[0].estimator_text == RIDGE  # a plain class is logged as before
    model = enet[3].build()
    assert model.get_params()["elasticnet__alpha"] == 0.1
    assert model.get_params()["elasticnet__l1_ratio"] == 0.5


def test_steps_given_as_import_paths_and_repeated_classes_get_numbered_names() -> None:
    est = spec({"steps": [SCALER, SCALER, RIDGE]}).estimators[0]

    assert [n for n, _ in est.build().steps] == ["standardscaler-1", "standardscaler-2", "ridge"]
    assert default_names([SCALER, SCALER, RIDGE]) == ["standardscaler-1", "standardscaler-2", "ridge"]


def test_random_state_of_nested_estimators_gets_the_split_seed_unless_set() -> None:
    points = expand_grid(
        spec(
            {
                "class": "sklearn.ensemble.VotingRegressor",
                "estimators": [{"class": TREE, "params": {"random_state": 1}}, {"name": "t2", "class": TREE}],
            },
            seed=7,
        )
    )

    assert points[0].params == {"t2__random_state": 7, "decisiontreeregressor__random_state": 1}


def test_transformed_target_regressor_with_a_pipeline_and_functions() -> None:
    est = spec(
        {
            "class": "sklearn.compose.TransformedTargetRegressor",
            "regressor": {"steps": [SCALER, RIDGE]},
            "func": "numpy.log1p",
            "inverse_func": "numpy.expm1",
            "grid": {"regressor__ridge__alpha": [0.1, 1.0]},
        }
    ).estimators[0]

    point = expand_grid(spec(est.model_dump(by_alias=True, exclude_none=True)))[1]
    built = point.build()

    assert isinstance(built, TransformedTargetRegressor)
    assert built.func is np.log1p
    assert built.get_params()["regressor__ridge__alpha"] == 1.0
    assert point.estimator_text == (
        "TransformedTargetRegressor(regressor=Pipeline(StandardScaler, Ridge), "
        "func=log1p, inverse_func=expm1)"
    )


def test_stacking_with_named_estimators_and_a_final_estimator() -> None:
    est = spec(
        {
            "class": "sklearn.ensemble.StackingRegressor",
            "estimators": [RIDGE, {"name": "tree", "class": TREE, "params": {"max_depth": 3}}],
            "final_estimator": "sklearn.linear_model.RidgeCV",
            "params": {"cv": 3},
            "grid": {"tree__min_samples_leaf": [1, 5]},
        }
    ).estimators[0]

    built = est.build()

    assert isinstance(built, StackingRegressor)
    assert [n for n, _ in built.estimators] == ["ridge", "tree"]
    assert built.cv == 3
    assert built.estimators[1][1].max_depth == 3
    assert est.description == "StackingRegressor(Ridge, tree=DecisionTreeRegressor, final_estimator=RidgeCV)"


def test_voting_fits_and_predicts_like_scikit_learn() -> None:
    point = expand_grid(
        spec(
            {
                "class": "sklearn.ensemble.VotingRegressor",
                "estimators": [RIDGE, {"steps": [SCALER, ENET]}],
                "grid": [{"weights": [1, 2], "pipeline__elasticnet__alpha": 0.05}],
            }
        )
    )[0]
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 3)), rng.normal(size=60)

    ours = point.build().fit(x, y)
    from sklearn.linear_model import ElasticNet, Ridge

    theirs = VotingRegressor(
        [
            ("ridge", Ridge()),
            ("pipeline", make_pipeline(StandardScaler(), ElasticNet(alpha=0.05, random_state=40))),
        ],
        weights=[1, 2],
    ).fit(x, y)

    np.testing.assert_array_equal(ours.predict(x), theirs.predict(x))
    assert loggable_params(ours)["pipeline__elasticnet__alpha"] == 0.05
    assert "estimators" not in loggable_params(ours)
    assert "pipeline" not in loggable_params(ours)


def test_training_key_depends_on_the_structure_but_plain_keys_are_unchanged() -> None:
    scaled = expand_grid(spec({"steps": [SCALER, RIDGE]}))[0]
    minmax = expand_grid(spec({"steps": ["sklearn.preprocessing.MinMaxScaler", RIDGE]}))[0]
    plain = expand_grid(spec({"class": RIDGE}))[0]
    args = ("digest", 0.25, 40, "1.9")

    assert scaled.params == {"ridge__random_state": 40}
    assert training_key(scaled, *args) != training_key(minmax, *args)
    assert plain.structure is None
    assert training_key(plain, *args) == training_key(plain.__class__(0, "x", RIDGE, plain.params), *args)


def test_build_estimator_refuses_a_prefix_that_names_no_step() -> None:
    with pytest.raises(ValueError, match="name no step or slot"):
        build_estimator(
            {"class": "sklearn.pipeline.Pipeline", "steps": [{"name": "r", "class": RIDGE}]}, {"x__a": 1}
        )


def test_describe_shows_custom_names() -> None:
    structure = {"class": "sklearn.pipeline.Pipeline", "steps": [{"name": "scale", "class": SCALER}]}
    assert describe(structure) == "Pipeline(scale=StandardScaler)"


def test_secret_reference_in_a_step_param_stays_a_reference_until_training() -> None:
    point = expand_grid(
        spec(
            {
                "steps": [
                    SCALER,
                    {
                        "class": "support.secret_estimator.TokenRegressor",
                        "params": {"token": "${secret:ci/tok}"},
                    },
                ]
            }
        )
    )[0]

    assert point.params == {"tokenregressor__token": "${secret:ci/tok}"}
    # What training does: fit with the resolved value, then put the reference back before the model is
    # saved (track.log_success: set_params with the point's parameters that hold a reference).
    resolved = dataclasses.replace(point, params={"tokenregressor__token": "s3cr3t"})
    model = resolved.build().fit(np.ones((4, 2)), np.arange(4.0))
    assert model[-1].token == "s3cr3t"
    refs = {k: v for k, v in point.params.items() if isinstance(v, str) and "${secret:" in v}
    model.set_params(**refs)
    assert model[-1].token == "${secret:ci/tok}"


# --- errors naming the key ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        (
            f"estimator:\n  - class: {RIDGE}\n"
            f"  - steps: [{{class: sklearn.preprocessing.NoScaler}}, {ENET}]\n",
            "estimator[1].steps[0].class",
            "has no attribute 'NoScaler'",
        ),
        (f"estimator:\n  steps: [{RIDGE}, {ENET}]\n", "estimator[0].steps[0].class", "must transform"),
        (f"estimator:\n  steps: [{SCALER}, {SCALER}]\n", "estimator[0].steps[1].class", "must predict"),
        (
            f"estimator:\n  steps: [{SCALER}, sklearn.linear_model.enet_path]\n",
            "estimator[0].steps[1].class",
            "not a scikit",
        ),
        (
            f"estimator:\n  steps: [{SCALER}, {ENET}]\n  grid: {{elasticnet__alpa: [0.1]}}\n",
            "estimator[0].grid.elasticnet__alpa",
            "did you mean 'elasticnet__alpha'",
        ),
        (
            f"estimator:\n  steps: [{SCALER}, {ENET}]\n  grid: [{{elasticnt__alpha: 0.1}}]\n",
            "estimator[0].grid[0].elasticnt__alpha",
            "has no parameter(s) ['elasticnt__alpha']",
        ),
        (
            f"estimator:\n  steps: [{SCALER}, {ENET}]\n  grid: {{elasticnet: [1]}}\n",
            "estimator[0].grid.elasticnet",
            "give each alternative as its own estimator entry",
        ),
        (
            f"estimator:\n  steps: [{SCALER}, {{class: {ENET}, params: {{alpah: 1}}}}]\n",
            "estimator[0].steps[1].params",
            "has no parameter(s) ['alpah']",
        ),
        (
            f"estimator:\n  steps: [{SCALER}, {ENET}]\n  params: {{standardscaler__with_man: false}}\n",
            "estimator[0].params.standardscaler__with_man",
            "did you mean 'standardscaler__with_mean'",
        ),
        ("estimator: {class: sklearn.pipeline.Pipeline}\n", "estimator[0].steps", "needs `steps`"),
        (
            "estimator: {class: sklearn.ensemble.VotingRegressor}\n",
            "estimator[0].estimators",
            "needs `estimators`",
        ),
        (
            f"estimator: {{class: {RIDGE}, regressor: {RIDGE}}}\n",
            "estimator[0].regressor",
            "takes no `regressor`",
        ),
        (
            f"estimator:\n  class: sklearn.ensemble.VotingRegressor\n"
            f"  estimators: [{{name: a, class: {RIDGE}}}, {{name: a, class: {ENET}}}]\n",
            "estimator[0].estimators[1].name",
            "used twice",
        ),
        (
            f"estimator:\n  class: sklearn.ensemble.VotingRegressor\n"
            f"  estimators: [{{name: a__b, class: {RIDGE}}}]\n",
            "estimator[0].estimators[0].name",
            "no '__'",
        ),
        (
            f"estimator:\n  class: sklearn.ensemble.VotingRegressor\n"
            f"  estimators: [{{name: weights, class: {RIDGE}}}]\n",
            "estimator[0].estimators[0].name",
            "also an argument",
        ),
        (
            "estimator:\n  class: sklearn.compose.TransformedTargetRegressor\n"
            f"  regressor: {RIDGE}\n  transformer: sklearn.linear_model.Lasso\n",
            "estimator[0].transformer.class",
            "`transformer` must transform",
        ),
        (
            "estimator:\n  class: sklearn.ensemble.StackingRegressor\n"
            f"  estimators: [{RIDGE}]\n  final_estimator: {{steps: [{SCALER}, {SCALER}]}}\n",
            "estimator[0].final_estimator.steps[1].class",
            "must predict",
        ),
        (
            "estimator:\n  class: sklearn.compose.TransformedTargetRegressor\n"
            f"  regressor: {RIDGE}\n  func: numpy.nofunc\n  inverse_func: numpy.expm1\n",
            "estimator[0].func",
            "has no attribute 'nofunc'",
        ),
        (
            f"estimator:\n  steps: [{SCALER}, {{class: {ENET}, grid: {{alpha: [1]}}}}]\n",
            "estimator[0].steps[1].grid",
            "unknown key",
        ),
        ("estimator:\n  steps: []\n", "estimator[0].steps", "at least one"),
        (
            f"estimator:\n  steps: [{SCALER}, pyspark.ml.regression.LinearRegression]\n",
            "estimator[0].steps[1].class",
            "Spark MLlib",
        ),
        (
            "estimator:\n  class: sklearn.compose.TransformedTargetRegressor\n"
            f"  regressor: {{name: r, class: {RIDGE}}}\n",
            "estimator[0].regressor.name",
            "named by its key",
        ),
        (
            f"estimator:\n  steps: [{SCALER}, {RIDGE}]\n  params: {{steps: []}}\n",
            "estimator[0].params.steps",
            "not under params",
        ),
    ],
)
def test_bad_composite_entry_is_a_config_error_naming_the_key(
    tmp_path: Path, text: str, key: str, words: str
) -> None:
    err = config_error(tmp_path, text)

    assert err.exit_code == 2
    assert err.headline.startswith(f"{tmp_path / 'vintage.yaml'}: {key}: "), err.headline
    assert words in err.headline
    assert "\n" not in err.headline


def test_class_paths_of_a_point_list_every_class_of_the_structure_once() -> None:
    point = expand_grid(spec({"steps": [SCALER, SCALER, {"class": ENET}]}))[0]

    assert point.class_paths == ["sklearn.pipeline.Pipeline", SCALER, ENET]
    assert expand_grid(spec({"class": RIDGE}))[0].class_paths == [RIDGE]


def test_config_show_round_trips_a_composite_entry_without_empty_slots() -> None:
    first = spec({"class": "sklearn.ensemble.StackingRegressor", "estimators": [RIDGE], "params": {"cv": 3}})

    dumped = first.model_dump(mode="json", by_alias=True)

    entry = dumped["estimator"][0]
    assert "regressor" not in entry and "steps" not in entry
    assert "steps" not in entry["estimators"][0]
    assert Spec.model_validate(dumped).estimators[0].structure() == first.estimators[0].structure()


def test_the_pipelines_example_loads() -> None:
    example = Path(__file__).resolve().parents[3] / "examples" / "pipelines.yaml"

    loaded = load_spec(example)

    assert [e.label for e in loaded.estimators][:2] == ["scaled-elasticnet", "scaled-svr"]
    assert loaded.grid_size() == 9 + 6 + 2 + 1
