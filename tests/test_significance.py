from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats

from synthrank.errors import SynthrankError
from synthrank.evaluate import compare_per_query, paired_randomization_test, paired_t_test


def _exact_sign_flip_p(a: np.ndarray, b: np.ndarray) -> float:
    diff = b - a
    observed = abs(diff.mean())
    means = [
        abs((np.array(signs) * diff).mean())
        for signs in itertools.product([-1.0, 1.0], repeat=len(diff))
    ]
    return float(np.mean(np.array(means) >= observed - 1e-12))


def test_randomization_test_matches_exact_enumeration() -> None:
    rng = np.random.default_rng(3)
    a = rng.random(12)
    b = a + rng.normal(0.08, 0.15, 12)
    exact = _exact_sign_flip_p(a, b)
    estimate = paired_randomization_test(a, b, resamples=40_000, seed=1)
    assert estimate == pytest.approx(exact, abs=0.01)


def test_randomization_test_agrees_with_scipy_permutation_test() -> None:
    rng = np.random.default_rng(5)
    a, b = rng.random(40), rng.random(40) + 0.05
    reference = stats.permutation_test(
        (a, b),
        lambda x, y: np.mean(y - x),
        permutation_type="samples",
        n_resamples=20_000,
        random_state=0,
    ).pvalue
    assert paired_randomization_test(a, b, resamples=20_000) == pytest.approx(reference, abs=0.02)


def test_t_test_matches_scipy_and_handles_degenerate_cases() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.random(30), rng.random(30)
    assert paired_t_test(a, b) == pytest.approx(stats.ttest_rel(b, a).pvalue)
    assert paired_t_test(a, a) == 1.0
    assert paired_t_test(a, a + 0.1) == 0.0


def test_compare_per_query() -> None:
    a = {"q1": {"m": 0.1}, "q2": {"m": 0.3}, "q3": {"m": 0.2}}
    b = {"q1": {"m": 0.4}, "q2": {"m": 0.5}, "q3": {"m": 0.3}}
    (result,) = compare_per_query(a, b, ["m"])
    assert result.mean_a == pytest.approx(0.2)
    assert result.delta == pytest.approx(0.2)
    assert result.n_queries == 3
    assert result.p_value == pytest.approx(stats.ttest_rel([0.4, 0.5, 0.3], [0.1, 0.3, 0.2]).pvalue)
    with pytest.raises(SynthrankError, match="1 only in A, 0 only in B"):
        compare_per_query(a, {"q1": b["q1"], "q2": b["q2"]}, ["m"])


def test_confidence_interval_of_the_mean_difference_matches_the_t_table() -> None:
    from synthrank.evaluate.significance import paired_confidence_interval

    # Differences 1, 2, 3: mean 2, standard error 1 / sqrt(3); t(0.975, 2 df) = 4.3027 (tables).
    low, high = paired_confidence_interval([0.0, 0.0, 0.0], [1.0, 2.0, 3.0])
    half = 4.302652729911275 / 3**0.5
    assert low == pytest.approx(2 - half, abs=1e-9) and high == pytest.approx(2 + half, abs=1e-9)
    assert paired_confidence_interval([1.0, 2.0], [1.5, 2.5]) == (0.5, 0.5)
    (c,) = compare_per_query(
        {"a": {"m": 0.0}, "b": {"m": 0.0}, "c": {"m": 0.0}},
        {"a": {"m": 1.0}, "b": {"m": 2.0}, "c": {"m": 3.0}},
        ["m"],
    )
    assert (c.ci_low, c.ci_high) == (low, high) and c.ci_low < c.delta < c.ci_high
