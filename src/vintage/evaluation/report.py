"""The release evaluation report: a candidate model against the production champion on the same holdout
rows, as one self-contained HTML file (styles inline, plots embedded as base64 PNG, no external
resource: it opens from a mail attachment or an artifact store as it is).
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vintage.evaluation import plots
from vintage.evaluation.metrics import (
    EVALUATION_METRICS,
    classification_metrics,
    evaluation_metrics,
    higher_is_better,
)


@dataclass(frozen=True)
class Evaluated:
    """One model's predictions on the holdout.

    Args:
        label: how the report names it (``candidate v4``, ``champion v3 (production)``).
        predictions: one per holdout row, in the rows' order.
        importance: its coefficients or importances, when it has them.
    """

    label: str
    predictions: Any
    importance: plots.Importance | None = None


@dataclass(frozen=True)
class Report:
    """A rendered report: the HTML and the metrics it shows."""

    html: str
    candidate: dict[str, float]
    champion: dict[str, float] | None
    rows: int


@dataclass(frozen=True)
class Context:
    """What the report says about where the numbers come from (shown as a table, escaped)."""

    title: str
    facts: Mapping[str, Any] = field(default_factory=dict)


def build_report(
    y_true: Any,
    candidate: Evaluated,
    champion: Evaluated | None,
    context: Context,
    *,
    classifier: bool = False,
) -> Report:
    """Score both models on the same rows ``y_true`` and render the report.

    A regressor's report has rmse, mae, r2 and acc_*, the mean absolute error by true grade and the
    three prediction plots overlaid; a ``classifier``'s has accuracy, balanced accuracy and F1 per class,
    the recall by true class and each model's confusion matrix.

    Raises:
        ValueError: the predictions do not match the rows in number, or (a regressor's) are not finite.
    """
    import numpy as np

    y = np.asarray(y_true).reshape(-1) if classifier else np.asarray(y_true, dtype="float64").reshape(-1)
    models = [candidate] + ([champion] if champion is not None else [])
    preds = [_predictions(m, len(y), classifier=classifier) for m in models]
    if classifier:
        scores = [classification_metrics(y, p) for p in preds]
        keys = list(dict.fromkeys(k for s in scores for k in s))
        by_class = (
            "Recall by true class (share of its rows predicted exactly)",
            _by_truth_table(models, y, preds, classifier=True),
        )
        images = [
            (plots.confusion_matrix_plot(y, p)[plots.CONFUSION_MATRIX], f"confusion matrix of {m.label}")
            for m, p in zip(models, preds, strict=True)
        ]
    else:
        scores = [evaluation_metrics(y, p) for p in preds]
        keys = list(EVALUATION_METRICS)
        by_class = ("Mean absolute error by true grade", _by_truth_table(models, y, preds, classifier=False))
        overlaid = plots.comparison_plots([(m.label, y, p) for m, p in zip(models, preds, strict=True)])
        images = [(overlaid[name], name) for name in plots.PREDICTION_PLOTS]
    body = [
        f"<h1>{_e(context.title)}</h1>",
        _facts_table({**context.facts, "holdout rows": len(y)}),
        "<h2>Metrics on the same holdout rows</h2>",
        _metrics_table(models, scores, keys),
        f"<h2>{_e(by_class[0])}</h2>",
        by_class[1],
        "<h2>Plots</h2>",
        '<div class="plots">',
        *(_img(png, caption) for png, caption in images),
        "</div>",
    ]
    charts = [(m, m.importance) for m in models if m.importance is not None]
    if charts:
        body += ["<h2>Coefficients and importances</h2>", '<div class="plots">']
        body += [_img(plots.importance_chart(imp, m.label), f"{imp.kind} of {m.label}") for m, imp in charts]
        body.append("</div>")
    if champion is None:
        body.append("<p>No champion: nothing served in production when this report was made.</p>")
    return Report(
        _page(context.title, "\n".join(body)),
        scores[0],
        scores[1] if champion is not None else None,
        len(y),
    )


def _predictions(model: Evaluated, rows: int, *, classifier: bool = False) -> Any:
    import numpy as np

    if classifier:
        pred = np.asarray(model.predictions).reshape(-1)
    else:
        pred = np.asarray(model.predictions, dtype="float64").reshape(-1)
    if len(pred) != rows:
        raise ValueError(f"{model.label}: {len(pred)} predictions for {rows} holdout rows")
    if not classifier and not np.isfinite(pred).all():
        raise ValueError(f"{model.label} predicted NaN or infinite values on the holdout")
    return pred


# ------------------------------------------------------------------------------------------- html

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem;color:#222;max-width:72rem}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5rem 0}td,th{padding:.25rem .7rem;border:1px solid #ddd;
text-align:right}th:first-child,td:first-child{text-align:left}.better{color:#2a7a2a}
.worse{color:#b03030}.plots{display:flex;flex-wrap:wrap;gap:1rem}figure{margin:0}
figcaption{font-size:.8rem;color:#555}
"""


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4f}"


def _facts_table(facts: Mapping[str, Any]) -> str:
    rows = "".join(
        f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in facts.items() if v not in (None, "")
    )
    return f'<table class="facts">{rows}</table>'


def _metrics_table(
    models: Sequence[Evaluated], scores: Sequence[Mapping[str, float]], keys: Sequence[str]
) -> str:
    head = "".join(f"<th>{_e(m.label)}</th>" for m in models)
    diff = "<th>candidate - champion</th>" if len(models) > 1 else ""
    rows = []
    for key in keys:
        cells = "".join(f"<td>{_num(s.get(key))}</td>" for s in scores)
        if len(scores) > 1 and key in scores[0] and key in scores[1]:
            delta = scores[0][key] - scores[1][key]
            higher = higher_is_better(key)
            word = "" if delta == 0 or higher is None else ("better" if (delta > 0) == higher else "worse")
            cells += f'<td class="{word}">{delta:+.4f}{f" ({word})" if word else ""}</td>'
        elif len(scores) > 1:
            cells += "<td>n/a</td>"
        rows.append(f"<tr><td>{_e(key)}</td>{cells}</tr>")
    return f'<table class="metrics"><tr><th>metric</th>{head}{diff}</tr>{"".join(rows)}</table>'


def _by_truth_table(models: Sequence[Evaluated], y: Any, preds: Sequence[Any], *, classifier: bool) -> str:
    """One row per true value (grade or class): its row count and, per model, the mean absolute error on
    those rows (a regressor) or the share of them predicted exactly (a classifier: the class's recall)."""
    import numpy as np

    head = "".join(f"<th>{_e(m.label)}</th>" for m in models)
    rows = []
    for value in np.unique(y):
        mask = y == value
        scores = [
            np.mean(p[mask] == value) if classifier else np.mean(np.abs(p[mask] - value)) for p in preds
        ]
        cells = "".join(f"<td>{_num(float(v))}</td>" for v in scores)
        shown = _e(value) if classifier else f"{value:g}"
        rows.append(f"<tr><td>{shown}</td><td>{int(mask.sum())}</td>{cells}</tr>")
    kind, name = ("by-class", "class") if classifier else ("by-grade", "grade")
    return f'<table class="{kind}"><tr><th>{name}</th><th>rows</th>{head}</tr>{"".join(rows)}</table>'


def _img(png: bytes, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img alt="{_e(caption)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )
