"""Ranking suppliers with honest uncertainty: gates, fixed-anchor value functions, draws.

Pure pandas/scipy/numpy (never Locust). The steps, each documented where it is done:

1. **Metrics** from :func:`harness.metrics.supplier_metrics`.
2. **Gates** (:func:`gate_findings`): every way a supplier takes money without delivering
   value is a finding, as data (supplier, kind, count, n, share, interval, threshold): a
   fake (never minted), resold, duplicate or wrong-face-value code, a refund completed but
   never credited, an oversold order (accepted, then failed for stock, partly filled, or
   "success" without a code), an undisclosed fee (a balance drop beyond the listed
   prices), and validity whose Jeffreys upper bound is under the floor. A gated supplier's
   tier is "gated", and it ranks below every supplier no gate holds, whatever its score.
3. **Criteria**: ``sla_share`` (trial SLA share), ``validity`` (valid share of checked
   codes), ``refunds`` (share of refunds completed, credited and within
   ``refund_deadline_s``), ``cost`` (comprehensive cost rate), ``load_errors`` (share of
   burst orders never accepted) and ``load_latency`` (p95 acceptance latency, last third of
   the burst over the first). Each maps to [0, 1] through a piecewise-linear **value
   function with fixed anchors** (clipped at both ends), never through the other
   suppliers' data: adding a supplier cannot swap two others.
4. **Missing data**: a criterion no supplier has data for is *not measured*: it drops out
   and the weights of the rest are renormalised, the same for every supplier, and it is
   listed in each supplier's ``missing_criteria``. A supplier lacking data that another
   has is *unknown* there: each draw takes its value uniformly in [0, 1], so its score
   interval widens by up to that criterion's weight (no evidence, no credit and no
   blame, only width). If the measured criteria other than cost carry less than
   ``min_measured_weight`` of the policy's non-cost weight, price would decide: then no
   supplier gets a tier and none is above another.
5. **Draws**: for each supplier and criterion, ``draws`` samples from a generator seeded by
   (seed, supplier, criterion), so a supplier's draws never depend on who else is ranked.
   Rates: Jeffreys posteriors Beta(k+½, n−k+½). Cost: bootstrap over sold orders. Load
   latency: block bootstrap by time blocks of ``block_s``, within the first and last
   thirds. Load errors: Jeffreys (assumes independent orders).
6. **Scores** per draw (weighted sum of values) → median and 95% interval, ranks per draw →
   rank interval, P(A beats B) (ties in a draw count half). "A above B" only at
   P ≥ ``beats_min_prob``; otherwise they tie (:func:`tie_groups`).
7. **Tiers** from absolute thresholds: "gated" when a gate holds; else "insufficient
   evidence" when the score interval is wider than ``max_interval_width``; else gold,
   silver, bronze when P(score ≥ min_score) ≥ min_prob, else "none".
8. **What would settle it** (:func:`orders_to_settle`): by simulation, how many orders per
   supplier a rerun needs so that a tie separates, or an interval narrows to a tier, in
   ``settle_assurance`` of reruns, if the observed rates hold.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import numpy as np
import pandas as pd

from harness.metrics import (
    burst_thirds,
    check_fees,
    jeffreys,
    rows_by_supplier,
    seconds,
    sold_mask,
    supplier_metrics,
    units_delivered,
)
from harness.ranking_config import (
    CRITERIA,
    GATED,
    INSUFFICIENT,
    Anchor,
    Criterion,
    RankingConfig,
)

FloatArray = np.ndarray[tuple[int, ...], np.dtype[np.float64]]
_BOOTSTRAP_CELLS = 2_000_000  # most (draws x orders) index cells held at once
_BLOCK_CELLS = 60_000_000  # most (blocks x orders) counts the p95 bisection holds (int32)


def value(points: Anchor, x: FloatArray | float) -> FloatArray:
    """The piecewise-linear value function through ``points``, clipped to [0, 1]."""
    xs = np.array([p[0] for p in points], dtype=float)
    vs = np.array([p[1] for p in points], dtype=float)
    order = np.argsort(xs)
    out: FloatArray = np.clip(np.interp(x, xs[order], vs[order]), 0.0, 1.0)
    return out


def _rng(seed: int, supplier: str, criterion: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{supplier}\x00{criterion}".encode()).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:8], "big")])


def _beta(rng: np.random.Generator, k: int, n: int, size: int) -> FloatArray:
    out: FloatArray = rng.beta(k + 0.5, n - k + 0.5, size)
    return out


def _cost_draws(rng: np.random.Generator, sold: pd.DataFrame, fee: Mapping[str, float],
                hidden_per_order: float, size: int) -> FloatArray:
    """Bootstrap over sold orders of the cost rate (a ratio of sums).

    Resampling ``m`` orders with replacement only matters through how many times each
    distinct (revenue, spend) pair is drawn, so each draw is one multinomial over the
    distinct pairs with their observed shares: the same bootstrap distribution as an
    index gather of ``m`` orders, at a cost of (draws x distinct pairs), not (draws x m).
    When nearly every order is distinct (amounts that vary per order), it gathers indices
    in chunks instead."""
    revenue = (sold["sale_price"].astype(float) * units_delivered(sold)).to_numpy(float)
    hidden = 0.0 if np.isnan(hidden_per_order) else hidden_per_order
    purchase = sold["amount"].astype(float).to_numpy(float)
    spend = (purchase * (1 + fee.get("topup_pct", 0.0) / 100)
             + fee.get("platform_pct", 0.0) / 100 * revenue
             + fee.get("fixed_per_order", 0.0) + hidden)
    m = len(revenue)
    pairs, counts = _distinct_pairs(revenue, spend)
    if len(pairs) * 4 <= m:
        picks = rng.multinomial(m, counts / m, size).astype(float)
        rev = picks @ pairs[:, 0]
        out: FloatArray = np.divide(picks @ pairs[:, 1], rev, out=np.full(size, np.inf),
                                    where=rev > 0)
        return out
    out = np.empty(size)
    step = max(1, _BOOTSTRAP_CELLS // m)
    for start in range(0, size, step):
        idx = rng.integers(0, m, (min(step, size - start), m))
        rev = revenue[idx].sum(axis=1)
        out[start:start + len(idx)] = np.divide(spend[idx].sum(axis=1), rev,
                                                out=np.full(len(idx), np.inf), where=rev > 0)
    return out


def _distinct_pairs(x: FloatArray, y: FloatArray) -> tuple[FloatArray, np.ndarray[
        tuple[int, ...], np.dtype[np.int64]]]:
    """``np.unique(np.column_stack([x, y]), axis=0, return_counts=True)``: the distinct
    (x, y) rows in lexicographic order and how often each occurs. Sorted as complex
    numbers (x + yi: numpy orders them by real, then imaginary part), one 1-D sort, ~10x
    faster than the row sort; the same answer wherever equal values are equal bits, so
    a NaN or a negative zero goes the row way."""
    both = np.concatenate([x, y])
    if np.isnan(both).any() or (np.signbit(both) & (both == 0)).any():
        rows, counts = np.unique(np.column_stack([x, y]), axis=0, return_counts=True)
        return rows, counts
    z = np.empty(len(x), dtype=np.complex128)
    z.real, z.imag = x, y
    distinct, counts = np.unique(z, return_counts=True)
    rows = np.column_stack([distinct.real, distinct.imag])
    return rows, counts


def _p95_of_block_draws(values: list[FloatArray], picks: np.ndarray[tuple[int, ...],
                        np.dtype[np.int64]]) -> FloatArray:
    """``np.percentile(concatenate(values[i] for i in row), 95)`` for every row of
    ``picks`` (block indices drawn with replacement), without building any row.

    Every value is sorted once; a draw is the count of times it picked each block, and its
    p95 (linear interpolation between the two closest ranks, as ``np.percentile``) is
    found by bisecting the sorted values on the draw's weighted count of values at or
    below each one (``below[j, b]``: values of block ``b`` among the ``j + 1`` smallest).
    Cost: draws x blocks x log(values), not draws x values."""
    size, n_blocks = picks.shape
    sizes = np.array([len(v) for v in values])
    flat = np.concatenate(values)
    owner = np.repeat(np.arange(n_blocks), sizes)
    order = np.argsort(flat, kind="stable")
    ranked, owner = flat[order], owner[order]
    counts = np.bincount((picks + np.arange(size)[:, None] * n_blocks).ravel(),
                         minlength=size * n_blocks).reshape(size, n_blocks)
    total = counts @ sizes
    h = (total - 1) * 0.95
    low = np.floor(h).astype(np.int64)
    frac = h - low
    n = len(ranked)
    chunk = max(1, _BOOTSTRAP_CELLS // max(1, n))
    by_block = np.empty((n_blocks, n), dtype=np.int32)
    for start in range(0, n_blocks, chunk):
        stop = min(n_blocks, start + chunk)
        by_block[start:stop] = np.cumsum(owner[None, :] == np.arange(start, stop)[:, None],
                                         axis=1, dtype=np.int32)
    below = np.ascontiguousarray(by_block.T)  # below[j]: one contiguous row per draw's j
    del by_block

    def value_at(rank: np.ndarray[tuple[int, ...], np.dtype[np.int64]]) -> FloatArray:
        lo, hi = np.zeros(size, dtype=np.int64), np.full(size, n - 1, dtype=np.int64)
        while (lo < hi).any():  # smallest j whose weighted count reaches rank + 1
            mid = (lo + hi) // 2
            reached = np.einsum("db,db->d", counts, below[mid]) >= rank + 1
            hi = np.where(reached, mid, hi)
            lo = np.where(reached, lo, mid + 1)
        found: FloatArray = ranked[lo]
        return found

    a = value_at(low)
    b = value_at(np.minimum(low + 1, total - 1))
    out: FloatArray = np.where(frac >= 0.5, b - (b - a) * (1 - frac), a + (b - a) * frac)
    return out


def _latency_growth_draws(rng: np.random.Generator, burst: pd.DataFrame, block_s: float,
                          size: int) -> FloatArray:
    """Block bootstrap of p95(last third) / p95(first third), blocks drawn within each third."""
    t = seconds(burst["intended_at"])
    block = ((t - t.groupby(burst["run_id"]).transform("min")) // block_s).astype(int)
    thirds = burst_thirds(burst)  # of every sent order, as in the metrics
    keep = burst["acceptance_ms"].notna()
    burst, block, thirds = burst[keep], block[keep], thirds[keep]
    lat = burst["acceptance_ms"].astype(float)
    p95: dict[int, FloatArray] = {}
    for third in (0, 2):
        mask = thirds == third
        blocks = [g.to_numpy(float) for _, g in lat[mask].groupby(
            [burst.loc[mask, "run_id"], block[mask]])]
        picks = rng.integers(0, len(blocks), (size, len(blocks)))
        cells = len(blocks) * sum(len(b) for b in blocks)
        p95[third] = _p95_of_block_draws(blocks, picks) if cells <= _BLOCK_CELLS else \
            np.array([np.percentile(np.concatenate([blocks[i] for i in row]), 95)
                      for row in picks])
    growth: FloatArray = np.divide(p95[2], p95[0], out=np.full(size, np.inf),
                                   where=p95[0] > 0)
    return growth


_RATE_CRITERIA: tuple[tuple[Criterion, str], ...] = (
    ("sla_share", "sla_share"), ("validity", "validity"), ("refunds", "refund_ok"),
    ("load_errors", "load_error_rate"))
"""Criteria drawn from a Jeffreys posterior, and the metric whose counts they use."""


@dataclass
class Evidence:
    """What one supplier's score draws were made from, kept to simulate reruns."""

    orders: int
    """Orders sent per supplier in the runs (the unit of "more orders")."""
    rates: dict[Criterion, tuple[int, int]]
    """(k, n) of each rate criterion with data."""
    draws: dict[Criterion, FloatArray]
    """Metric draws of each criterion with data (cost and load latency are bootstrapped)."""
    points: dict[Criterion, float]
    """Point estimate of each criterion with data."""


_DRAW_COLUMNS = frozenset({"supplier", "state", "mode", "run_id", "intended_at",
                           "acceptance_ms", "sale_price", "quantity", "codes_delivered",
                           "amount"})
"""The orders columns :func:`_draws` reads (directly, through :func:`sold_mask`,
:func:`units_delivered` and :func:`burst_thirds`): only these are copied per supplier."""


def _draws(row: pd.Series, own: pd.DataFrame, fee: Mapping[str, float],
           config: RankingConfig) -> Evidence:
    """Metric draws and point estimates of each criterion that this supplier has data for;
    ``own`` is the supplier's orders."""
    name, size = str(row["supplier"]), config.draws
    draws: dict[Criterion, FloatArray] = {}
    points: dict[Criterion, float] = {}
    rates: dict[Criterion, tuple[int, int]] = {}
    for crit, rate in _RATE_CRITERIA:
        n = int(row[f"{rate}_n"])
        if n:
            k = int(row[f"{rate}_k"])
            draws[crit] = _beta(_rng(config.seed, name, crit), k, n, size)
            points[crit] = float(row[rate])
            rates[crit] = (k, n)
    own = own[own["state"] != "skipped"]
    if row["sale_revenue"] > 0:
        draws["cost"] = _cost_draws(_rng(config.seed, name, "cost"), own[sold_mask(own)], fee,
                                    float(row["hidden_fee_per_order"]), size)
        points["cost"] = float(row["cost_rate"])
    if not np.isnan(row["latency_growth"]):
        draws["load_latency"] = _latency_growth_draws(
            _rng(config.seed, name, "load_latency"), own[own["mode"] == "burst"],
            config.block_s, size)
        points["load_latency"] = float(row["latency_growth"])
    trial = int(row["sla_share_n"])
    return Evidence(orders=trial if trial else int(row["orders_sent"]), rates=rates,
                    draws=draws, points=points)


FINDINGS_COLUMNS: dict[str, str] = {
    "supplier": "supplier name",
    "kind": "what was found: fake_codes, resold_codes, duplicate_codes, "
            "wrong_face_value_codes, phantom_refunds, oversold_orders, hidden_fee, "
            "low_validity (gates), slow_refunds (scored by the refunds criterion)",
    "count": "how many: codes, refunds or orders (for hidden_fee: orders charged)",
    "n": "out of how many were checked: codes, completed refunds, accepted orders",
    "share": "count / n (for hidden_fee: the fee per order, currency units)",
    "lo": "lower end of the 95% Jeffreys interval of the share (NaN for hidden_fee)",
    "hi": "upper end of the 95% Jeffreys interval of the share (NaN for hidden_fee)",
    "threshold": "the ranking: setting it was held against (count, money or share)",
    "gates": "whether it gates the supplier (bool)",
}
"""Findings: the evidence of each gate, one row per supplier and kind (data, not words)."""

_COUNT_GATES: tuple[tuple[str, str, str, str], ...] = (
    # kind, gate setting, metrics count column, metrics denominator column
    ("fake_codes", "fake_codes", "codes_not_minted", "validity_n"),
    ("resold_codes", "resold_codes", "codes_resold", "validity_n"),
    ("duplicate_codes", "duplicate_codes", "codes_duplicate", "validity_n"),
    ("wrong_face_value_codes", "wrong_face_value_codes", "codes_wrong_face_value",
     "validity_n"),
    ("phantom_refunds", "phantom_refunds", "refund_phantom", "refund_completion_k"),
    ("oversold_orders", "oversold_orders", "oversold_k", "oversold_n"),
)


def gate_findings(row: pd.Series, config: RankingConfig) -> list[dict[str, object]]:
    """Every gate finding and slow-refund finding of one supplier (a metrics row).

    Count gates hold from ``gates.<kind>`` occurrences (0: off); the hidden fee from
    ``gates.hidden_fee_per_order``; low validity when the Jeffreys upper bound is under
    ``gates.validity_floor``. Slow refunds are reported, and scored by the refunds
    criterion, not gated.
    """
    gates = config.gates
    name = str(row["supplier"])
    out: list[dict[str, object]] = []

    def add(kind: str, count: float, n: float, threshold: float, holds: bool,
            share: float | None = None) -> None:
        lo, hi = jeffreys(int(count), int(n)) if share is None and n else (np.nan, np.nan)
        out.append({"supplier": name, "kind": kind, "count": int(count), "n": int(n),
                    "share": share if share is not None else (count / n if n else np.nan),
                    "lo": lo, "hi": hi, "threshold": float(threshold), "gates": holds})

    for kind, setting, count_col, n_col in _COUNT_GATES:
        count, threshold = int(row[count_col]), int(getattr(gates, setting))
        if count:
            add(kind, count, int(row[n_col]) or count, threshold,
                bool(threshold) and count >= threshold)
    fee = float(row["hidden_fee_per_order"])
    unexplained = float(row["hidden_fee_unexplained_per_order"])
    if np.isfinite(fee) and fee >= 0.005:
        charged = float(row["sold_orders"]) or 1.0
        # orders left unknown may hold money: only what they cannot explain gates
        add("hidden_fee", charged, charged, gates.hidden_fee_per_order,
            gates.hidden_fee_per_order > 0 and np.isfinite(unexplained)
            and unexplained >= gates.hidden_fee_per_order - 1e-9, share=fee)
    k, n = int(row["validity_k"]), int(row["validity_n"])
    if n and jeffreys(k, n)[1] < gates.validity_floor:
        add("low_validity", n - k, n, gates.validity_floor, True)
    slow, done = int(row["refund_slow"]), int(row["refund_completion_k"])
    if slow:
        add("slow_refunds", slow, done, config.refund_deadline_s, False)
    return out


def gate_reasons(row: pd.Series, config: RankingConfig) -> list[str]:
    """The kinds of the gates that hold for one supplier (a metrics row); empty if none."""
    return [str(f["kind"]) for f in gate_findings(row, config) if f["gates"]]


def tier(scores: FloatArray, config: RankingConfig, *, gated: bool,
         measured: bool = True) -> str:
    """Tier of one supplier from its score draws: "gated" when a gate holds, whatever the
    score; "insufficient evidence" when too little was measured or the interval is wider
    than ``max_interval_width``; else the best tier whose rule holds, or "none"."""
    if gated:
        return GATED
    lo, hi = np.percentile(scores, [2.5, 97.5])
    if not measured or hi - lo > config.max_interval_width:
        return INSUFFICIENT
    for name, rule in (("gold", config.gold), ("silver", config.silver),
                       ("bronze", config.bronze)):
        if float(np.mean(scores >= rule.min_score)) >= rule.min_prob:
            return name
    return "none"


def tie_groups(order: list[str], beats: pd.DataFrame, min_prob: float = 0.95) -> list[list[str]]:
    """Split ``order`` (best first) into tie groups.

    A boundary falls between two neighbours only where every supplier above it beats every
    supplier below it with P ≥ ``min_prob``, so each "A above B" read off the groups holds.
    """
    groups: list[list[str]] = []
    for i, name in enumerate(order):
        above, below = order[:i], order[i:]
        separated = bool(above) and all(beats.loc[a, b] >= min_prob
                                        for a in above for b in below)
        if separated or not groups:
            groups.append([name])
        else:
            groups[-1].append(name)
    return groups


def _rank_interval(ranks: FloatArray) -> str:
    lo = int(np.quantile(ranks, 0.025, method="lower"))
    hi = int(np.quantile(ranks, 0.975, method="higher"))
    return str(lo) if lo == hi else f"{lo}–{hi}"


RANKING_COLUMNS: dict[str, str] = {
    "supplier": "supplier name",
    "rank": "position: suppliers no gate holds first, then gated ones; each by score median",
    "tie_group": "1-based group among the suppliers no gate holds; suppliers in one group "
                 "tie (no P(beats) ≥ beats_min_prob across); 0 for gated suppliers",
    "rank_interval": "95% interval of the rank over the draws, e.g. 2–4, or 1 when fixed",
    "score_median": "median of the score draws (0–1)",
    "score_lo": "2.5th percentile of the score draws",
    "score_hi": "97.5th percentile of the score draws",
    "score_estimate": "score at the point estimates (weighted values; unknown criteria 0.5)",
    "tier": "gold, silver, bronze, none, insufficient evidence, or gated",
    "gated": "a gate holds: the supplier took money without delivering value (bool)",
    "gate_reasons": "the kinds of the gates that hold, '; '-separated (see FINDINGS_COLUMNS; "
                    "harness.analysis.finding_text words them); empty if not gated",
    "missing_criteria": "criteria with a weight this supplier has no data for, ', '-separated: "
                        "unknown ones (others have data; drawn uniformly) and ones no "
                        "supplier has (not measured; dropped)",
    **{f"{c}_estimate": f"point estimate of the {c} metric (NaN without data)" for c in CRITERIA},
    **{f"{c}_value": f"value (0–1) of the {c} point estimate; NaN without data or if the "
                     "criterion dropped out" for c in CRITERIA},
}
"""The ranking table, column by column."""


@dataclass
class Ranking:
    """The ranking table, P(row beats column), the ordered tie groups and weights used.

    ``groups`` covers only the suppliers no gate holds (best first); ``gated`` lists the
    others, in rank order. ``findings`` holds the gate evidence (:data:`FINDINGS_COLUMNS`).
    """

    table: pd.DataFrame
    beats: pd.DataFrame
    groups: list[list[str]]
    weights: dict[str, float]
    scores: pd.DataFrame  # one column per supplier, one row per draw
    findings: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=list(FINDINGS_COLUMNS)))
    gated: list[str] = field(default_factory=list)
    not_measured: list[str] = field(default_factory=list)
    """Criteria with a weight that no supplier has data for (dropped for everyone)."""
    measured_share: float = 1.0
    """Share of the policy's non-cost weight the measured criteria carry."""
    evidence: dict[str, Evidence] = field(default_factory=dict)
    config: RankingConfig = field(default_factory=RankingConfig)
    settled: pd.DataFrame | None = None
    """:func:`settle_rows`, once computed."""

    @property
    def decided(self) -> bool:
        """Enough was measured for tiers and "A above B" (``min_measured_weight``)."""
        return self.measured_share >= self.config.min_measured_weight

    def above(self, a: str, b: str) -> bool:
        """``a`` above ``b``: P(a beats b) ≥ beats_min_prob, both ungated or ``b`` gated and
        ``a`` not, and enough was measured. A gated supplier is never above a clean one."""
        if a in self.gated and b not in self.gated:
            return False
        if b in self.gated and a not in self.gated:
            return True
        return self.decided and float(self.beats.loc[a, b]) >= self.config.beats_min_prob


def _score_draws(evidence: Evidence, name: str, weights: Mapping[str, float],
                 anchors: Mapping[str, Anchor], config: RankingConfig
                 ) -> tuple[FloatArray, dict[str, float], float]:
    """(score draws, value at each point estimate, score at the point estimates)."""
    score = np.zeros(config.draws)
    point_values: dict[str, float] = {}
    estimate = 0.0
    for crit, weight in weights.items():
        if crit in evidence.draws:
            score += weight * value(anchors[crit], evidence.draws[crit])
            point_values[crit] = float(value(anchors[crit], evidence.points[crit]))
            estimate += weight * point_values[crit]
        else:  # unknown: anywhere in [0, 1]
            score += weight * _rng(config.seed, name, crit).uniform(0.0, 1.0, config.draws)
            estimate += weight * 0.5
    return score, point_values, estimate


