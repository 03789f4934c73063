""""What would settle it", checked against ground truth by rerunning the whole ranking.

Two suppliers alike in everything but their share of orders within the SLA (observed 19/20
and 17/20) tie at 20 orders. :func:`harness.ranking.orders_to_settle` states how many
orders per supplier would separate them in 80% of reruns if those rates hold; here fresh
trials of that size are drawn from those very rates and ranked in full, and the share that
separates must be about the stated one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from test_metrics import empty, make_codes, make_orders

from harness.ranking import Ranking, orders_to_settle, rank_suppliers
from harness.ranking_config import RankingConfig
from harness.results import REFUNDS_COLUMNS, SUPPLIERS_COLUMNS
from harness.wording import settle_sentences

CONFIG = RankingConfig(draws=1000)
RATES = {"a": 0.95, "b": 0.85}  # share within the SLA; every code valid, same price


def _rank(late: dict[str, int], n: int) -> Ranking:
    orders = pd.concat([make_orders(name, n, late=k, amount=9.7) for name, k in late.items()],
                       ignore_index=True)
    codes = pd.concat([make_codes(name, {"valid": 2 * n}) for name in late], ignore_index=True)
    return rank_suppliers(orders, codes, empty(REFUNDS_COLUMNS), empty(SUPPLIERS_COLUMNS),
                          config=CONFIG)


def test_twenty_orders_tie_and_say_how_many_would_settle_it() -> None:
    """At 20 orders a and b tie, and the sentence names the orders that would split them;
    each supplier without a tier gets the orders that would narrow its interval."""
    ranking = _rank({"a": 1, "b": 3}, 20)
    assert ranking.groups == [["a", "b"]]
    lines = settle_sentences(ranking)
    assert lines[0].startswith("About ")
    assert "would separate a from b (P ≥ 0.95) in 80% of reruns" in lines[0]
    insufficient = (ranking.table["tier"] == "insufficient evidence").sum()
    assert len(lines) == 1 + insufficient
    assert all("narrow" in line for line in lines[1:])


def test_stated_orders_separate_in_about_the_stated_share_of_reruns() -> None:
    """Reruns at the stated number of orders, drawn from the observed rates and ranked in
    full, separate the pair in about the stated share (within ±0.15 over 40 reruns)."""
    needed, stated = orders_to_settle(_rank({"a": 1, "b": 3}, 20), "a", "b")
    assert needed is not None and 40 <= needed <= 640
    rng = np.random.default_rng(2026)
    separated = 0
    reruns = 40
    for _ in range(reruns):
        late = {name: int(rng.binomial(needed, 1 - rate)) for name, rate in RATES.items()}
        ranking = _rank(late, needed)
        p = float(ranking.beats.loc["a", "b"])
        separated += p >= CONFIG.beats_min_prob or p <= 1 - CONFIG.beats_min_prob
    observed = separated / reruns
    print(f"stated: {needed} orders separate a from b in {stated:.0%} of reruns; "
          f"rerun check: {observed:.0%} of {reruns}")
    assert abs(observed - stated) <= 0.15, (needed, stated, observed)


def test_fewer_orders_separate_less_often() -> None:
    """At half the stated orders, reruns separate clearly less often than stated."""
    ranking = _rank({"a": 1, "b": 3}, 20)
    needed, stated = orders_to_settle(ranking, "a", "b")
    assert needed is not None
    rng = np.random.default_rng(7)
    half = needed // 2
    hits = 0
    for _ in range(20):
        late = {name: int(rng.binomial(half, 1 - rate)) for name, rate in RATES.items()}
        hits += float(_rank(late, half).beats.loc["a", "b"]) >= CONFIG.beats_min_prob
    assert hits / 20 < stated - 0.1


def test_a_a_reruns_land_in_the_same_tier() -> None:
    """Twenty reruns of one clean 60-order supplier, drawn from the same truth (59 in 60 on
    time, every code valid, same price), land in one tier every time."""
    rng = np.random.default_rng(11)
    tiers = set()
    for _ in range(20):
        late = int(rng.binomial(60, 1 / 60))
        ranking = _rank({"a": late}, 60)
        tiers.add(str(ranking.table.loc[0, "tier"]))
    assert tiers == {"gold"}
