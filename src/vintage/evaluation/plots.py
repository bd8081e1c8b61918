"""Plots of one model's holdout predictions, and its coefficients or feature importances, as PNG bytes.

Rendered with matplotlib's object API on the Agg canvas (no pyplot, no global figure state, no display):
safe in worker processes and threads. Figures are small (PNG of 20-40 kB) and quick to draw: training
renders them for every grid point, in the worker that fitted it.
"""

from __future__ import annotations

import csv
import io
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

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
    """The three plots of holdout predictions (:data:`PREDICTION_PLOTS` -> PNG bytes).

    Each plot is a figure built once per process and re-drawn with new data for every model: creating
    the axes, ticks and labels costs about as much as drawing them, and training draws these for every
    grid point (one call at a time per process: a lock serialises concurrent callers).
    """
    import numpy as np

    y = np.asarray(y_true, dtype="float64").reshape(-1)
    pred = np.asarray(y_pred, dtype="float64").reshape(-1)
    resid = y - pred
    with _LOCK:
        return {
            PREDICTED_VS_ACTUAL: _template(_PredictedVsActual).render(y, pred),
            RESIDUALS_VS_PREDICTED: _template(_ResidualsVsPredicted).render(pred, resid),
            RESIDUAL_HISTOGRAM: _template(_ResidualHistogram).render(resid),
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
    label = "coefficient" if importance.kind == "coefficients" else "impurity importance"
    with _LOCK:
        chart = _template(_Bars, len(ranked))
        return chart.render(
            [n for n, _ in ranked], [v for _, v in ranked], label, title or f"{label}s".capitalize()
        )


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
    ax.set_title("Predicted vs actual (holdout)", fontsize=9, y=1.0)
    _legend(ax, data)


def _residuals_vs_predicted(ax: Axes, data: Sequence[tuple[str, Any, Any]]) -> None:
    for i, (label, p, r) in enumerate(data):
        ax.scatter(p, r, s=6, alpha=0.35, color=_COLORS[i % len(_COLORS)], label=label, linewidths=0)
    ax.axhline(0.0, color="#444444", linewidth=0.8, linestyle="--")
    ax.set_xlabel("predicted")
    ax.set_ylabel("residual (actual - predicted)")
    ax.set_title("Residuals vs predicted (holdout)", fontsize=9, y=1.0)
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
    ax.set_title("Residual histogram (holdout)", fontsize=9, y=1.0)
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


# ------------------------------------------------------------------------------ reused single-model figures

_T = TypeVar("_T")
_LOCK = threading.Lock()
_TEMPLATES: dict[tuple[Any, ...], Any] = {}


def _template(cls: type[_T], *args: Any) -> _T:
    """This process's figure of kind ``cls`` (built on first use)."""
    key = (cls, *args)
    found = _TEMPLATES.get(key)
    if found is None:
        found = _TEMPLATES[key] = cls(*args)
    return cast("_T", found)


def _limits(lo: float, hi: float) -> tuple[float, float]:
    pad = (hi - lo) * 0.05 or 0.5
    return lo - pad, hi + pad


def _save(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, pil_kwargs=_PNG)
    return buf.getvalue()


def _margins(fig: Figure, size: tuple[float, float], left: float = 0.16) -> None:
    fig.subplots_adjust(left=left, right=0.97, bottom=0.6 / size[1], top=1 - 0.3 / size[1])


class _PredictedVsActual:
    def __init__(self) -> None:
        self.fig = _figure(_SIZE)
        self.ax = self.fig.add_subplot()
        self.points = self.ax.scatter([], [], s=6, alpha=0.35, color=_COLORS[0], linewidths=0)
        (self.diagonal,) = self.ax.plot([0, 1], [0, 1], color="#444444", linewidth=0.8, linestyle="--")
        self.ax.set_xlabel("actual")
        self.ax.set_ylabel("predicted")
        self.ax.set_title("Predicted vs actual (holdout)", fontsize=9, y=1.0)
        _margins(self.fig, _SIZE)

    def render(self, y: Any, pred: Any) -> bytes:
        import numpy as np

        self.points.set_offsets(np.column_stack([y, pred]))
        lo, hi = min(float(y.min()), float(pred.min())), max(float(y.max()), float(pred.max()))
        self.diagonal.set_data([lo, hi], [lo, hi])
        self.ax.set_xlim(*_limits(lo, hi))
        self.ax.set_ylim(*_limits(lo, hi))
        return _save(self.fig)


class _ResidualsVsPredicted:
    def __init__(self) -> None:
        self.fig = _figure(_SIZE)
        self.ax = self.fig.add_subplot()
        self.points = self.ax.scatter([], [], s=6, alpha=0.35, color=_COLORS[0], linewidths=0)
        self.ax.axhline(0.0, color="#444444", linewidth=0.8, linestyle="--")
        self.ax.set_xlabel("predicted")
        self.ax.set_ylabel("residual (actual - predicted)")
        self.ax.set_title("Residuals vs predicted (holdout)", fontsize=9, y=1.0)
        _margins(self.fig, _SIZE)

    def render(self, pred: Any, resid: Any) -> bytes:
        import numpy as np

        self.points.set_offsets(np.column_stack([pred, resid]))
        self.ax.set_xlim(*_limits(float(pred.min()), float(pred.max())))
        top = float(np.abs(resid).max())
        self.ax.set_ylim(*_limits(-top, top))
        return _save(self.fig)


class _ResidualHistogram:
    _BINS = 30

    def __init__(self) -> None:
        import numpy as np

        self.fig = _figure(_SIZE)
        self.ax = self.fig.add_subplot()
        self.steps = self.ax.stairs(
            np.zeros(self._BINS), np.arange(self._BINS + 1.0), fill=True, color=_COLORS[0], alpha=0.55
        )
        self.zero = self.ax.axvline(0.0, color="#444444", linewidth=0.8, linestyle="--")
        self.ax.set_xlabel("residual (actual - predicted)")
        self.ax.set_ylabel("rows")
        self.ax.set_title("Residual histogram (holdout)", fontsize=9, y=1.0)
        _margins(self.fig, _SIZE)

    def render(self, resid: Any) -> bytes:
        import numpy as np

        lo, hi = float(resid.min()), float(resid.max())
        if hi - lo < 1e-9:
            lo, hi = lo - 0.5, hi + 0.5
        counts, edges = np.histogram(resid, bins=self._BINS, range=(lo, hi))
        self.steps.set_data(counts, edges)
        self.ax.set_xlim(*_limits(float(edges[0]), float(edges[-1])))
        self.ax.set_ylim(0, max(1, int(counts.max())) * 1.05)
        return _save(self.fig)


class _Bars:
    def __init__(self, n: int) -> None:
        self.size = (4.8, 0.9 + 0.2 * max(n, 3))
        self.fig = _figure(self.size)
        self.ax = self.fig.add_subplot()
        self.bars = self.ax.barh(range(n), [0.0] * n)
        self.ax.axvline(0.0, color="#444444", linewidth=0.6)
        self.ax.set_yticks(range(n), [""] * n, fontsize=7)
        self.title = self.ax.set_title("", fontsize=9, y=1.0)
        _margins(self.fig, self.size, left=0.36)

    def render(self, names: list[str], values: list[float], label: str, title: str) -> bytes:
        for bar, value in zip(self.bars, values, strict=True):
            bar.set_width(value)
            bar.set_color("#c0504d" if value < 0 else "#4f81bd")
        self.ax.set_yticks(range(len(names)), names, fontsize=7)
        lo, hi = min(0.0, *values), max(0.0, *values)
        self.ax.set_xlim(*_limits(lo, hi))
        self.ax.set_xlabel(label)
        self.title.set_text(title)
        return _save(self.fig)
