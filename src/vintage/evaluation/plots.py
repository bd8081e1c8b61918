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

CONFUSION_MATRIX: Final = "confusion_matrix.png"
"""A classifier's plot (instead of the three prediction plots)."""

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

    model = _final_estimator(model, features)
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


def _final_estimator(model: Any, features: Sequence[str]) -> Any:
    """The estimator whose weights belong to the input features: a Pipeline's last step when the steps
    before it keep the features one to one (a scaler; the coefficients are then per scaled feature), a
    TransformedTargetRegressor's fitted regressor; else the model itself."""
    regressor = getattr(model, "regressor_", None)
    if regressor is not None and hasattr(regressor, "fit"):
        return _final_estimator(regressor, features)
    steps = getattr(model, "steps", None)
    if not isinstance(steps, list) or not steps or not hasattr(model, "named_steps"):
        return model
    if len(steps) > 1:
        try:
            names = list(model[:-1].get_feature_names_out(list(features)))
        except Exception:  # a step without get_feature_names_out: its outputs cannot be named
            return model
        if names != list(features):
            return model
    return _final_estimator(steps[-1][1], features)


def prediction_plots(y_true: Any, y_pred: Any) -> dict[str, bytes]:
    """The three plots of holdout predictions (:data:`PREDICTION_PLOTS` -> PNG bytes).

    Drawn on backgrounds kept per process (see "reused single-model figures" below): training calls this
    for every grid point.
    """
    import numpy as np

    y = np.asarray(y_true, dtype="float64").reshape(-1)
    pred = np.asarray(y_pred, dtype="float64").reshape(-1)
    resid = y - pred
    with _LOCK:
        first, second = _scatter_pngs(y, pred, resid)
        return {
            PREDICTED_VS_ACTUAL: first,
            RESIDUALS_VS_PREDICTED: second,
            RESIDUAL_HISTOGRAM: _histogram_png(y, resid),
        }


def confusion_matrix_plot(y_true: Any, y_pred: Any) -> dict[str, bytes]:
    """A classifier's holdout confusion matrix (rows: true class, columns: predicted; counts in the
    cells) as ``{CONFUSION_MATRIX: PNG bytes}``."""
    import numpy as np
    from sklearn.metrics import confusion_matrix

    y = np.asarray(y_true).reshape(-1)
    pred = np.asarray(y_pred).reshape(-1)
    labels = np.unique(np.concatenate([y, pred]))
    counts = confusion_matrix(y, pred, labels=labels)
    names = [str(v.item() if hasattr(v, "item") else v) for v in labels]

    def draw(ax: Axes) -> None:
        ax.imshow(counts, cmap="Blues")
        ax.set_xticks(range(len(names)), names, fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        high = counts.max() / 2 if counts.size else 0
        for (i, j), n in np.ndenumerate(counts):
            ax.text(
                j, i, str(n), ha="center", va="center", fontsize=7, color="white" if n > high else "black"
            )
        ax.set_xlabel("predicted")
        ax.set_ylabel("actual")
        ax.set_title("Confusion matrix (holdout)", fontsize=9, y=1.0)

    with _LOCK:
        return {CONFUSION_MATRIX: _png(draw)}


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
    """A horizontal bar chart of ``importance``, one bar per feature in the features' order from the top, as
    PNG bytes."""
    label = "coefficient" if importance.kind == "coefficients" else "impurity importance"
    with _LOCK:
        return _bars_png(importance, label, title or f"{label}s".capitalize())


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
#
# Training draws these for every grid point, and most of a figure's cost is its axes: ticks, tick labels,
# axis labels, title (text layout and glyph rendering, ~50 ms). So each kind of figure is drawn once per
# process and per set of axis limits, and that drawing is kept as a background; a model's plot restores
# the background, draws only its data artists on it and encodes the canvas (~3 ms a plot). A lock
# serialises callers: the figures are shared state.
#
# The limits come from the holdout's own scale, not from each model's spread: one step of the target
# (1-2-2.5-5 series, at least a sixth of its range: one grade for wine quality) rounds every limit
# outwards, and histogram heights are a share of the holdout's rows from a short series. So the points of
# one grid share their backgrounds (a handful per process instead of one per point), and their plots
# have the same axes: runs compare side by side in MLflow's compare view.

_T = TypeVar("_T")
_LOCK = threading.Lock()
_TEMPLATES: dict[tuple[Any, ...], Any] = {}
_MAX_TEMPLATES: Final = 32
_SHARES: Final = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)
"""Heights of a residual histogram, as a share of the holdout's rows."""
_BINS_PER_STEP: Final = 5


