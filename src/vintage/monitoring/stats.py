"""Drift statistics of one column: PSI on fixed bins, the two-sample KS test, missing and out-of-range rates.

Pure NumPy/SciPy on 1-D float arrays, so every number can be checked by hand in a test.

PSI (population stability index) compares the share of values in each bin: ``sum((r - t) * ln(r / t))``
over bins, ``t`` the training share and ``r`` the recent one. The bins are fixed by the training data: the
inner edges are its quantiles at ``1/k, 2/k, ... (k-1)/k`` (repeated values merge bins, so a column of few
distinct values gets fewer bins); the outer bins are open-ended. A bin is ``(left, right]``. Empty bins
count as :data:`EPSILON` so the logarithm stays finite.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

EPSILON: Final = 1e-4
"""The share an empty bin counts as in PSI."""


def quantile_edges(train: FloatArray, bins: int) -> FloatArray:
    """The inner bin edges: the training quantiles at ``1/bins ... (bins-1)/bins``, repeats removed."""
    values = train[~np.isnan(train)]
    if len(values) == 0 or bins < 2:
        return np.empty(0)
    return np.unique(np.quantile(values, np.linspace(0.0, 1.0, bins + 1)[1:-1]))


def shares(values: FloatArray, inner_edges: FloatArray) -> FloatArray:
    """The share of (non-missing) ``values`` per bin ``(e[i-1], e[i]]`` (``len(inner_edges) + 1`` bins)."""
    values = values[~np.isnan(values)]
    counts = np.bincount(np.searchsorted(inner_edges, values, side="left"), minlength=len(inner_edges) + 1)
    return counts / len(values) if len(values) else counts.astype(np.float64)


def psi(train_share: FloatArray, recent_share: FloatArray) -> float:
    """Population stability index of two share vectors (empty bins count as :data:`EPSILON`)."""
    t = np.maximum(train_share, EPSILON)
    r = np.maximum(recent_share, EPSILON)
    return float(np.sum((r - t) * np.log(r / t)))


def ks(train: FloatArray, recent: FloatArray) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov test (non-missing values): ``(statistic, p-value)``; ``(0, 1)`` when a
    side has no values."""
    from scipy.stats import ks_2samp

    a, b = train[~np.isnan(train)], recent[~np.isnan(recent)]
    if len(a) == 0 or len(b) == 0:
        return 0.0, 1.0
    result = ks_2samp(a, b)
    return float(result.statistic), float(result.pvalue)


def missing_rate(recent: FloatArray) -> float:
    """Share of missing (NaN) values."""
    return float(np.isnan(recent).mean()) if len(recent) else 0.0


def out_of_range_rate(recent: FloatArray, low: float, high: float) -> float:
    """Share of values (of all, missing included in the denominator) below ``low`` or above ``high``."""
    if not len(recent):
        return 0.0
    with np.errstate(invalid="ignore"):
        outside = (recent < low) | (recent > high)
    return float(outside.mean())


@dataclass(frozen=True)
class Thresholds:
    """When a column counts as drifted (``monitoring`` in vintage.yaml)."""

    psi: float = 0.2
    ks_p: float = 0.001
    missing_rate: float = 0.01
    out_of_range_rate: float = 0.05
    min_rows: int = 100


@dataclass(frozen=True)
class ColumnDrift:
    """The drift of one column (a feature, or the predictions) against the training data.

    Attributes:
        psi: Population stability index on :attr:`bins`.
        ks_stat: The KS statistic (largest gap between the two empirical CDFs).
        ks_p: The KS test's p-value.
        missing_rate: Share of recent values missing.
        out_of_range_rate: Share of recent values outside the training minimum and maximum.
        flagged: Whether a threshold is crossed.
        reasons: Which thresholds, in words (empty when not flagged).
        bins: Bin edges ``[train min, inner edges..., train max]`` (the outer bins are open-ended).
        train_share: Share of training values per bin (``len(bins) - 1`` numbers).
        recent_share: Share of recent values per bin.
        severity: How far past its worst threshold the column is (> 1: crossed); ranks flagged columns.
    """

    psi: float
    ks_stat: float
    ks_p: float
    missing_rate: float
    out_of_range_rate: float
    flagged: bool
    reasons: list[str]
    bins: list[float]
    train_share: list[float]
    recent_share: list[float]
    severity: float = field(default=0.0, compare=False)

    def to_dict(self) -> dict[str, object]:
        """The JSON form (every number finite)."""
        return {
            "psi": self.psi,
            "ks_stat": self.ks_stat,
            "ks_p": self.ks_p,
            "missing_rate": self.missing_rate,
            "out_of_range_rate": self.out_of_range_rate,
            "flagged": self.flagged,
            "reasons": list(self.reasons),
            "bins": list(self.bins),
            "train_share": list(self.train_share),
            "recent_share": list(self.recent_share),
        }


def compare(train: FloatArray, recent: FloatArray, thresholds: Thresholds, bins: int = 10) -> ColumnDrift:
    """Compare one column's recent values with its training values and judge them against ``thresholds``.

    PSI and KS are judged only with at least ``thresholds.min_rows`` recent rows; the missing and
    out-of-range rates always are.
    """
    train = np.asarray(train, dtype=np.float64)
    recent = np.asarray(recent, dtype=np.float64)
    present = train[~np.isnan(train)]
    low, high = (float(present.min()), float(present.max())) if len(present) else (math.nan, math.nan)
    inner = quantile_edges(train, bins)
    t_share, r_share = shares(train, inner), shares(recent, inner)
    value_psi = psi(t_share, r_share) if (~np.isnan(recent)).any() else 0.0
    ks_stat, ks_p = ks(train, recent)
    missing = missing_rate(recent)
    outside = out_of_range_rate(recent, low, high) if len(present) else 0.0
    reasons: list[str] = []
    ratios = [_ratio(missing, thresholds.missing_rate), _ratio(outside, thresholds.out_of_range_rate)]
    judged = len(recent) >= thresholds.min_rows
    if judged:
        ratios.append(value_psi / thresholds.psi)
        if thresholds.ks_p > 0:
            ratios.append(math.log10(max(ks_p, 1e-300)) / math.log10(thresholds.ks_p))
        if value_psi > thresholds.psi:
            reasons.append(f"PSI {value_psi:.3f} > {thresholds.psi:g}")
        if ks_p < thresholds.ks_p:
            reasons.append(f"KS p {ks_p:.2g} < {thresholds.ks_p:g}")
    if missing > thresholds.missing_rate:
        reasons.append(f"missing {missing:.1%} > {thresholds.missing_rate:.1%}")
    if outside > thresholds.out_of_range_rate:
        reasons.append(f"out of range {outside:.1%} > {thresholds.out_of_range_rate:.1%}")
    edges = [low, *inner.tolist(), high] if len(present) else []
    return ColumnDrift(
        psi=value_psi,
        ks_stat=ks_stat,
        ks_p=ks_p,
        missing_rate=missing,
        out_of_range_rate=outside,
        flagged=bool(reasons),
        reasons=reasons,
        bins=edges,
        train_share=t_share.tolist(),
        recent_share=r_share.tolist(),
        severity=max(ratios),
    )


def _ratio(value: float, limit: float) -> float:
    """``value / limit``; with a limit of 0, anything above it is infinitely far past."""
    if limit > 0:
        return value / limit
    return math.inf if value > 0 else 0.0