def rank_suppliers(orders: pd.DataFrame, codes: pd.DataFrame, refunds: pd.DataFrame,
                   suppliers: pd.DataFrame,
                   fees: Mapping[str, Mapping[str, float]] | None = None,
                   config: RankingConfig | None = None,
                   extra_findings: Sequence[Mapping[str, object]] = (),
                   metrics: pd.DataFrame | None = None) -> Ranking:
    """Rank every supplier in the tables; see the module docstring for each step.
    ``extra_findings`` (rows of :data:`FINDINGS_COLUMNS`, e.g. the qualification findings
    of :func:`harness.analysis.qualification_findings`) join each supplier's findings and
    gate it where their ``gates`` is true. ``metrics`` is the
    :func:`harness.metrics.supplier_metrics` table of these tables with these fees and
    ``refund_deadline_s=config.refund_deadline_s``, when the caller already has it
    (computed here otherwise)."""
    config = config or RankingConfig()
    if metrics is None:
        metrics = supplier_metrics(orders, codes, refunds, suppliers, fees,
                                   refund_deadline_s=config.refund_deadline_s)
    names = [str(s) for s in metrics["supplier"]]
    fee_map = check_fees(fees)
    orders_of = rows_by_supplier(orders[[c for c in orders.columns if c in _DRAW_COLUMNS]])
    per: dict[str, Evidence] = {
        str(row["supplier"]): _draws(row, orders_of(str(row["supplier"])),
                                     fee_map.get(str(row["supplier"]), {}), config)
        for _, row in metrics.iterrows()}
    weights_in = config.weights.model_dump()
    wanted = [c for c in CRITERIA if weights_in[c] > 0]
    active = [c for c in wanted if any(c in per[n].draws for n in names)]
    total = sum(weights_in[c] for c in active)
    if not names or total <= 0:
        raise ValueError("nothing to rank: no supplier has data for a criterion with a "
                         "positive weight (check the run's tables and ranking.weights)")
    weights: dict[str, float] = {c: float(weights_in[c]) / total for c in active}
    non_cost = sum(weights_in[c] for c in wanted if c != "cost")
    measured_share = (sum(weights_in[c] for c in active if c != "cost") / non_cost
                      if non_cost > 0 else 1.0)
    measured = measured_share >= config.min_measured_weight
    anchors = config.anchors.model_dump()

    score_cols = {}
    rows = []
    findings: list[dict[str, object]] = []
    for name, (_, row) in zip(names, metrics.iterrows(), strict=True):
        evidence = per[name]
        score, point_values, estimate = _score_draws(evidence, name, weights, anchors, config)
        record: dict[str, object] = {"supplier": name}
        for crit in CRITERIA:
            record[f"{crit}_estimate"] = evidence.points.get(crit, float("nan"))
            record[f"{crit}_value"] = point_values.get(crit, float("nan"))
        found = gate_findings(row, config) + [dict(f) for f in extra_findings
                                              if f["supplier"] == name]
        findings += found
        reasons = [str(f["kind"]) for f in found if f["gates"]]
        lo, med, hi = np.percentile(score, [2.5, 50, 97.5])
        record.update(
            score_median=float(med), score_lo=float(lo), score_hi=float(hi),
            score_estimate=estimate,
            tier=tier(score, config, gated=bool(reasons), measured=measured),
            gated=bool(reasons), gate_reasons="; ".join(reasons),
            missing_criteria=", ".join(c for c in wanted if c not in evidence.draws))
        score_cols[name] = score
        rows.append(record)

    scores = pd.DataFrame(score_cols)
    mat = scores.to_numpy()
    beats_arr = ((mat[:, :, None] > mat[:, None, :]).mean(axis=0)
                 + 0.5 * (mat[:, :, None] == mat[:, None, :]).mean(axis=0))
    np.fill_diagonal(beats_arr, np.nan)
    beats = pd.DataFrame(beats_arr, index=names, columns=names)
    gated_flags = np.array([bool(r["gate_reasons"]) for r in rows])
    # a gated supplier ranks below every clean one in every draw, as in the table
    ranks = pd.DataFrame(mat + 2.0 * ~gated_flags, columns=names).rank(
        axis=1, ascending=False, method="min")

    table = pd.DataFrame(rows)
    table = table.sort_values(["gated", "score_median", "score_estimate", "supplier"],
                              ascending=[True, False, False, True], kind="stable",
                              ignore_index=True)
    order = [str(s) for s in table["supplier"]]
    clean = [n for n in order if not bool(table.set_index("supplier").loc[n, "gated"])]
    gated = [n for n in order if n not in clean]
    groups = tie_groups(clean, beats, config.beats_min_prob if measured else 1.01) \
        if clean else []
    group_of = {n: i + 1 for i, g in enumerate(groups) for n in g}
    table.insert(1, "rank", range(1, len(table) + 1))
    table.insert(2, "tie_group", [group_of.get(n, 0) for n in order])
    table.insert(3, "rank_interval", [_rank_interval(ranks[n].to_numpy(float)) for n in order])
    table = table[list(RANKING_COLUMNS)]
    findings_frame = pd.DataFrame(findings, columns=list(FINDINGS_COLUMNS))
    return Ranking(table=table, beats=beats.loc[order, order], groups=groups,
                   weights=weights, scores=scores[order], findings=findings_frame,
                   gated=gated, not_measured=[c for c in wanted if c not in active],
                   measured_share=measured_share, evidence=per, config=config)


# --------------------------------------------------------------------------- settling

_SETTLE_RERUNS = 200
_SETTLE_DRAWS = 1000
_SETTLE_FACTORS = (1.5, 2, 3, 4, 6, 8, 12, 16, 24, 32)


def _rerun_scores(evidence: Evidence, name: str, orders: int, weights: Mapping[str, float],
                  anchors: Mapping[str, Anchor], rng: np.random.Generator) -> FloatArray:
    """Score draws (reruns × draws) of ``orders`` fresh orders per rerun, if the observed
    rates hold: counts binomial at the observed rate, posterior Jeffreys; bootstrapped
    criteria keep their centre and shrink their spread as 1/√orders."""
    scale = orders / max(1, evidence.orders)
    shape = (_SETTLE_RERUNS, _SETTLE_DRAWS)
    score = np.zeros(shape)
    for crit, weight in weights.items():
        if crit in evidence.rates:
            k, n = evidence.rates[crit]
            n_new = max(1, round(n * scale))
            k_new = rng.binomial(n_new, k / n, _SETTLE_RERUNS)[:, None]
            metric = rng.beta(k_new + 0.5, n_new - k_new + 0.5, shape)
        elif crit in evidence.draws:
            draws = evidence.draws[crit]
            finite = draws[np.isfinite(draws)]
            spread = float(np.std(finite)) / np.sqrt(scale) if len(finite) else 0.0
            metric = evidence.points[crit] + rng.normal(0.0, 1.0, shape) * spread
        else:
            score += weight * rng.uniform(0.0, 1.0, shape)
            continue
        score += weight * value(anchors[crit], metric)
    return score


