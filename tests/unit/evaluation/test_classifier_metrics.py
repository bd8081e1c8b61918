"""A classifier's metrics (accuracy, balanced accuracy, F1 per class) and its confusion-matrix plot."""

from __future__ import annotations

import numpy as np
import pytest

from vintage.evaluation import plots
from vintage.evaluation.metrics import classification_metrics, f1_key, higher_is_better


def test_classification_metrics_by_hand() -> None:
    y = [5, 5, 5, 6, 6, 7]
    pred = [5, 5, 6, 6, 6, 5]

    got = classification_metrics(y, pred)

    assert got["accuracy"] == pytest.approx(4 / 6)
    # recall per class: 5 -> 2/3, 6 -> 2/2, 7 -> 0/1
    assert got["balanced_accuracy"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    # class 5: precision 2/3, recall 2/3; class 6: precision 2/3, recall 1; class 7: never predicted
    assert got["f1_5"] == pytest.approx(2 / 3)
    assert got["f1_6"] == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))
    assert got["f1_7"] == 0.0
    assert set(got) == {"accuracy", "balanced_accuracy", "f1_5", "f1_6", "f1_7"}


def test_f1_key_keeps_names_mlflow_can_store() -> None:
    assert f1_key(np.int64(5)) == "f1_5"
    assert f1_key(np.float64(5.0)) == "f1_5"
    assert f1_key(2.5) == "f1_2.5"
    assert f1_key("very good!") == "f1_very_good_"


def test_classifier_metrics_are_maximized() -> None:
    assert higher_is_better("accuracy") and higher_is_better("cv_balanced_accuracy")
    assert higher_is_better("f1_5")


def test_classification_metrics_refuse_arrays_that_do_not_match() -> None:
    with pytest.raises(ValueError, match="equal, non-zero length"):
        classification_metrics([1, 2], [1])


def test_confusion_matrix_plot_is_a_png() -> None:
    files = plots.confusion_matrix_plot([5, 6, 7, 6], [5, 6, 6, 6])

    assert list(files) == [plots.CONFUSION_MATRIX]
    assert files[plots.CONFUSION_MATRIX].startswith(b"\x89PNG")
