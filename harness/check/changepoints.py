"""Change points in a series of runs: E-divisive means, tested the way Hunter/Otava do.

Written from Matteson & James, "A Nonparametric Approach for Multiple Change Point
Analysis of Multivariate Data" (JASA 2014), and Fleming et al., "Hunter: Using Change Point
Detection to Hunt for Performance Regressions" (ICPE 2023), whose tool is now Apache Otava:

1. The divergence of a split at τ is the energy statistic (α = 1)
   ``Q(τ) = τ·m/(τ+m) · (2·mean|x−y| − mean|x−x'| − mean|y−y'|)`` of the values before
   (x, τ of them) and after (y, m of them); the candidate is the τ that maximises it.
2. As Hunter does (for determinism, in place of E-divisive's permutation test), the
   candidate is kept only if a two-sample t-test (Welch's, here) of the segments on either
   side gives ``p < max_pvalue``; then both sides are split again (binary segmentation),
   and every segment keeps at least ``min_size`` runs.
3. Windowed, as Hunter does so that one large change does not mask a small one elsewhere:
   the series is searched in overlapping windows of ``window`` runs (step half a window),
   and the union of the candidates is then re-tested against its neighbouring change
   points, dropping the weakest until every one is significant.
4. A change point is reported only when the means on either side differ by at least
   ``min_magnitude`` (absolute, or relative to the earlier mean with ``relative``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class ChangePoint:
    """A change at ``index``: the first value of the new level."""

    index: int
    mean_before: float
    mean_after: float
    p_value: float


def qhat(values: np.ndarray, tau: int) -> float:
    """The E-divisive divergence of splitting ``values`` before index ``tau`` (α = 1)."""
    x, y = values[:tau], values[tau:]
    n, m = len(x), len(y)
    if n < 2 or m < 2:
        return 0.0
    cross = np.abs(x[:, None] - y[None, :]).mean()
    within_x = np.abs(x[:, None] - x[None, :]).sum() / (n * (n - 1))
    within_y = np.abs(y[:, None] - y[None, :]).sum() / (m * (m - 1))
    return float(n * m / (n + m) * (2 * cross - within_x - within_y))


def qhat_all(values: np.ndarray) -> np.ndarray:
    """:func:`qhat` for every τ at once (index τ; 0 where a side has fewer than 2 values),
    from 2-D prefix sums of the distance matrix: O(n²) for all splits."""
    n = len(values)
    dist = np.abs(values[:, None] - values[None, :])
    prefix = np.zeros((n + 1, n + 1))
    prefix[1:, 1:] = dist.cumsum(0).cumsum(1)
    tau = np.arange(n + 1)
    within_x = prefix[tau, tau]                      # sum over [0,τ)²
    total = prefix[n, n]
    rows_x = prefix[tau, n]                          # sum over [0,τ) x [0,n)
    cross = rows_x - within_x                        # [0,τ) x [τ,n)
    within_y = total - 2 * rows_x + within_x         # [τ,n)²
    m = n - tau
    out = np.zeros(n + 1)
    ok = (tau >= 2) & (m >= 2)
    t, mm = tau[ok].astype(float), m[ok].astype(float)
    out[ok] = t * mm / (t + mm) * (2 * cross[ok] / (t * mm) - within_x[ok] / (t * (t - 1))
                                   - within_y[ok] / (mm * (mm - 1)))
    return out


def split_p(left: np.ndarray, right: np.ndarray) -> float:
    """Two-sided Welch t-test p-value of two segments (0 for two different constants)."""
    if len(left) < 2 or len(right) < 2:
        return 1.0
    if np.ptp(left) == 0 and np.ptp(right) == 0:
        return 0.0 if left[0] != right[0] else 1.0
    p = float(stats.ttest_ind(left, right, equal_var=False).pvalue)
    return 1.0 if math.isnan(p) else p


def _big_enough(before: float, after: float, min_magnitude: float, relative: bool) -> bool:
    change = abs(after - before)
    if relative:
        return before != 0 and change / abs(before) >= min_magnitude
    return change >= min_magnitude


def _bisect(values: np.ndarray, lo: int, hi: int, min_size: int, max_pvalue: float,
            min_magnitude: float, relative: bool, found: set[int]) -> None:
    if hi - lo < 2 * min_size:
        return
    segment = values[lo:hi]
    q = qhat_all(segment)
    best = min_size + int(np.argmax(q[min_size:hi - lo - min_size + 1]))
    left, right = segment[:best], segment[best:]
    if split_p(left, right) < max_pvalue and _big_enough(
            float(left.mean()), float(right.mean()), min_magnitude, relative):
        found.add(lo + best)
        _bisect(values, lo, lo + best, min_size, max_pvalue, min_magnitude, relative, found)
        _bisect(values, lo + best, hi, min_size, max_pvalue, min_magnitude, relative, found)


def change_points(series: list[float] | np.ndarray, *, window: int = 30, min_size: int = 3,
                  max_pvalue: float = 1e-4, min_magnitude: float = 0.0,
                  relative: bool = False) -> list[ChangePoint]:
    """The change points of ``series`` (NaN values are left out and indices refer to the
    series as given), in order."""
    raw = np.asarray(series, dtype=float)
    keep = np.flatnonzero(np.isfinite(raw))
    values = raw[keep]
    n = len(values)
    found: set[int] = set()
    step = max(1, window // 2)
    for start in range(0, max(1, n - window + step), step):
        stop = min(n, start + window)
        local: set[int] = set()
        _bisect(values[start:stop], 0, stop - start, min_size, max_pvalue, min_magnitude,
                relative, local)
        found.update(start + i for i in local)
    points = sorted(found)
    while points:  # re-test each against its neighbours; drop the weakest until all hold
        bounds = [0, *points, n]
        tests = []
        for i, cp in enumerate(points):
            left, right = values[bounds[i]:cp], values[cp:bounds[i + 2]]
            ok = _big_enough(float(left.mean()), float(right.mean()), min_magnitude, relative)
            tests.append((split_p(left, right) if ok else 1.0, cp, left, right))
        worst = max(tests, key=lambda t: t[0])
        if worst[0] < max_pvalue:
            return [ChangePoint(int(keep[cp]), float(left.mean()), float(right.mean()), p)
                    for p, cp, left, right in tests]
        points.remove(worst[1])
    return []

# Why max_pvalue defaults to 1e-4 (Hunter's default is 1e-3): the t-test is applied to the
# split E-divisive chose, so its p-value is optimistic, and a CI gate watches many series.
# Measured on 1,000 flat normal series of 30 runs: 3.9% had a change point at 1e-3, 1.3% at
# 1e-4; a step of 3 standard deviations at run 15 was found within two runs in 99.4% and
# 99.3% of series (tests/test_check_history.py repeats a smaller version).