def _template(cls: type[_T], *args: Any) -> _T:
    """This process's figure of kind ``cls`` for ``args`` (built on first use; the oldest is dropped
    beyond :data:`_MAX_TEMPLATES`)."""
    key = (cls, *args)
    found = _TEMPLATES.get(key)
    if found is None:
        if len(_TEMPLATES) >= _MAX_TEMPLATES:
            _TEMPLATES.pop(next(iter(_TEMPLATES)))
        found = _TEMPLATES[key] = cls(*args)
    return cast("_T", found)


def _nice(value: float) -> float:
    """The smallest number of the 1-2-2.5-5 series (times a power of ten) that is >= ``value`` > 0."""
    import math

    base = 10.0 ** math.floor(math.log10(value))
    return next(m * base for m in (1, 2, 2.5, 5, 10) if m * base >= value * (1 - 1e-12))


def _step(y: Any) -> float:
    """The holdout target's rounding step: at least a sixth of its range (1 for grades 3 to 8)."""
    lo, hi = float(y.min()), float(y.max())
    span = hi - lo if hi - lo > 1e-12 * max(abs(lo), abs(hi), 1.0) else max(abs(hi), 1.0)
    return _nice(span / 6)


def _outward(lo: float, hi: float, step: float) -> tuple[float, float]:
    """``lo``..``hi`` widened by 3 % of ``step`` and rounded outwards to multiples of it."""
    import math

    margin = 0.03 * step
    return math.floor((lo - margin) / step) * step, math.ceil((hi + margin) / step) * step


def _save(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, pil_kwargs=_PNG)
    return buf.getvalue()


def _margins(fig: Figure, size: tuple[float, float], left: float = 0.16) -> None:
    fig.subplots_adjust(left=left, right=0.97, bottom=0.6 / size[1], top=1 - 0.3 / size[1])


class _Background:
    """A figure drawn once without its data artists (``animated``), kept as pixels."""

    def __init__(
        self,
        title: str,
        xlabel: str,
        ylabel: str,
        xlim: tuple[float, float],
        ylim: tuple[float, float],
        size: tuple[float, float] = _SIZE,
        left: float = 0.16,
    ) -> None:
        self.fig = _figure(size)
        self.ax = self.fig.add_subplot()
        self.ax.set_xlabel(xlabel)
        self.ax.set_ylabel(ylabel)
        self.ax.set_title(title, fontsize=9, y=1.0)
        self.ax.set_xlim(*xlim)
        self.ax.set_ylim(*ylim)
        _margins(self.fig, size, left)

    def keep(self) -> None:
        """Draw everything but the animated artists and keep the pixels."""
        canvas = self.fig.canvas
        canvas.draw()
        self.pixels = canvas.copy_from_bbox(self.fig.bbox)  # type: ignore[attr-defined]

    def png(self, *artists: Any) -> bytes:
        """The background with ``artists`` drawn on it, as PNG."""
        import numpy as np
        from matplotlib.image import imsave

        canvas = self.fig.canvas
        canvas.restore_region(self.pixels)  # type: ignore[attr-defined]
        for artist in artists:
            self.ax.draw_artist(artist)
        buf = io.BytesIO()
        imsave(buf, np.asarray(canvas.buffer_rgba()), format="png", pil_kwargs=_PNG)  # type: ignore[attr-defined]
        return buf.getvalue()


class _Scatter(_Background):
    def __init__(self, kind: str, xlim: tuple[float, float], ylim: tuple[float, float]) -> None:
        if kind == PREDICTED_VS_ACTUAL:
            super().__init__("Predicted vs actual (holdout)", "actual", "predicted", xlim, ylim)
            self.ax.plot(xlim, xlim, color="#444444", linewidth=0.8, linestyle="--")
        else:
            super().__init__(
                "Residuals vs predicted (holdout)", "predicted", "residual (actual - predicted)", xlim, ylim
            )
            self.ax.axhline(0.0, color="#444444", linewidth=0.8, linestyle="--")
        self.points = self.ax.scatter([], [], s=6, alpha=0.35, color=_COLORS[0], linewidths=0, animated=True)
        self.keep()

    def render(self, x: Any, y: Any) -> bytes:
        import numpy as np

        self.points.set_offsets(np.column_stack([x, y]))
        return self.png(self.points)


class _Histogram(_Background):
    def __init__(self, xlim: tuple[float, float], ylim: tuple[float, float], bins: int) -> None:
        import numpy as np

        super().__init__("Residual histogram (holdout)", "residual (actual - predicted)", "rows", xlim, ylim)
        self.ax.axvline(0.0, color="#444444", linewidth=0.8, linestyle="--", zorder=3)
        self.edges = np.linspace(xlim[0], xlim[1], bins + 1)
        self.steps = self.ax.stairs(
            np.zeros(bins), self.edges, fill=True, color=_COLORS[0], alpha=0.55, animated=True
        )
        self.keep()

    def render(self, counts: Any) -> bytes:
        self.steps.set_data(counts, self.edges)
        return self.png(self.steps)


def _residual_limits(resid: Any, step: float) -> tuple[float, float]:
    top = _outward(0.0, float(abs(resid).max()), step)[1]
    return -top, top


def _scatter_pngs(y: Any, pred: Any, resid: Any) -> tuple[bytes, bytes]:
    step = _step(y)
    # One range for both axes of the first plot (the diagonal is the diagonal), and the same range for the
    # predictions in the second.
    both = _outward(min(float(y.min()), float(pred.min())), max(float(y.max()), float(pred.max())), step)
    first = _template(_Scatter, PREDICTED_VS_ACTUAL, both, both).render(y, pred)
    second = _template(_Scatter, RESIDUALS_VS_PREDICTED, both, _residual_limits(resid, step))
    return first, second.render(pred, resid)


def _histogram_png(y: Any, resid: Any) -> bytes:
    import numpy as np

    step = _step(y)
    xlim = _residual_limits(resid, step)
    bins = max(1, round((xlim[1] - xlim[0]) / step * _BINS_PER_STEP))
    counts, _ = np.histogram(resid, bins=np.linspace(xlim[0], xlim[1], bins + 1))
    share = 1.05 * int(counts.max()) / max(len(resid), 1)
    top = len(resid) * next((s for s in _SHARES if s >= share), 1.0)
    return _template(_Histogram, xlim, (0.0, float(top)), bins).render(counts)


class _Bars(_Background):
    """A horizontal bar chart of one value per feature whose x range is ``xlim``. The feature names are
    part of the background, in the features' own order from the top (a feature has the same row in every
    run's chart, so runs compare at a glance; the CSV beside it ranks them): only the bars are drawn per
    chart. Drawing the names for every chart (text layout and glyphs) cost three times the rest."""

    def __init__(self, names: tuple[str, ...], xlim: tuple[float, float], label: str, title: str) -> None:
        n = len(names)
        size = (4.8, 0.9 + 0.2 * max(n, 3))
        super().__init__(title, label, "", xlim, (n - 0.4, -0.6), size=size, left=0.36)
        self.ax.axvline(0.0, color="#444444", linewidth=0.6)
        self.ax.set_yticks(range(n), list(names), fontsize=7)
        self.ax.tick_params(axis="y", length=0)
        self.bars = list(self.ax.barh(range(n), [0.0] * n, animated=True))
        self.keep()

    def render(self, values: tuple[float, ...]) -> bytes:
        for bar, value in zip(self.bars, values, strict=True):
            bar.set_width(value)
            bar.set_color("#c0504d" if value < 0 else "#4f81bd")
        return self.png(*self.bars)


def _bars_png(importance: Importance, label: str, title: str) -> bytes:
    values = importance.values
    top = _nice(max(max(abs(v) for v in values), 1e-12) * 1.02)
    xlim = (-top if min(values) < 0 else 0.0, top)
    chart = _template(_Bars, importance.features, xlim, label, title)
    return chart.render(values)
