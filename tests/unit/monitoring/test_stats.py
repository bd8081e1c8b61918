"""PSI, KS and the rates on data small enough to check by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vintage.monitoring.stats import (
    EPSILON,
    Thresholds,
    compare,
    ks,
    missing_rate,
    out_of_range_rate,
    psi,
    quantile_edges,
    shares,
)

NAN = math.nan


def test_bins_are_training_quantiles_and_repeats_merge() -> None:
    assert quantile_edges(np.arange(1.0, 11.0), 2).tolist() == [5.5]
    assert quantile_edges(np.arange(1.0, 11.0), 4).tolist() == [3.25, 5.5, 7.75]
    assert quantile_edges(np.array([1.0, 1.0, 1.0, 1.0, 2.0]), 4).tolist() == [1.0]  # all quartiles are 1


def test_shares_use_right_closed_bins_and_ignore_missing() -> None:
    edges = np.array([2.0, 4.0])
    # (-inf, 2]: 1, 2   (2, 4]: 3, 4   (4, inf): 5
    assert shares(np.array([1.0, 2.0, 3.0, 4.0, 5.0, NAN]), edges).tolist() == [0.4, 0.4, 0.2]


def test_psi_by_hand() -> None:
    # (0.25 - 0.5) ln(0.25/0.5) + (0.75 - 0.5) ln(0.75/0.5) = 0.25 ln 2 + 0.25 ln 1.5
    expected = 0.25 * math.log(2) + 0.25 * math.log(1.5)
    assert psi(np.array([0.5, 0.5]), np.array([0.25, 0.75])) == pytest.approx(expected)
    assert psi(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == 0.0
    # an empty bin counts as EPSILON
    assert psi(np.array([0.5, 0.5]), np.array([1.0, 0.0])) == pytest.approx(
        (1 - 0.5) * math.log(1 / 0.5) + (EPSILON - 0.5) * math.log(EPSILON / 0.5)
    )


def test_ks_by_hand() -> None:
    stat, p = ks(np.array([1.0, 2.0, 3.0, 4.0]), np.array([5.0, 6.0, 7.0, 8.0]))
    assert stat == 1.0
    assert p == pytest.approx(2 / math.comb(8, 4))  # exact test: 2 of the 70 splits are this extreme
    stat, p = ks(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 2.0, 3.0, 4.0, NAN]))
    assert (stat, p) == (0.0, 1.0)


def test_rates() -> None:
    assert missing_rate(np.array([1.0, NAN, 3.0, NAN])) == 0.5
    assert out_of_range_rate(np.array([0.0, 5.0, 11.0]), 1.0, 10.0) == pytest.approx(2 / 3)
    assert out_of_range_rate(np.array([1.0, 10.0, NAN]), 1.0, 10.0) == 0.0  # the bounds are in range


def test_a_shifted_column_is_flagged_and_an_unshifted_one_is_not() -> None:
    rng = np.random.default_rng(7)
    train = rng.normal(10.0, 1.0, 5_000)
    same = compare(train, rng.normal(10.0, 1.0, 500), Thresholds())
    assert not same.flagged and same.reasons == []
    assert same.psi < 0.05 and same.ks_p > 0.001
    shifted = compare(train, rng.normal(13.0, 1.0, 500), Thresholds())
    assert shifted.flagged
    assert shifted.psi > 1.0 and shifted.ks_p < 1e-20
    assert shifted.out_of_range_rate > 0.05
    assert [r.split()[0] for r in shifted.reasons] == ["PSI", "KS", "out"]
    assert len(shifted.bins) == len(shifted.train_share) + 1 == 11
    assert shifted.bins[0] == train.min() and shifted.bins[-1] == train.max()
    assert sum(shifted.recent_share) == pytest.approx(1.0)
    assert shifted.severity > same.severity


def test_few_rows_judge_only_the_rates() -> None:
    train = np.arange(0.0, 100.0)
    few = compare(train, np.array([90.0, 95.0, 99.0]), Thresholds(min_rows=10))
    assert few.psi > 0.2  # computed ...
    assert not few.flagged  # ... not judged
    outside = compare(train, np.array([50.0, 500.0, NAN]), Thresholds(min_rows=10))
    assert outside.reasons == ["missing 33.3% > 1.0%", "out of range 33.3% > 5.0%"]
