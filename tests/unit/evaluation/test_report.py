"""The release report: one self-contained HTML file with both models' numbers and embedded plots."""

from __future__ import annotations

import base64
from html.parser import HTMLParser

import numpy as np
import pytest

from vintage.evaluation.plots import Importance
from vintage.evaluation.report import Context, Evaluated, build_report

PNG = b"\x89PNG\r\n\x1a\n"


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.refs += [(tag, k, v or "") for k, v in attrs if k in ("src", "href", "srcset", "data", "action")]

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(page: str) -> _Refs:
    parser = _Refs()
    parser.feed(page)
    return parser


def _holdout() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    y = rng.integers(3, 9, 300).astype("float64")
    return y, y + rng.normal(0, 0.5, 300), y + rng.normal(0.2, 0.8, 300)


def test_the_report_is_self_contained_with_both_models_numbers() -> None:
    y, cand, champ = _holdout()
    imp = Importance("coefficients", ("alcohol", "pH"), (0.3, -0.1))
    report = build_report(
        y,
        Evaluated("candidate v2", cand, imp),
        Evaluated("champion v1", champ),
        Context("wine v2 <report>", {"pipeline run": "r-1"}),
    )
    page = _parse(report.html)

    assert page.refs and all(v.startswith("data:image/png;base64,") for _, _, v in page.refs), page.refs
    assert {t for t, _, _ in page.refs} == {"img"}
    assert not {"script", "link", "iframe", "object"} & set(page.tags)
    assert "url(" not in report.html and "@import" not in report.html
    images = [base64.b64decode(v.split(",", 1)[1]) for _, _, v in page.refs]
    assert len(images) == 4 and all(i.startswith(PNG) for i in images)  # 3 plots + the coefficients

    text = " ".join(page.text)
    for key in ("rmse", "mae", "r2", "acc_0.5", "acc_1.0"):
        assert f"{report.candidate[key]:.4f}" in text
        assert report.champion is not None and f"{report.champion[key]:.4f}" in text
    assert "wine v2 <report>" in text and "<report>" not in report.html  # escaped, shown as text
    err = np.abs(y - cand)
    assert report.candidate["acc_0.5"] == pytest.approx(float(np.mean(err <= 0.5)))
    assert report.champion["rmse"] == pytest.approx(float(np.sqrt(np.mean((y - champ) ** 2))))
    assert report.rows == 300


def test_without_a_champion_the_report_says_so() -> None:
    y, cand, _ = _holdout()
    report = build_report(y, Evaluated("candidate v1", cand), None, Context("wine v1"))
    assert report.champion is None
    assert "No champion" in report.html
    assert report.html.count("data:image/png;base64,") == 3


def test_predictions_that_do_not_fit_the_rows_are_refused() -> None:
    y, cand, _ = _holdout()
    with pytest.raises(ValueError, match="predictions for 300 holdout rows"):
        build_report(y, Evaluated("candidate v1", cand[:-1]), None, Context("x"))
    bad = cand.copy()
    bad[0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        build_report(y, Evaluated("candidate v1", bad), None, Context("x"))


def test_a_classifier_is_reported_with_its_own_metrics_and_confusion_matrices() -> None:
    rng = np.random.default_rng(5)
    y = rng.integers(3, 9, 200)
    cand = np.where(rng.random(200) < 0.7, y, rng.integers(3, 9, 200))
    champ = np.where(rng.random(200) < 0.5, y, 5)  # never predicts 3 or 8 unless right
    report = build_report(
        y,
        Evaluated("candidate v2", cand),
        Evaluated("champion v1", champ),
        Context("wine classes v2"),
        classifier=True,
    )
    text = " ".join(_parse(report.html).text)
    assert "rmse" not in report.candidate and "rmse" not in text
    assert report.candidate["accuracy"] == pytest.approx(float(np.mean(cand == y)))
    assert report.champion is not None
    assert report.champion["accuracy"] == pytest.approx(float(np.mean(champ == y)))
    for key in ("accuracy", "balanced_accuracy", "f1_5"):
        assert f"{report.candidate[key]:.4f}" in text and f"{report.champion[key]:.4f}" in text
    assert "confusion matrix of candidate v2" in text and "confusion matrix of champion v1" in text
    assert report.html.count("data:image/png;base64,") == 2
    recall_8 = float(np.mean(cand[y == 8] == 8))
    assert "Recall by true class" in text and f"{recall_8:.4f}" in text
