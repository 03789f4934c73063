"""The statistics of ``trialbench check``: intervals for thresholds, tests for regressions.

Thresholds (no multiple-test correction: each is a statement about one metric):

- a rate is judged on its equal-tailed 95% Jeffreys interval, Beta(k+½, n−k+½). It
  *passes* only if the whole interval satisfies the threshold (for ``> x`` the lower bound
  clears x: the supplier has shown it meets the SLA), and is a *breach* only if the whole
  interval violates it (for ``> x`` the upper bound is below x: the data show it misses).
  In between it is *inconclusive*, which is reported and never a pass. The burden of proof
  is on each side in turn, so neither a lucky small sample passes nor an unlucky one fails.
  A threshold at the boundary (``>= 1``, ``<= 0``, ``== 0``, ``== 1``, ``!= ...``) is a
  zero-tolerance rule and is judged on the count, exactly: one failure is a breach;
- a percentile is judged on its distribution-free 95% confidence interval from order
  statistics (binomial): pass if the upper bound is below the limit, breach if the lower
  bound is above it; with too few orders the upper bound does not exist and the check
  cannot pass;
- a value (count, money from balances) is measured exactly and judged on the point.

Regressions (new versus baseline, one-sided, flagged only when worse by more than the
margin *and* significant at alpha after Holm's correction over all regression checks):

- tails (p90/p95/p99): the bootstrap of the difference ``q(new) − (1+margin)·q(base)``;
  the bootstrap distribution of a sample quantile is computed exactly (the count of
  resampled values at or below each order statistic is binomial), so the p-value has no
  Monte Carlo noise and costs O(n log n);
- shifts (the median): Mann–Whitney U of new against baseline scaled by (1+margin);
- rates: Beta posteriors (Jeffreys prior) of both; the "p-value" is the posterior
  probability that the new rate is *not* worse by more than the margin;
- exact values: flagged when worse by more than the margin (no sampling error).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import stats

from harness.metrics import jeffreys

Decision = Literal["pass", "breach", "inconclusive"]

LEVEL = 0.95
"""Confidence level of the threshold intervals (two-sided)."""


def rate_interval(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """The equal-tailed Jeffreys interval of ``k`` of ``n``."""
    return jeffreys(k, n, level)


def judge_interval(lo: float, hi: float, op: str, x: float) -> Decision:
    """Pass if every value in ``[lo, hi]`` satisfies ``op x``, breach if none does."""
    if op in (">", ">="):
        ok_all = lo > x if op == ">" else lo >= x
        bad_all = hi <= x if op == ">" else hi < x
    elif op in ("<", "<="):
        ok_all = hi < x if op == "<" else hi <= x
        bad_all = lo >= x if op == "<" else lo > x
    else:
        raise ValueError(f"operator {op} is judged on counts, not intervals")
    return "pass" if ok_all else "breach" if bad_all else "inconclusive"


def judge_rate_exact(k: int, n: int, op: str, x: float) -> Decision:
    """A zero-tolerance rate rule, judged on the count: ``>= 1``/``== 1`` need k == n,
    ``<= 0``/``== 0`` need k == 0; ``!=`` the opposite."""
    at_one, at_zero = k == n, k == 0
    if x >= 1:
        holds = {">=": at_one, "==": at_one, "!=": not at_one, "<": not at_one,
                 "<=": True, ">": False}[op]
    else:
        holds = {"<=": at_zero, "==": at_zero, "!=": not at_zero, ">": not at_zero,
                 ">=": True, "<": False}[op]
    return "pass" if holds else "breach"


def is_boundary(op: str, x: float) -> bool:
    """Whether a rate threshold is a zero-tolerance rule judged on the count."""
    return op in ("==", "!=") or (op == ">=" and x >= 1) or (op == "<=" and x <= 0) \
        or (op == "<" and x >= 1) or (op == ">" and x <= 0)


def quantile_interval(samples: np.ndarray, q: float, level: float = LEVEL
                      ) -> tuple[float, float]:
    """Distribution-free interval of the ``q`` quantile from order statistics; a bound
    that the sample is too small to give is ``-inf``/``inf``."""
    x = np.sort(np.asarray(samples, dtype=float))
    n = len(x)
    if n == 0:
        return (float("-inf"), float("inf"))
    a = (1 - level) / 2
    lo_rank = int(stats.binom.ppf(a, n, q))  # P(Bin <= lo_rank - 1) <= a
    hi_rank = int(stats.binom.ppf(1 - a, n, q)) + 1
    lo = float(x[lo_rank - 1]) if lo_rank >= 1 else float("-inf")
    hi = float(x[hi_rank - 1]) if hi_rank <= n else float("inf")
    return (lo, hi)


def bootstrap_quantile_dist(samples: np.ndarray, q: float
                            ) -> tuple[np.ndarray, np.ndarray]:
    """The exact bootstrap distribution of the (inverted-cdf) ``q`` quantile: the distinct
    values and their probabilities."""
    x = np.sort(np.asarray(samples, dtype=float))
    n = len(x)
    values, counts = np.unique(x, return_counts=True)
    at_or_below = np.cumsum(counts)
    need = int(np.ceil(q * n))
    cdf = stats.binom.sf(need - 1, n, at_or_below / n)
    cdf[-1] = 1.0
    return values, np.diff(np.concatenate(([0.0], cdf)))


def bootstrap_tail_p(base: np.ndarray, new: np.ndarray, q: float, margin: float) -> float:
    """One-sided bootstrap p-value for ``q(new) > (1+margin)·q(base)``: the bootstrap
    probability that ``q*(new) − (1+margin)·q*(base) <= 0``."""
    b_val, b_p = bootstrap_quantile_dist(base, q)
    n_val, n_p = bootstrap_quantile_dist(new, q)
    scaled = b_val * (1 + margin)
    # P(scaled base* >= v) for each new value v
    tail = np.concatenate((np.cumsum(b_p[::-1])[::-1], [0.0]))
    idx = np.searchsorted(scaled, n_val, side="left")
    return float(min(1.0, max(0.0, np.sum(n_p * tail[idx]))))


def bootstrap_quantile_interval(samples: np.ndarray, q: float, level: float = LEVEL
                                ) -> tuple[float, float]:
    """Percentile interval of the exact bootstrap distribution of the ``q`` quantile."""
    values, p = bootstrap_quantile_dist(samples, q)
    cdf = np.cumsum(p)
    a = (1 - level) / 2
    lo = values[min(int(np.searchsorted(cdf, a)), len(values) - 1)]
    hi = values[min(int(np.searchsorted(cdf, 1 - a)), len(values) - 1)]
    return (float(lo), float(hi))


def shift_p(base: np.ndarray, new: np.ndarray, margin: float) -> float:
    """Mann–Whitney U p-value that ``new`` is stochastically greater than
    ``base·(1+margin)`` (one-sided)."""
    result = stats.mannwhitneyu(new, np.asarray(base) * (1 + margin), alternative="greater")
    return float(result.pvalue)


def rate_worse_p(k_base: int, n_base: int, k_new: int, n_new: int, margin: float,
                 higher_is_better: bool) -> float:
    """Posterior probability, Jeffreys Beta priors, that the new rate is NOT worse than the
    baseline by more than ``margin`` (small = evidence of a regression)."""
    if not higher_is_better:  # a rate where lower is better: compare the complements
        k_base, k_new = n_base - k_base, n_new - k_new
    base = stats.beta(k_base + 0.5, n_base - k_base + 0.5)
    new = stats.beta(k_new + 0.5, n_new - k_new + 0.5)

    # P(base > new + margin) as a sum over cells of the new rate's posterior: the mass of
    # each cell times P(base > its middle + margin). Cells are equal steps of a normal score,
    # so the tails are resolved finely; no density is evaluated (it is infinite at 0 or 1
    # when k is 0 or n). Accurate to about 1e-6, ample for p-values compared with alpha/m.
    z = np.linspace(-9.0, 9.0, 2001)
    mass = np.diff(stats.norm.cdf(z))
    middle = new.ppf(stats.norm.cdf((z[:-1] + z[1:]) / 2))
    value = float(np.sum(mass * base.sf(middle + margin)))
    return float(min(1.0, max(0.0, 1.0 - value)))


def holm(p_values: list[float], alpha: float) -> list[bool]:
    """Holm's step-down procedure: which hypotheses are rejected at family-wise ``alpha``."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    m = len(p_values)
    rejected = [False] * m
    for rank, i in enumerate(order):
        if p_values[i] <= alpha / (m - rank):
            rejected[i] = True
        else:
            break
    return rejected


def holm_threshold(p_values: list[float], i: int, alpha: float) -> float:
    """The alpha Holm compares ``p_values[i]`` with (``alpha / (m - rank)``)."""
    rank = sorted(p_values).index(p_values[i])
    return alpha / (len(p_values) - rank)
