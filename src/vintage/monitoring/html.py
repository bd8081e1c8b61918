"""The monitor report as one self-contained HTML page: tables and plots (PNG, base64-embedded), no
external resource of any kind (no script, no stylesheet, no font from elsewhere)."""

from __future__ import annotations

import base64
import html
import io
from typing import TYPE_CHECKING

from vintage.monitoring.report import PREDICTION, MonitorReport, iso_utc
from vintage.monitoring.stats import ColumnDrift

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; max-width: 1100px; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th:first-child, td:first-child, th:last-child, td:last-child { text-align: left; }
tr.flagged td { background: #fde2e1; }
.verdict { padding: 0.6em 1em; border-radius: 4px; display: inline-block; font-weight: bold; }
.drift { background: #fde2e1; color: #8a1c12; } .ok { background: #e3f4e1; color: #1d5e1a; }
.grid { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; } figcaption { font-size: 0.9em; text-align: center; }
.note { color: #666; font-size: 0.9em; }
"""


def render(report: MonitorReport) -> str:
    """The HTML page of ``report``."""
    e = html.escape
    worst = report.worst()
    verdict = (
        f'<p class="verdict drift">drift: {e(worst[0])} ({e("; ".join(worst[1].reasons))})</p>'
        if worst
        else '<p class="verdict ok">no drift past the thresholds</p>'
    )
    t = report.thresholds
    since = f"since {iso_utc(report.since)}" if report.since else "the whole log"
    rows = "".join(_row(name, drift) for name, drift in report.columns().items())
    plots = "".join(
        f'<figure><img alt="{e(name)}" src="data:image/png;base64,{_plot_bins(name, d)}">'
        f"<figcaption>{e(name)}</figcaption></figure>"
        for name, d in report.columns().items()
    )
    lat = report.latency_ms
    judged = (
        ""
        if report.judged
        else f'<p class="note">Only {report.sampled_rows} logged rows (fewer than {t.min_rows}): PSI and KS '
        "are shown but not judged.</p>"
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>vintage monitor: {e(report.environment)}</title>
<style>{_STYLE}</style></head>
<body>
<h1>Drift report: {e(report.environment)}</h1>
{verdict}
<p>Window: {e(since)}; rows logged from {e(iso_utc(report.window[0]))} to {e(iso_utc(report.window[1]))}.
{report.sampled_rows:,} logged rows (about {report.rows:,} scored); model version(s)
{e(", ".join(str(v) for v in report.model_versions) or "unknown")}.
Reference: the training split of {e(report.dataset or "the data in vintage.yaml")}.</p>
{judged}
<p>Thresholds: PSI &gt; {t.psi:g}, KS p &lt; {t.ks_p:g}, missing &gt; {t.missing_rate:.1%},
out of range &gt; {t.out_of_range_rate:.1%} (<code>monitoring</code> in vintage.yaml).</p>
<h2>Columns</h2>
<table><thead><tr><th>column</th><th>PSI</th><th>KS stat</th><th>KS p</th><th>missing</th>
<th>out of range</th><th>flag</th></tr></thead><tbody>{rows}</tbody></table>
<h2>Distributions (training vs recent, share per bin)</h2>
<div class="grid">{plots}</div>
<h2>Traffic</h2>
<p>Latency (request start to prediction): p50 {lat["p50"]:.3f} ms, p95 {lat["p95"]:.3f} ms,
p99 {lat["p99"]:.3f} ms.</p>
<div class="grid">
<figure><img alt="latency" src="data:image/png;base64,{_plot_latency(report.latency_sample)}">
<figcaption>latency of logged requests</figcaption></figure>
<figure><img alt="volume" src="data:image/png;base64,{_plot_volume(report.times)}">
<figcaption>logged rows over time</figcaption></figure>
</div>
</body></html>
"""


def _row(name: str, d: ColumnDrift) -> str:
    e = html.escape
    cls = ' class="flagged"' if d.flagged else ""
    label = f"<b>{e(name)}</b>" if name == PREDICTION else e(name)
    flag = e("; ".join(d.reasons)) if d.flagged else "ok"
    return (
        f"<tr{cls}><td>{label}</td><td>{d.psi:.3f}</td><td>{d.ks_stat:.3f}</td><td>{d.ks_p:.2g}</td>"
        f"<td>{d.missing_rate:.1%}</td><td>{d.out_of_range_rate:.1%}</td><td>{flag}</td></tr>"
    )


def _figure() -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(4.2, 2.8), dpi=80, layout="constrained")


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _plot_bins(name: str, d: ColumnDrift) -> str:
    fig = _figure()
    ax = fig.add_subplot()
    n = len(d.train_share)
    xs = list(range(n))
    ax.bar([x - 0.2 for x in xs], d.train_share, width=0.4, label="training", color="#7a9cc6")
    ax.bar([x + 0.2 for x in xs], d.recent_share, width=0.4, label="recent", color="#d9534f")
    if len(d.bins) == n + 1:
        labels = [f"≤{d.bins[i + 1]:.3g}" for i in range(n - 1)] + [
            f">{d.bins[n - 1]:.3g}" if n > 1 else "all"
        ]
        ax.set_xticks(xs, labels, rotation=60, fontsize=7)
    ax.set_ylabel("share")
    ax.set_title(f"{name}: PSI {d.psi:.3f}", fontsize=9, color="#8a1c12" if d.flagged else "#222")
    ax.legend(fontsize=7)
    return _png(fig)


def _plot_latency(latency_ms: list[float]) -> str:
    fig = _figure()
    ax = fig.add_subplot()
    ax.hist(latency_ms, bins=40, color="#7a9cc6")
    ax.set_xlabel("ms")
    ax.set_ylabel("requests")
    return _png(fig)


def _plot_volume(times: list[float]) -> str:
    import numpy as np

    fig = _figure()
    ax = fig.add_subplot()
    if times:
        t = np.asarray(times)
        span = max(float(t[-1] - t[0]), 1.0)
        counts, edges = np.histogram(t - t[0], bins=min(40, max(1, len(t))))
        ax.plot(edges[:-1], counts, drawstyle="steps-post", color="#7a9cc6")
        ax.set_xlim(0, span)
    ax.set_xlabel("seconds into the window")
    ax.set_ylabel("rows")
    return _png(fig)
