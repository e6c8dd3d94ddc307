"""Paired significance tests between two systems measured on the same queries.

- Paired t-test (two-sided) on per-query differences, through SciPy.
- Paired randomization test (Fisher; Smucker, Allan & Carterette, CIKM 2007): under the null
  hypothesis each query's pair of scores is exchangeable, so the sign of each difference is
  flipped at random; p is the share of resamples whose |mean difference| reaches the observed
  one, counting the observed assignment itself ((hits + 1) / (resamples + 1)).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from synthrank.errors import SynthrankError

TestName = Literal["t", "randomization"]
TESTS: tuple[str, ...] = ("t", "randomization")


def paired_t_test(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of a paired t-test; 1.0 when every difference is zero."""
    from scipy import stats

    diff = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    if len(diff) < 2 or np.allclose(diff, diff[0]):
        return 1.0 if len(diff) < 2 or diff[0] == 0 else 0.0
    return float(stats.ttest_rel(b, a).pvalue)


def paired_confidence_interval(
    a: Sequence[float], b: Sequence[float], level: float = 0.95
) -> tuple[float, float]:
    """The ``level`` confidence interval of the mean of ``b - a`` (Student's t over the paired
    differences, SciPy's ``ttest_rel(...).confidence_interval``); a single point when every
    difference is the same."""
    from scipy import stats

    diff = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    if len(diff) < 2 or np.allclose(diff, diff[0]):
        mean = float(diff.mean()) if len(diff) else 0.0
        return mean, mean
    interval = stats.ttest_rel(b, a).confidence_interval(confidence_level=level)
    return float(interval.low), float(interval.high)


def paired_randomization_test(
    a: Sequence[float], b: Sequence[float], *, resamples: int = 10_000, seed: int = 0
) -> float:
    """Two-sided p-value of a paired sign-flip randomization test on the mean difference."""
    diff = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    if len(diff) == 0:
        return 1.0
    observed = abs(diff.mean())
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, resamples, 1000):
        count = min(1000, resamples - start)
        signs = rng.choice(np.array([-1.0, 1.0]), size=(count, len(diff)))
        means = np.abs((signs * diff).mean(axis=1))
        hits += int(np.count_nonzero(means >= observed - 1e-12))
    return (hits + 1) / (resamples + 1)


@dataclass(frozen=True)
class Comparison:
    measure: str
    mean_a: float
    mean_b: float
    p_value: float
    n_queries: int
    ci_low: float = float("nan")
    ci_high: float = float("nan")
    """95% confidence interval of ``delta`` (paired t; see :func:`paired_confidence_interval`)."""

    @property
    def delta(self) -> float:
        return self.mean_b - self.mean_a


def compare_per_query(
    per_query_a: Mapping[str, Mapping[str, float]],
    per_query_b: Mapping[str, Mapping[str, float]],
    measures: Sequence[str],
    *,
    test: TestName = "t",
) -> list[Comparison]:
    """Compare system B against system A on each measure, query by query."""
    if set(per_query_a) != set(per_query_b):
        only_a = len(set(per_query_a) - set(per_query_b))
        only_b = len(set(per_query_b) - set(per_query_a))
        raise SynthrankError(
            f"the two runs cover different queries ({only_a} only in A, {only_b} only in B); "
            "a paired test needs the same queries: evaluate both on the same dataset and split"
        )
    queries = sorted(per_query_a)
    results = []
    for measure in measures:
        a = [per_query_a[q][measure] for q in queries]
        b = [per_query_b[q][measure] for q in queries]
        p = paired_t_test(a, b) if test == "t" else paired_randomization_test(a, b)
        low, high = paired_confidence_interval(a, b)
        results.append(
            Comparison(measure, float(np.mean(a)), float(np.mean(b)), p, len(queries), low, high)
        )
    return results
