"""Ranking suppliers with honest uncertainty: gates, fixed-anchor value functions, draws.

Pure pandas/scipy/numpy (never Locust). The steps, each documented where it is done:

1. **Metrics** from :func:`harness.metrics.supplier_metrics`.
2. **Criteria**: ``sla_share`` (trial SLA share), ``validity`` (valid share of checked
   codes), ``refunds`` (completed × credited share of refunds), ``cost`` (comprehensive
   cost rate), ``load_errors`` (share of burst orders never accepted) and ``load_latency``
   (p95 acceptance latency, last third of the burst over the first). Each maps to [0, 1]
   through a piecewise-linear **value function with fixed anchors** (clipped at both
   ends), never through the other suppliers' data: adding a supplier cannot swap two others.
3. **Missing data**: a criterion no supplier has data for drops out, and the weights of the
   rest are renormalised to sum to 1, the same for every supplier. A supplier lacking data
   that another has gets the criterion's worst value (0) in every draw: no evidence, no
   credit. It is listed in ``missing_criteria``. Note: a newly added supplier that brings
   the first data for a criterion switches that criterion on for everyone.
4. **Draws**: for each supplier and criterion, ``draws`` samples from a generator seeded by
   (seed, supplier, criterion), so a supplier's draws never depend on who else is ranked.
   Rates: Jeffreys posteriors Beta(k+½, n−k+½). Cost: bootstrap over sold orders. Load
   latency: block bootstrap by time blocks of ``block_s``, within the first and last
   thirds. Load errors: Jeffreys (assumes independent orders).
5. **Scores** per draw (weighted sum of values) → median and 95% interval, ranks per draw →
   rank interval, P(A beats B) (ties in a draw count half). "A above B" only at
   P ≥ ``beats_min_prob``; otherwise they tie (:func:`tie_groups`).
6. **Tiers** from absolute thresholds: "insufficient evidence" when the score interval is
   wider than ``max_interval_width``; else gold, silver, bronze when P(score ≥ min_score)
   ≥ min_prob, else "none". **Gates** then cap gold and silver at bronze: a duplicate or
   resold code, a wrong face value, or validity whose Jeffreys 95% upper bound is under
   ``validity_floor``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness.metrics import (
    burst_thirds,
    check_fees,
    jeffreys,
    seconds,
    sold_mask,
    supplier_metrics,
    units_delivered,
)
from harness.ranking_config import (
    CRITERIA,
    INSUFFICIENT,
    Anchor,
    Criterion,
    RankingConfig,
)

FloatArray = np.ndarray[tuple[int, ...], np.dtype[np.float64]]
_BOOTSTRAP_CELLS = 2_000_000  # most (draws x orders) index cells held at once


@dataclass
class Ranking:
    """The ranking table, P(row beats column), the ordered tie groups and weights used."""

    table: pd.DataFrame
    beats: pd.DataFrame
    groups: list[list[str]]
    weights: dict[str, float]
    scores: pd.DataFrame  # one column per supplier, one row per draw


def value(points: Anchor, x: FloatArray | float) -> FloatArray:
    """The piecewise-linear value function through ``points``, clipped to [0, 1]."""
    xs = np.array([p[0] for p in points], dtype=float)
    vs = np.array([p[1] for p in points], dtype=float)
    order = np.argsort(xs)
    out: FloatArray = np.clip(np.interp(x, xs[order], vs[order]), 0.0, 1.0)
    return out


def _rng(seed: int, supplier: str, criterion: Criterion) -> np.random.Generator:
    digest = hashlib.sha256(f"{supplier}\x00{criterion}".encode()).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:8], "big")])


def _beta(rng: np.random.Generator, k: int, n: int, size: int) -> FloatArray:
    out: FloatArray = rng.beta(k + 0.5, n - k + 0.5, size)
    return out


def _cost_draws(rng: np.random.Generator, sold: pd.DataFrame, fee: Mapping[str, float],
                hidden_per_order: float, size: int) -> FloatArray:
    """Bootstrap over sold orders of the cost rate (a ratio of sums)."""
    revenue = (sold["sale_price"].astype(float) * units_delivered(sold)).to_numpy(float)
    hidden = 0.0 if np.isnan(hidden_per_order) else hidden_per_order
    purchase = sold["amount"].astype(float).to_numpy(float)
    spend = (purchase * (1 + fee.get("topup_pct", 0.0) / 100)
             + fee.get("platform_pct", 0.0) / 100 * revenue
             + fee.get("fixed_per_order", 0.0) + hidden)
    m = len(revenue)
    out = np.empty(size)
    step = max(1, _BOOTSTRAP_CELLS // m)
    for start in range(0, size, step):
        idx = rng.integers(0, m, (min(step, size - start), m))
        rev = revenue[idx].sum(axis=1)
        out[start:start + len(idx)] = np.divide(spend[idx].sum(axis=1), rev,
                                                out=np.full(len(idx), np.inf), where=rev > 0)
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
        p95[third] = np.array([np.percentile(np.concatenate([blocks[i] for i in row]), 95)
                               for row in picks])
    growth: FloatArray = np.divide(p95[2], p95[0], out=np.full(size, np.inf),
                                   where=p95[0] > 0)
    return growth


def _draws(row: pd.Series, orders: pd.DataFrame, fee: Mapping[str, float],
           config: RankingConfig) -> tuple[dict[Criterion, FloatArray], dict[Criterion, float]]:
    """Metric draws and point estimates of each criterion that this supplier has data for."""
    name, size = str(row["supplier"]), config.draws
    draws: dict[Criterion, FloatArray] = {}
    points: dict[Criterion, float] = {}
    rates: tuple[tuple[Criterion, str], ...] = (
        ("sla_share", "sla_share"), ("validity", "validity"), ("load_errors", "load_error_rate"))
    for crit, rate in rates:
        n = int(row[f"{rate}_n"])
        if n:
            draws[crit] = _beta(_rng(config.seed, name, crit), int(row[f"{rate}_k"]), n, size)
            points[crit] = float(row[rate])
    if int(row["refund_completion_n"]):
        rng = _rng(config.seed, name, "refunds")
        done = _beta(rng, int(row["refund_completion_k"]), int(row["refund_completion_n"]), size)
        back = _beta(rng, int(row["refund_credit_k"]), int(row["refund_credit_n"]), size)
        draws["refunds"] = done * back
        credit = row["refund_credit"] if int(row["refund_credit_n"]) else 0.5  # prior mean
        points["refunds"] = float(row["refund_completion"] * credit)
    own = orders[(orders["supplier"] == name) & (orders["state"] != "skipped")]
    if row["sale_revenue"] > 0:
        draws["cost"] = _cost_draws(_rng(config.seed, name, "cost"), own[sold_mask(own)], fee,
                                    float(row["hidden_fee_per_order"]), size)
        points["cost"] = float(row["cost_rate"])
    if not np.isnan(row["latency_growth"]):
        draws["load_latency"] = _latency_growth_draws(
            _rng(config.seed, name, "load_latency"), own[own["mode"] == "burst"],
            config.block_s, size)
        points["load_latency"] = float(row["latency_growth"])
    return draws, points


def gate_reasons(row: pd.Series, validity_floor: float) -> list[str]:
    """Why a supplier (a metrics row) cannot be gold or silver; empty if it can."""
    reasons = []
    for verdict, what in (("duplicate", "duplicate"), ("resold", "resold"),
                          ("wrong_face_value", "wrong-face-value")):
        count = int(row[f"codes_{verdict}"])
        if count:
            reasons.append(f"{count} {what} code{'s' if count > 1 else ''}")
    k, n = int(row["validity_k"]), int(row["validity_n"])
    if n:
        upper = jeffreys(k, n)[1]
        if upper < validity_floor:
            reasons.append(f"validity {k}/{n}: upper 95% bound {upper:.3f} "
                           f"< floor {validity_floor:.2f}")
    return reasons


def tier(scores: FloatArray, config: RankingConfig, *, gated: bool) -> str:
    """Tier of one supplier from its score draws; a gate caps gold and silver at bronze.

    A gated supplier with too wide an interval stays "insufficient evidence"; its gate
    reasons are reported either way.
    """
    lo, hi = np.percentile(scores, [2.5, 97.5])
    if hi - lo > config.max_interval_width:
        return INSUFFICIENT
    for name, rule in (("gold", config.gold), ("silver", config.silver),
                       ("bronze", config.bronze)):
        if float(np.mean(scores >= rule.min_score)) >= rule.min_prob:
            return "bronze" if gated and name in ("gold", "silver") else name
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
    "rank": "position by score median, 1 best",
    "tie_group": "1-based group; suppliers in one group tie (no P(beats) ≥ beats_min_prob)",
    "rank_interval": "95% interval of the rank over the draws, e.g. 2–4, or 1 when fixed",
    "score_median": "median of the score draws (0–1)",
    "score_lo": "2.5th percentile of the score draws",
    "score_hi": "97.5th percentile of the score draws",
    "score_estimate": "score at the point estimates (weighted values)",
    "tier": "gold, silver, bronze, none, or insufficient evidence",
    "gated": "a gate caps the tier at bronze (bool)",
    "gate_reasons": "why, '; '-separated; empty if not gated",
    "missing_criteria": "criteria others have data for and this supplier has not (value 0)",
    **{f"{c}_estimate": f"point estimate of the {c} metric (NaN without data)" for c in CRITERIA},
    **{f"{c}_value": f"value (0–1) of the {c} point estimate; NaN if the criterion dropped out"
       for c in CRITERIA},
}
"""The ranking table, column by column."""


def rank_suppliers(orders: pd.DataFrame, codes: pd.DataFrame, refunds: pd.DataFrame,
                   suppliers: pd.DataFrame,
                   fees: Mapping[str, Mapping[str, float]] | None = None,
                   config: RankingConfig | None = None) -> Ranking:
    """Rank every supplier in the tables; see the module docstring for each step."""
    config = config or RankingConfig()
    metrics = supplier_metrics(orders, codes, refunds, suppliers, fees)
    names = [str(s) for s in metrics["supplier"]]
    fee_map = check_fees(fees)
    per: dict[str, tuple[dict[Criterion, FloatArray], dict[Criterion, float]]] = {
        str(row["supplier"]): _draws(row, orders, fee_map.get(str(row["supplier"]), {}), config)
        for _, row in metrics.iterrows()}
    weights_in = config.weights.model_dump()
    active = [c for c in CRITERIA if any(c in per[n][0] for n in names) and weights_in[c] > 0]
    total = sum(weights_in[c] for c in active)
    if not names or total <= 0:
        raise ValueError("nothing to rank: no supplier has data for a criterion with a "
                         "positive weight (check the run's tables and ranking.weights)")
    weights: dict[str, float] = {c: float(weights_in[c]) / total for c in active}
    anchors = config.anchors.model_dump()

    score_cols = {}
    rows = []
    for name, (_, row) in zip(names, metrics.iterrows(), strict=True):
        draws, points = per[name]
        score = np.zeros(config.draws)
        record: dict[str, object] = {"supplier": name}
        estimate = 0.0
        for crit in CRITERIA:
            has = crit in draws and crit in active
            point_value = (float(value(anchors[crit], points[crit])) if has
                           else (0.0 if crit in active else float("nan")))
            if crit in active:
                v_draws = value(anchors[crit], draws[crit]) if has else np.zeros(config.draws)
                score += weights[crit] * v_draws
                estimate += weights[crit] * point_value
            record[f"{crit}_estimate"] = points.get(crit, float("nan"))
            record[f"{crit}_value"] = point_value
        reasons = gate_reasons(row, config.validity_floor)
        lo, med, hi = np.percentile(score, [2.5, 50, 97.5])
        record.update(
            score_median=float(med), score_lo=float(lo), score_hi=float(hi),
            score_estimate=estimate,
            tier=tier(score, config, gated=bool(reasons)), gated=bool(reasons),
            gate_reasons="; ".join(reasons),
            missing_criteria=", ".join(c for c in active if c not in draws))
        score_cols[name] = score
        rows.append(record)

    scores = pd.DataFrame(score_cols)
    mat = scores.to_numpy()
    beats_arr = ((mat[:, :, None] > mat[:, None, :]).mean(axis=0)
                 + 0.5 * (mat[:, :, None] == mat[:, None, :]).mean(axis=0))
    np.fill_diagonal(beats_arr, np.nan)
    beats = pd.DataFrame(beats_arr, index=names, columns=names)
    ranks = pd.DataFrame(mat, columns=names).rank(axis=1, ascending=False, method="min")

    table = pd.DataFrame(rows)
    table = table.sort_values(["score_median", "score_estimate", "supplier"],
                              ascending=[False, False, True], kind="stable",
                              ignore_index=True)
    order = [str(s) for s in table["supplier"]]
    groups = tie_groups(order, beats, config.beats_min_prob)
    group_of = {n: i + 1 for i, g in enumerate(groups) for n in g}
    table.insert(1, "rank", range(1, len(table) + 1))
    table.insert(2, "tie_group", [group_of[n] for n in order])
    table.insert(3, "rank_interval", [_rank_interval(ranks[n].to_numpy(float)) for n in order])
    table = table[list(RANKING_COLUMNS)]
    return Ranking(table=table, beats=beats.loc[order, order], groups=groups,
                   weights=weights, scores=scores[order])



def write_ranking_csv(ranking: Ranking, folder: Path) -> Path:
    """Write ``ranking.csv`` and ``ranking_beats.csv`` (P(row beats column)) to ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "ranking.csv"
    ranking.table.to_csv(path, index=False)
    ranking.beats.to_csv(folder / "ranking_beats.csv", index_label="supplier")
    return path