def orders_to_settle(ranking: Ranking, a: str, b: str | None = None
                     ) -> tuple[int | None, float]:
    """Orders per supplier with which a rerun separates ``a`` from ``b`` (P(beats) ≥
    beats_min_prob either way), or, without ``b``, narrows ``a``'s score interval to
    ``max_interval_width``, in ``settle_assurance`` of simulated reruns, if the observed
    rates hold. Returns (orders, share of reruns at that figure), or (None, share at the
    largest figure tried, 32× the orders) when more orders would not settle it.
    """
    config = ranking.config
    anchors = config.anchors.model_dump()
    ev_a = ranking.evidence[a]
    base = max(1, ev_a.orders if b is None else max(ev_a.orders, ranking.evidence[b].orders))
    seed = int.from_bytes(hashlib.sha256(f"{a}\x00{b}".encode()).digest()[:8], "big")

    def settled_share(orders: int) -> float:
        rng = np.random.default_rng([config.seed, seed, orders])
        sa = _rerun_scores(ev_a, a, orders, ranking.weights, anchors, rng)
        if b is None:
            lo, hi = np.percentile(sa, [2.5, 97.5], axis=1)
            return float(np.mean(hi - lo <= config.max_interval_width))
        sb = _rerun_scores(ranking.evidence[b], b, orders, ranking.weights, anchors, rng)
        p = (sa > sb).mean(axis=1) + 0.5 * (sa == sb).mean(axis=1)
        return float(np.mean((p >= config.beats_min_prob) | (p <= 1 - config.beats_min_prob)))

    grid = [int(np.ceil(base * f / 10) * 10) for f in _SETTLE_FACTORS]
    top = settled_share(grid[-1])
    if top < config.settle_assurance:  # not even the most orders tried would settle it
        return None, top
    lo_i, hi_i, shares = -1, len(grid) - 1, {len(grid) - 1: top}
    while hi_i - lo_i > 1:  # the share grows with the orders: bisect the grid
        mid = (lo_i + hi_i) // 2
        shares[mid] = settled_share(grid[mid])
        if shares[mid] >= config.settle_assurance:
            hi_i = mid
        else:
            lo_i = mid
    return grid[hi_i], shares[hi_i]


SETTLE_COLUMNS: dict[str, str] = {
    "a": "supplier",
    "b": "the supplier it ties with; empty: a's own score interval is too wide for a tier",
    "orders_now": "orders per supplier in these runs (the larger of the two)",
    "orders_needed": "orders per supplier with which a rerun settles it in settle_assurance "
                     "of simulated reruns, if the observed rates hold (NaN: even 32× would "
                     "not)",
    "share": "share of simulated reruns that settle it at orders_needed (or at 32× if NaN)",
}
"""What would settle each tie and each "insufficient evidence", one row each."""


def settle_rows(ranking: Ranking) -> pd.DataFrame:
    """Every tie between neighbours in a tie group (ungated suppliers) and every ungated
    "insufficient evidence" supplier, with :func:`orders_to_settle` (computed once)."""
    if ranking.settled is not None:
        return ranking.settled
    rows: list[dict[str, object]] = []
    if ranking.decided:
        for group in ranking.groups:
            for a, b in pairwise(group):
                if ranking.above(a, b):
                    continue
                needed, share = orders_to_settle(ranking, a, b)
                now = max(ranking.evidence[a].orders, ranking.evidence[b].orders)
                rows.append({"a": a, "b": b, "orders_now": now,
                             "orders_needed": np.nan if needed is None else needed,
                             "share": share})
    for row in ranking.table.itertuples():
        if row.tier == INSUFFICIENT and ranking.decided:
            name = str(row.supplier)
            needed, share = orders_to_settle(ranking, name)
            rows.append({"a": name, "b": "", "orders_now": ranking.evidence[name].orders,
                         "orders_needed": np.nan if needed is None else needed,
                         "share": share})
    ranking.settled = pd.DataFrame(rows, columns=list(SETTLE_COLUMNS))
    return ranking.settled


def write_ranking_csv(ranking: Ranking, folder: Path) -> Path:
    """Write ``ranking.csv``, ``ranking_beats.csv`` (P(row beats column)) and
    ``findings.csv`` (the gate evidence) to ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "ranking.csv"
    ranking.table.to_csv(path, index=False)
    ranking.beats.to_csv(folder / "ranking_beats.csv", index_label="supplier")
    ranking.findings.to_csv(folder / "findings.csv", index=False)
    return path
