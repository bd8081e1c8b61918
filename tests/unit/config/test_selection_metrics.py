"""acc_0.5 and acc_1.0 as selection metrics: higher is better, with or without cv, scikit-learn only."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from vintage.config import SelectionSpec, Spec
from vintage.training.runner import PointRun
from vintage.training.select import select_best


@pytest.mark.parametrize("metric", ["acc_0.5", "acc_1.0"])
def test_accuracy_metrics_are_selectable_and_maximized(metric: str) -> None:
    sel = SelectionSpec(metric=metric)

    assert sel.direction == "maximize"
    assert sel.selection_key == metric
    assert SelectionSpec(metric=metric, cv=5).selection_key == f"cv_{metric}"


def test_select_best_on_accuracy_takes_the_highest_share_above_the_threshold() -> None:
    runs = [
        PointRun(i, f"r{i}", f"p{i}", "x", {}, "FINISHED", metrics={"acc_0.5": v, "rmse": 0.7})
        for i, v in enumerate([0.61, 0.66, 0.64])
    ]

    assert select_best(runs, SelectionSpec(metric="acc_0.5", threshold=0.6)).index == 1


def test_accuracy_selection_with_spark_mllib_estimators_is_a_config_error() -> None:
    with pytest.raises(ValidationError, match="scikit-learn estimators only"):
        Spec.model_validate(
            {
                "selection": {"metric": "acc_0.5"},
                "estimator": {"class": "pyspark.ml.regression.LinearRegression"},
                "compute": {"engine": "spark"},
            }
        )


TREE_CLF = "sklearn.tree.DecisionTreeClassifier"


def test_a_classifier_is_detected_also_at_the_end_of_a_pipeline() -> None:
    spec = Spec.model_validate(
        {
            "selection": {"metric": "accuracy"},
            "estimator": [
                {"class": TREE_CLF},
                {
                    "steps": [
                        "sklearn.preprocessing.StandardScaler",
                        "sklearn.linear_model.LogisticRegression",
                    ]
                },
            ],
        }
    )

    assert [e.is_classifier for e in spec.estimators] == [True, True]
    assert spec.selection.direction == "maximize"
    assert not Spec().estimators[0].is_classifier


@pytest.mark.parametrize(
    ("selection", "estimator", "words"),
    [
        (
            {},
            {"class": TREE_CLF},
            "selection.metric rmse is a regressor metric, but the estimators are classifiers",
        ),
        ({"metric": "accuracy"}, {"class": "sklearn.linear_model.Ridge"}, "is a classifier metric"),
        (
            {"metric": "accuracy"},
            [{"class": TREE_CLF}, {"class": "sklearn.linear_model.Ridge"}],
            "mixes classifiers",
        ),
    ],
)
def test_selection_metric_must_suit_the_estimators(selection: object, estimator: object, words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        Spec.model_validate({"selection": selection, "estimator": estimator})
