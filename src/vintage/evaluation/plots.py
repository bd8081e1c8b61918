"""Plots of one model's holdout predictions, and its coefficients or feature importances, as PNG bytes.

Rendered with matplotlib's object API on the Agg canvas (no pyplot, no global figure state, no display):
safe in worker processes and threads. Figures are small (PNG of 20-40 kB) and quick to draw: training
renders them for every grid point, in the worker that fitted it.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Sequence

    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

PREDICTED_VS_ACTUAL: Final = "predicted_vs_actual.png"
RESIDUALS_VS_PREDICTED: Final = "residuals_vs_predicted.png"
RESIDUAL_HISTOGRAM: Final = "residual_histogram.png"
PREDICTION_PLOTS: Final = (PREDICTED_VS_ACTUAL, RESIDUALS_VS_PREDICTED, RESIDUAL_HISTOGRAM)
"""The artifact names of the three prediction plots."""

ARTIFACT_DIR: Final = "evaluation"
"""Where a run keeps these files among its artifacts."""

_SIZE: Final = (4.8, 3.6)  # inches
_DPI: Final = 80
# zlib level 1: a third of the encoding time of the default level 6, files ~15 % larger.
_PNG: Final = {"compress_level": 1}


@dataclass(frozen=True)
class Importance:
    """A model's per-feature weights: ``kind`` is ``coefficients`` (linear models, signed, in the
    features' own units) or ``feature_importances`` (trees, impurity-based, non-negative)."""

    kind: str
    features: tuple[str, ...]
    values: tuple[float, ...]

    @property
    def csv_name(self) -> str:
        """``coefficients.csv`` or ``feature_importances.csv``."""
        return f"{self.kind}.csv"

    @property
    def png_name(self) -> str:
        """``coefficients.png`` or ``feature_importances.png``."""
        return f"{self.kind}.png"

    def to_csv(self) -> str:
        """``feature,<kind>`` rows, largest magnitude first."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["feature", self.kind.rstrip("s") if self.kind == "coefficients" else "importance"])
        for name, value in self.ranked():
            writer.writerow([name, repr(value)])
        return buf.getvalue()

    def ranked(self) -> list[tuple[str, float]]:
        """(feature, value) pairs, largest magnitude first (ties: feature order)."""
        return sorted(zip(self.features, self.values, strict=True), key=lambda fv: -abs(fv[1]))


def importance_of(model: Any, features: Sequence[str]) -> Importance | None:
    """The coefficients (``coef_``) or impurity importances (``feature_importances_``) of a fitted
    model, one per feature; ``None`` when it has neither (k-NN, boosting without them, a model whose
    weights do not match the features one to one)."""
    import numpy as np

    for attr, kind in (("coef_", "coefficients"), ("feature_importances_", "feature_importances")):
        try:
            raw = getattr(model, attr, None)
        except Exception:  # a property that raises when not applicable (e.g. a non-linear kernel)
            raw = None
        if raw is None:
            continue
        values = np.asarray(raw, dtype="float64").reshape(-1)
        if len(values) == len(features) and np.isfinite(values).all():
            return Importance(kind, tuple(features), tuple(float(v) for v in values))
    return None


def prediction_plots(y_true: Any, y_pred: Any) -> dict[str, bytes]:
    """The three plots of holdout predictions (:data:`PREDICTION_PLOTS` -> PNG bytes)."""
    import numpy as np

    y = np.asarray(y_true, dtype="float64").reshape(-1)
    pred = np.asarray(y_pred, dtype="float64").reshape(-1)
    resid = y - pred
    return {
        PREDICTED_VS_ACTUAL: _png(lambda ax: _predicted_vs_actual(ax, [("model", y, pred)])),
        RESIDUALS_VS_PREDICTED: _png(lambda ax: _residuals_vs_predicted(ax, [("model", pred, resid)])),
        RESIDUAL_HISTOGRAM: _png(lambda ax: _residual_histogram(ax, [("model", resid)])),
    }


def comparison_plots(series: Sequence[tuple[str, Any, Any]]) -> dict[str, bytes]:
    """The three plots with several models overlaid: ``series`` is ``(label, y_true, y_pred)`` each."""
    import numpy as np

    data = [
        (label, np.asarray(y, dtype="float64").reshape(-1), np.asarray(p, dtype="float64").reshape(-1))
        for label, y, p in series
    ]
    return {
        PREDICTED_VS_ACTUAL: _png(lambda ax: _predicted_vs_actual(ax, data)),
        RESIDUALS_VS_PREDICTED: _png(
            lambda ax: _residuals_vs_predicted(ax, [(lbl, p, y - p) for lbl, y, p in data])
        ),
        RESIDUAL_HISTOGRAM: _png(lambda ax: _residual_histogram(ax, [(lbl, y - p) for lbl, y, p in data])),
    }


def importance_chart(importance: Importance, title: str | None = None) -> bytes:
    """A horizontal bar chart of ``importance`` (largest magnitude on top) as PNG bytes."""
    ranked = importance.ranked()[::-1]

    def draw(ax: Axes) -> None:
        names = [n for n, _ in ranked]
        values = [v for _, v in ranked]
        colors = ["#c0504d" if v < 0 else "#4f81bd" for v in values]
        ax.barh(range(len(values)), values, color=colors)
        ax.set_yticks(range(len(values)), names, fontsize=7)
        ax.axvline(0.0, color="#444444", linewidth=0.6)
        label = "coefficient" if importance.kind == "coefficients" else "impurity importance"
        ax.set_xlabel(label)
        ax.set_title(title or label.capitalize() + "s", fontsize=9)

    return _png(draw, size=(4.8, 0.9 + 0.2 * max(len(ranked), 3)), left=0.36)


# ------------------------------------------------------------------------------------------- drawing

_COLORS: Final = ("#4f81bd", "#c0504d", "#9bbb59", "#8064a2")


def _predicted_vs_actual(ax: Axes, data: Sequence[tuple[str, Any, Any]]) -> None:
    lo = min(min(float(y.min()), float(p.min())) for _, y, p in data)
    hi = max(max(float(y.max()), float(p.max())) for _, y, p in data)
    for i, (label, y, p) in enumerate(data):
        # Grades are integers: transparency shows where the predictions of one grade pile up.
        ax.scatter(y, p, s=6, alpha=0.35, color=_COLORS[i % len(_COLORS)], label=label, linewidths=0)
    ax.plot([lo, hi], [lo, hi], color="#444444", linewidth=0.8, linestyle="--")
    ax.set_xlabel("actual")
    ax.set_ylabel("predicted")
    ax.set_title("Predicted vs actual (holdout)", fontsize=9)
    _legend(ax, data)


def _residuals_vs_predicted(ax: Axes, data: Sequence[tuple[str, Any, Any]]) -> None:
    for i, (label, p, r) in enumerate(data):
        ax.scatter(p, r, s=6, alpha=0.35, color=_COLORS[i % len(_COLORS)], label=label, linewidths=0)
    ax.axhline(0.0, color="#444444", linewidth=0.8, linestyle="--")
    ax.set_xlabel("predicted")
    ax.set_ylabel("residual (actual - predicted)")
    ax.set_title("Residuals vs predicted (holdout)", fontsize=9)
    _legend(ax, data)


def _residual_histogram(ax: Axes, data: Sequence[tuple[str, Any]]) -> None:
    # One set of bins for every model (comparable bars), and a range even when all residuals are equal.
    lo = min(float(r.min()) for _, r in data)
    hi = max(float(r.max()) for _, r in data)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    for i, (label, r) in enumerate(data):
        ax.hist(r, bins=30, range=(lo, hi), alpha=0.55, color=_COLORS[i % len(_COLORS)], label=label)
    ax.axvline(0.0, color="#444444", linewidth=0.8, linestyle="--")
    ax.set_xlabel("residual (actual - predicted)")
    ax.set_ylabel("rows")
    ax.set_title("Residual histogram (holdout)", fontsize=9)
    _legend(ax, data)


def _legend(ax: Axes, data: Sequence[Any]) -> None:
    if len(data) > 1:
        ax.legend(fontsize=7, markerscale=2)


def _png(draw: Any, size: tuple[float, float] = _SIZE, left: float = 0.16) -> bytes:
    fig = _figure(size)
    draw(fig.add_subplot())
    # Fixed margins: tight_layout would measure every label first, a second draw pass (~40 % of the time).
    fig.subplots_adjust(left=left, right=0.97, bottom=0.6 / size[1], top=1 - 0.3 / size[1])
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, pil_kwargs=_PNG)
    return buf.getvalue()


def _figure(size: tuple[float, float]) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig
