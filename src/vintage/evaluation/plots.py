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

    Drawn on backgrounds kept per process (see "reused single-model figures" below): training calls this
    for every grid point.
    """
    import numpy as np

    y = np.asarray(y_true, dtype="float64").reshape(-1)
    pred = np.asarray(y_pred, dtype="float64").reshape(-1)
    resid = y - pred
    with _LOCK:
        return {
            PREDICTED_VS_ACTUAL: _scatter_png(PREDICTED_VS_ACTUAL, y, pred),
            RESIDUALS_VS_PREDICTED: _scatter_png(RESIDUALS_VS_PREDICTED, pred, resid),
            RESIDUAL_HISTOGRAM: _histogram_png(resid),
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
#
# Training draws these for every grid point, and most of a figure's cost is its axes: ticks, tick labels,
# axis labels, title (text layout and glyph rendering). So each kind of figure is drawn once per process
# and per set of axis limits, limits rounded outwards to a coarse grid so that the points of one grid
# (same holdout, similar models) mostly share them; that drawing is kept as a background. A model's plot
# restores the background, draws only its data artist on it and encodes the canvas. A lock serialises
# callers: the figures are shared state.

_T = TypeVar("_T")
_LOCK = threading.Lock()
_TEMPLATES: dict[tuple[Any, ...], Any] = {}
_MAX_TEMPLATES: Final = 32


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


def _limits(lo: float, hi: float) -> tuple[float, float]:
    pad = (hi - lo) * 0.05 or 0.5
    return lo - pad, hi + pad


def _coarse(lo: float, hi: float) -> tuple[float, float]:
    """``lo``..``hi`` (plus 3 % of the range) widened outwards to multiples of a step of at least a sixth
    of the range (1-2-2.5-5 series): data of similar range get the same limits."""
    import math

    span = hi - lo if hi - lo > 1e-12 * max(abs(lo), abs(hi), 1.0) else max(abs(hi), 1.0)
    base = 10 ** math.floor(math.log10(span / 6))
    step = next(m * base for m in (1, 2, 2.5, 5, 10) if m * base >= span / 6)
    margin = 0.03 * span
    return math.floor((lo - margin) / step) * step, math.ceil((hi + margin) / step) * step


def _save(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, pil_kwargs=_PNG)
    return buf.getvalue()


def _margins(fig: Figure, size: tuple[float, float], left: float = 0.16) -> None:
    fig.subplots_adjust(left=left, right=0.97, bottom=0.6 / size[1], top=1 - 0.3 / size[1])


class _Background:
    """A figure drawn once without its data artist (``animated``), kept as pixels."""

    def __init__(
        self, title: str, xlabel: str, ylabel: str, xlim: tuple[float, float], ylim: tuple[float, float]
    ) -> None:
        self.fig = _figure(_SIZE)
        self.ax = self.fig.add_subplot()
        self.ax.set_xlabel(xlabel)
        self.ax.set_ylabel(ylabel)
        self.ax.set_title(title, fontsize=9, y=1.0)
        self.ax.set_xlim(*xlim)
        self.ax.set_ylim(*ylim)
        _margins(self.fig, _SIZE)

    def keep(self) -> None:
        """Draw everything but the animated artists and keep the pixels."""
        canvas = self.fig.canvas
        canvas.draw()
        self.pixels = canvas.copy_from_bbox(self.fig.bbox)  # type: ignore[attr-defined]

    def png(self, artist: Any) -> bytes:
        """The background with ``artist`` drawn on it, as PNG."""
        import numpy as np
        from matplotlib.image import imsave

        canvas = self.fig.canvas
        canvas.restore_region(self.pixels)  # type: ignore[attr-defined]
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
    BINS: Final = 30

    def __init__(self, xlim: tuple[float, float], ylim: tuple[float, float]) -> None:
        import numpy as np

        super().__init__("Residual histogram (holdout)", "residual (actual - predicted)", "rows", xlim, ylim)
        self.ax.axvline(0.0, color="#444444", linewidth=0.8, linestyle="--", zorder=3)
        self.edges = np.linspace(xlim[0], xlim[1], self.BINS + 1)
        self.steps = self.ax.stairs(
            np.zeros(self.BINS), self.edges, fill=True, color=_COLORS[0], alpha=0.55, animated=True
        )
        self.keep()

    def render(self, counts: Any) -> bytes:
        self.steps.set_data(counts, self.edges)
        return self.png(self.steps)


def _scatter_png(kind: str, x: Any, y: Any) -> bytes:
    if kind == PREDICTED_VS_ACTUAL:  # one range for both axes: the diagonal is the diagonal
        xlim = ylim = _coarse(min(float(x.min()), float(y.min())), max(float(x.max()), float(y.max())))
    else:
        xlim = _coarse(float(x.min()), float(x.max()))
        top = float(abs(y).max())
        ylim = _coarse(-top, top)
    return _template(_Scatter, kind, xlim, ylim).render(x, y)


def _histogram_png(resid: Any) -> bytes:
    import numpy as np

    xlim = _coarse(float(resid.min()), float(resid.max()))
    edges = np.linspace(xlim[0], xlim[1], _Histogram.BINS + 1)
    counts, _ = np.histogram(resid, bins=edges)
    peak = int(counts.max())
    return _template(_Histogram, xlim, (0.0, _coarse(0.0, max(peak, 1))[1])).render(counts)


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
