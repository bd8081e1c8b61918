"""expand_grid, GridPoint.run_name and training_key."""

from __future__ import annotations

from typing import Any

import pytest

from vintage.config import Spec
from vintage.training.grid import GridPoint, expand_grid, training_key

ENET = "sklearn.linear_model.ElasticNet"
KNN = "sklearn.neighbors.KNeighborsRegressor"


def spec(estimator: Any, seed: int = 40) -> Spec:
    return Spec.model_validate({"estimator": estimator, "data": {"split": {"seed": seed}}})


def test_default_spec_expands_to_the_three_tutorial_points() -> None:
    points = expand_grid(Spec())

    assert [p.index for p in points] == [0, 1, 2]
    assert [p.params for p in points] == [
        {"random_state": 42, "alpha": 0.5, "l1_ratio": 0.5},
        {"random_state": 42, "alpha": 0.3, "l1_ratio": 0.3},
        {"random_state": 42, "alpha": 0.1, "l1_ratio": 0.1},
    ]
    assert [p.grid_params for p in points] == [
        {"alpha": 0.5, "l1_ratio": 0.5},
        {"alpha": 0.3, "l1_ratio": 0.3},
        {"alpha": 0.1, "l1_ratio": 0.1},
    ]
    assert {p.class_path for p in points} == {ENET}
    assert {p.label for p in points} == {"ElasticNet"}


def test_grid_params_overlay_fixed_params() -> None:
    points = expand_grid(
        spec(
            {
                "class": ENET,
                "params": {"alpha": 9.0, "max_iter": 50},
                "grid": [{"alpha": 0.1}, {"l1_ratio": 0.7}],
            }
        )
    )

    assert points[0].params == {"random_state": 40, "alpha": 0.1, "max_iter": 50}
    assert points[1].params == {"random_state": 40, "alpha": 9.0, "max_iter": 50, "l1_ratio": 0.7}
    assert points[0].grid_params == {"alpha": 0.1}


def test_random_state_injected_from_split_seed_when_not_given() -> None:
    points = expand_grid(spec({"class": ENET, "grid": [{"alpha": 0.2}]}, seed=123))

    assert points[0].params["random_state"] == 123
    assert points[0].grid_params == {"alpha": 0.2}  # injected, not shown as a grid parameter


def test_random_state_given_in_params_wins_over_seed() -> None:
    points = expand_grid(spec({"class": ENET, "params": {"random_state": 7}}, seed=123))

    assert points[0].params == {"random_state": 7}


def test_random_state_given_in_grid_wins_over_seed() -> None:
    points = expand_grid(spec({"class": ENET, "grid": {"random_state": [1, 2]}}, seed=123))

    assert [p.params["random_state"] for p in points] == [1, 2]


def test_random_state_not_injected_without_that_parameter() -> None:
    points = expand_grid(spec({"class": KNN, "grid": {"n_neighbors": [3, 5]}}))

    assert [p.params for p in points] == [{"n_neighbors": 3}, {"n_neighbors": 5}]


def test_mapping_grid_points_in_product_order() -> None:
    points = expand_grid(spec({"class": ENET, "grid": {"alpha": [1, 2], "l1_ratio": [0.1, 0.9]}}))

    assert [p.grid_params for p in points] == [
        {"alpha": 1, "l1_ratio": 0.1},
        {"alpha": 1, "l1_ratio": 0.9},
        {"alpha": 2, "l1_ratio": 0.1},
        {"alpha": 2, "l1_ratio": 0.9},
    ]


def test_several_estimators_are_indexed_consecutively_in_spec_order() -> None:
    points = expand_grid(
        spec(
            [
                {"class": ENET, "grid": [{"alpha": 0.1}, {"alpha": 0.2}]},
                {"class": KNN, "name": "knn", "grid": {"n_neighbors": [3, 5, 7]}},
            ]
        )
    )

    assert [p.index for p in points] == [0, 1, 2, 3, 4]
    assert [p.label for p in points] == ["ElasticNet", "ElasticNet", "knn", "knn", "knn"]
    assert [p.class_path for p in points] == [ENET, ENET, KNN, KNN, KNN]
    assert points[2].params == {"n_neighbors": 3}


def test_run_name_is_label_and_grid_params() -> None:
    point = GridPoint(
        0, "ElasticNet", ENET, {"random_state": 42, "alpha": 0.5}, {"alpha": 0.5, "l1_ratio": 0.3}
    )

    assert point.run_name == "ElasticNet alpha=0.5 l1_ratio=0.3"


def test_run_name_without_grid_params_is_label_only() -> None:
    assert GridPoint(0, "knn", KNN, {"n_neighbors": 3}, {}).run_name == "knn"


def test_run_names_of_default_spec() -> None:
    assert [p.run_name for p in expand_grid(Spec())] == [
        "ElasticNet alpha=0.5 l1_ratio=0.5",
        "ElasticNet alpha=0.3 l1_ratio=0.3",
        "ElasticNet alpha=0.1 l1_ratio=0.1",
    ]


# --- training_key -------------------------------------------------------------------------------

POINT = GridPoint(0, "ElasticNet", ENET, {"random_state": 42, "alpha": 0.5}, {"alpha": 0.5})
BASE: dict[str, Any] = {
    "data_digest": "0123456789abcdef",
    "test_size": 0.25,
    "seed": 40,
    "library_version": "1.9",
}


def key(point: GridPoint = POINT, **changes: Any) -> str:
    return training_key(point, **{**BASE, **changes})


def test_training_key_equal_for_identical_inputs() -> None:
    same = GridPoint(5, "other-label", ENET, {"alpha": 0.5, "random_state": 42}, {})

    assert key() == key()
    assert key(same) == key()  # index, label, grid_params and dict order are not part of the identity


@pytest.mark.parametrize(
    "changes",
    [
        {"data_digest": "fedcba9876543210"},
        {"test_size": 0.2},
        {"seed": 41},
        {"library_version": "1.8"},
    ],
)
def test_training_key_differs_when_data_split_or_library_change(changes: dict[str, Any]) -> None:
    assert key(**changes) != key()


@pytest.mark.parametrize(
    "point",
    [
        GridPoint(0, "ElasticNet", ENET, {"random_state": 42, "alpha": 0.3}, {"alpha": 0.3}),
        GridPoint(0, "ElasticNet", ENET, {"random_state": 43, "alpha": 0.5}, {"alpha": 0.5}),
        GridPoint(0, "ElasticNet", ENET, {"alpha": 0.5}, {"alpha": 0.5}),
        GridPoint(0, "Lasso", "sklearn.linear_model.Lasso", {"random_state": 42, "alpha": 0.5}, {}),
    ],
)
def test_training_key_differs_when_params_or_class_change(point: GridPoint) -> None:
    assert key(point) != key()


def test_expand_grid_refuses_a_grid_over_the_cap_before_expanding_it() -> None:
    from vintage.errors import ConfigError

    ok = spec({"class": ENET, "grid": {"alpha": [0.1, 0.2], "l1_ratio": [0.1, 0.2]}})
    # A spec changed after validation (model_copy skips the validators) is still checked.
    small_cap = ok.model_copy(update={"training": ok.training.model_copy(update={"max_grid_points": 3})})

    with pytest.raises(ConfigError) as exc:
        expand_grid(small_cap)

    assert "the grid has 4 points" in exc.value.headline
    assert "training.max_grid_points = 3" in exc.value.headline
    assert len(expand_grid(ok)) == 4
