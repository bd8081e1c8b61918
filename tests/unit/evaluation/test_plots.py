"""Plots are PNG files; coefficients and importances come from the fitted model, one per feature."""

from __future__ import annotations

import csv
import io

import numpy as np
import pandas as pd
from sklearn.linear_model import ElasticNet
from sklearn.neighbors import KNeighborsRegressor
from sklearn.tree import DecisionTreeRegressor

from vintage.evaluation import plots

PNG = b"\x89PNG\r\n\x1a\n"
FEATURES = ["a", "b", "c"]


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 3))
    return x, 5 + 2.0 * x[:, 0] - 1.0 * x[:, 2] + rng.normal(0, 0.1, 200)


def test_prediction_plots_are_three_pngs() -> None:
    _, y = _data()
    files = plots.prediction_plots(y, y + 0.3)
    assert list(files) == list(plots.PREDICTION_PLOTS)
    assert all(content.startswith(PNG) and len(content) > 2000 for content in files.values())


def test_linear_coefficients_ranked_by_magnitude_in_csv() -> None:
    x, y = _data()
    model = ElasticNet(alpha=0.001).fit(x, y)
    imp = plots.importance_of(model, FEATURES)
    assert imp is not None and imp.kind == "coefficients" and imp.csv_name == "coefficients.csv"
    rows = list(csv.reader(io.StringIO(imp.to_csv())))
    assert rows[0] == ["feature", "coefficient"]
    assert [r[0] for r in rows[1:]] == ["a", "c", "b"]
    assert float(rows[1][1]) == model.coef_[0] and float(rows[2][1]) == model.coef_[2]
    assert plots.importance_chart(imp).startswith(PNG)


def test_tree_importances_and_a_model_without_either() -> None:
    x, y = _data()
    tree = DecisionTreeRegressor(max_depth=3, random_state=0).fit(x, y)
    imp = plots.importance_of(tree, FEATURES)
    assert imp is not None and imp.kind == "feature_importances"
    assert imp.values == tuple(tree.feature_importances_)
    assert plots.importance_of(KNeighborsRegressor().fit(x, y), FEATURES) is None
    assert plots.importance_of(tree, ["only", "two"]) is None  # not one weight per feature


def test_a_reused_figure_keeps_nothing_of_the_model_drawn_before() -> None:
    rng = np.random.default_rng(5)
    y = rng.integers(3, 9, 300).astype("float64")
    good = y + rng.normal(0, 0.3, 300)
    resid = y - good
    # Another model, within the same ranges: 20 rows away from every extreme predicted 0.1 higher.
    inner = np.argsort(np.abs(resid))[:20]
    other_pred = good.copy()
    other_pred[inner] += 0.1
    first = plots.prediction_plots(y, good)
    built = set(plots._TEMPLATES)
    other = plots.prediction_plots(y, other_pred)
    assert set(plots._TEMPLATES) == built  # same axis limits: drawn on the same backgrounds
    again = plots.prediction_plots(y, good)

    assert again == first
    assert other[plots.PREDICTED_VS_ACTUAL] != first[plots.PREDICTED_VS_ACTUAL]
    assert other[plots.RESIDUALS_VS_PREDICTED] != first[plots.RESIDUALS_VS_PREDICTED]


def test_the_points_of_one_grid_share_their_backgrounds_and_axes() -> None:
    # Six models of one holdout whose errors spread from 0.3 to 0.8 grades: axes come from the holdout's
    # scale (whole grades), not from each model, so they are drawn on few backgrounds.
    rng = np.random.default_rng(11)
    y = rng.integers(3, 9, 400).astype("float64")
    plots._TEMPLATES.clear()
    for k in range(6):
        plots.prediction_plots(y, 0.4 * y + 3.5 + rng.normal(0, 0.3 + 0.1 * k, 400))
    scatter = {key[1:] for key in plots._TEMPLATES if key[0] is plots._Scatter}
    assert {k for k in scatter if k[0] == plots.PREDICTED_VS_ACTUAL} == {
        (plots.PREDICTED_VS_ACTUAL, (2.0, 9.0), (2.0, 9.0))
    }
    # Residuals: within 3 grades for most models, 4 for the worst.
    assert {k for k in scatter if k[0] == plots.RESIDUALS_VS_PREDICTED} <= {
        (plots.RESIDUALS_VS_PREDICTED, (2.0, 9.0), (-3.0, 3.0)),
        (plots.RESIDUALS_VS_PREDICTED, (2.0, 9.0), (-4.0, 4.0)),
    }
    assert len(plots._TEMPLATES) <= 6  # of 18 plots


def test_a_bar_chart_background_is_reused_across_rankings() -> None:
    names = tuple("abcdefghijk")
    first = plots.Importance("feature_importances", names, tuple(np.linspace(0.01, 0.17, 11)))
    other = plots.Importance("feature_importances", names, tuple(np.linspace(0.17, 0.01, 11)))
    plots._TEMPLATES.clear()
    one = plots.importance_chart(first)
    two = plots.importance_chart(other)
    assert len(plots._TEMPLATES) == 1  # same count and range (0 to 0.2): one background
    assert two != one  # other names on the bars
    assert plots.importance_chart(first) == one  # nothing of the chart drawn before is left


def test_importance_of_a_pipeline_is_its_last_step_when_the_steps_keep_the_features() -> None:
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.decomposition import PCA
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(3)
    x = pd.DataFrame(rng.normal(size=(40, len(FEATURES))), columns=FEATURES)
    y = x[FEATURES[0]] * 2.0 + rng.normal(size=40) * 0.1
    scaled = make_pipeline(StandardScaler(), Ridge()).fit(x, y)
    wrapped = TransformedTargetRegressor(regressor=make_pipeline(StandardScaler(), Ridge())).fit(x, y)
    reduced = make_pipeline(PCA(n_components=2), Ridge()).fit(x, y)

    imp = plots.importance_of(scaled, FEATURES)
    assert imp is not None and imp.kind == "coefficients"
    assert imp.values == tuple(float(v) for v in scaled[-1].coef_)
    wrapped_imp = plots.importance_of(wrapped, FEATURES)
    assert wrapped_imp is not None
    assert wrapped_imp.values == tuple(float(v) for v in wrapped.regressor_[-1].coef_)
    assert plots.importance_of(reduced, FEATURES) is None  # PCA outputs are not the features
