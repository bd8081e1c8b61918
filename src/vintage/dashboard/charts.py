"""Charts drawn on the server as inline SVG: a run's timeline, and the drift page's histograms and PSI
bars. Every text that reaches the markup is escaped."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from html import escape
from typing import Any

from markupsafe import Markup

from vintage.dashboard.views import Timeline, nice_ticks

LABEL_W, ROW_H, CHART_W = 170, 22, 640  # timeline geometry (px)


def _n(value: float) -> str:
    return f"{value:.1f}"


def _seconds(value: float) -> str:
    if value < 60:
        return f"{value:.1f} s" if value < 10 else f"{value:.0f} s"
    return f"{value / 60:.1f} min"


def timeline_svg(line: Timeline) -> Markup:
    """The timeline as horizontal bars: one row per stage (bold) and step, coloured by status."""
    height = ROW_H * len(line.bars) + 28
    width = LABEL_W + CHART_W + 70
    scale = CHART_W / line.span_s
    parts = [
        f'<svg class="timeline" role="img" aria-label="run timeline" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for tick in nice_ticks(line.span_s):
        x = LABEL_W + tick * scale
        if x > LABEL_W + CHART_W + 1:
            break
        parts.append(
            f'<line class="tick" x1="{_n(x)}" y1="0" x2="{_n(x)}" y2="{height - 20}"/>'
            f'<text class="axis" x="{_n(x)}" y="{height - 6}" text-anchor="middle">{_seconds(tick)}</text>'
        )
    for row, bar in enumerate(line.bars):
        y = row * ROW_H
        label = escape(bar.label + (f" [{bar.environment}]" if bar.environment else ""))
        indent = 6 + 14 * bar.level
        css = "stage" if bar.level == 0 else "step"
        parts.append(f'<g class="bar {css} s-{escape(bar.status)}" data-name="{escape(bar.label)}">')
        parts.append(f'<text class="label" x="{indent}" y="{y + 15}">{label}</text>')
        if bar.start_s is not None and bar.seconds is not None:
            x = LABEL_W + bar.start_s * scale
            w = max(bar.seconds * scale, 2.0)
            parts.append(
                f'<rect x="{_n(x)}" y="{y + 4}" width="{_n(w)}" height="{ROW_H - 8}" rx="2">'
                f"<title>{escape(bar.label)}: {escape(bar.status)}, {_seconds(bar.seconds)}</title></rect>"
                f'<text class="took" x="{_n(x + w + 4)}" y="{y + 15}">{_seconds(bar.seconds)}</text>'
            )
        else:
            parts.append(f'<text class="took" x="{LABEL_W + 2}" y="{y + 15}">{escape(bar.status)}</text>')
        parts.append("</g>")
    parts.append("</svg>")
    return Markup("".join(parts))


def _bin_labels(bins: Sequence[float], count: int) -> list[str]:
    def short(v: float) -> str:
        return f"{v:.3g}"

    if len(bins) == count + 1:  # edges
        return [f"{short(a)}–{short(b)}" for a, b in itertools.pairwise(bins)]
    if len(bins) == count:
        return [short(v) for v in bins]
    return [str(i + 1) for i in range(count)]


def histogram_svg(name: str, stats: dict[str, Any], width: int = 360, height: int = 150) -> Markup:
    """Training share against recent share per bin of one feature (or the predictions), side by side."""
    train = [float(v) for v in stats.get("train_share") or []]
    recent = [float(v) for v in stats.get("recent_share") or []]
    count = max(len(train), len(recent))
    if count == 0:
        return Markup('<p class="muted">no bins</p>')
    train += [0.0] * (count - len(train))
    recent += [0.0] * (count - len(recent))
    top = max([*train, *recent, 1e-9])
    plot_h = height - 34
    slot = (width - 10) / count
    bar_w = max(slot / 2 - 1, 1.0)
    labels = _bin_labels([float(b) for b in stats.get("bins") or []], count)
    parts = [
        f'<svg class="hist" role="img" aria-label="{escape(name)} distribution" viewBox="0 0 {width} '
        f'{height}" width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for i in range(count):
        x = 5 + i * slot
        for j, (share, css) in enumerate(((train[i], "train"), (recent[i], "recent"))):
            h = plot_h * share / top
            parts.append(
                f'<rect class="{css}" x="{_n(x + j * (bar_w + 1))}" y="{_n(14 + plot_h - h)}" '
                f'width="{_n(bar_w)}" height="{_n(h)}"><title>{escape(labels[i])}: {css} '
                f"{share:.1%}</title></rect>"
            )
    parts.append(
        f'<line class="base" x1="5" y1="{14 + plot_h}" x2="{width - 5}" y2="{14 + plot_h}"/>'
        f'<text class="axis" x="5" y="{height - 6}">{escape(labels[0])}</text>'
        f'<text class="axis" x="{width - 5}" y="{height - 6}" text-anchor="end">{escape(labels[-1])}</text>'
        '<rect class="train" x="5" y="2" width="8" height="8"/>'
        '<text class="axis" x="16" y="10">training</text>'
        '<rect class="recent" x="80" y="2" width="8" height="8"/>'
        '<text class="axis" x="91" y="10">recent</text>'
        "</svg>"
    )
    return Markup("".join(parts))


def psi_svg(report: dict[str, Any], width: int = 640) -> Markup:
    """One bar per feature (and the predictions): its PSI, with the threshold as a dashed line; flagged
    ones are marked."""
    rows = list((report.get("features") or {}).items())
    if report.get("prediction"):
        rows.append(("prediction", report["prediction"]))
    if not rows:
        return Markup('<p class="muted">no features</p>')
    limit = float((report.get("thresholds") or {}).get("psi", 0.2))
    top = max([float(s.get("psi", 0.0)) for _, s in rows] + [limit * 1.25, 1e-9])
    label_w, row_h, plot_w = 170, 20, width - 230
    height = row_h * len(rows) + 24
    parts = [
        f'<svg class="psi" role="img" aria-label="PSI per feature" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for i, (name, stats) in enumerate(rows):
        y = i * row_h
        psi = float(stats.get("psi", 0.0))
        css = "flagged" if stats.get("flagged") else "ok"
        w = max(plot_w * psi / top, 1.0)
        parts.append(
            f'<g class="{css}" data-name="{escape(name)}"><text class="label" x="4" y="{y + 14}">'
            f"{escape(name)}</text>"
            f'<rect x="{label_w}" y="{y + 4}" width="{_n(w)}" height="{row_h - 8}"/>'
            f'<text class="took" x="{_n(label_w + w + 4)}" y="{y + 14}">{psi:.3f}</text></g>'
        )
    x = label_w + plot_w * limit / top
    parts.append(
        f'<line class="limit" x1="{_n(x)}" y1="0" x2="{_n(x)}" y2="{height - 18}"/>'
        f'<text class="axis" x="{_n(x)}" y="{height - 4}" text-anchor="middle">threshold {limit:g}</text>'
        "</svg>"
    )
    return Markup("".join(parts))
