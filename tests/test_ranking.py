"""Ranking: hand-scored cases, invariance, separability, gates, tiers, reproducibility."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from test_metrics import empty, make_codes, make_orders, make_refunds

from harness.ranking import (
    RANKING_COLUMNS,
    Ranking,
    rank_suppliers,
    tie_groups,
    value,
    write_ranking_csv,
)
from harness.ranking_config import CRITERIA, INSUFFICIENT, RankingConfig
from harness.results import REFUNDS_COLUMNS, SUPPLIERS_COLUMNS

FAST = RankingConfig(draws=2000)


def trial(supplier: str, n: int, *, valid: int, late: int = 0,
          amount: float = 8.5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Orders and codes of an ``n``-order trial with ``valid`` valid codes, the rest expired
    (bad, but no count gate: only the validity floor)."""
    orders = make_orders(supplier, n, late=late, amount=amount)
    codes = make_codes(supplier, {"valid": valid, "expired": n - valid})
    return orders, codes


def rank(parts: list[tuple[pd.DataFrame, pd.DataFrame]], refunds: pd.DataFrame | None = None,
         config: RankingConfig = FAST) -> Ranking:
    """Rank the suppliers of the given (orders, codes) pairs."""
    orders = pd.concat([p[0] for p in parts], ignore_index=True)
    codes = pd.concat([p[1] for p in parts], ignore_index=True)
    return rank_suppliers(orders, codes, empty(REFUNDS_COLUMNS) if refunds is None else refunds,
                          empty(SUPPLIERS_COLUMNS), config=config)


def test_value_function_is_piecewise_linear_and_clipped() -> None:
    """Anchors map linearly between points and clip outside them, in either direction."""
    points = [(0.90, 0.0), (1.00, 1.0)]
    assert value(points, np.array([0.8, 0.9, 0.95, 1.0]))[2] == pytest.approx(0.5)
    assert list(value(points, np.array([0.8, 1.2]))) == [0.0, 1.0]
    assert float(value([(0.9, 1.0), (1.0, 0.0)], 0.92)) == pytest.approx(0.8)


def test_hand_scored_case() -> None:
    """A trial-only ranking agrees with a score computed by hand with renormalised weights."""
    result = rank([trial("acme", 20, valid=19, late=2, amount=9.2),
                   trial("beta", 20, valid=20, amount=8.0)])
    # no refunds, no burst: sla 0.25, validity 0.30, cost 0.15 renormalised over 0.70
    assert result.weights == pytest.approx({"sla_share": 0.25 / 0.7, "validity": 0.30 / 0.7,
                                            "cost": 0.15 / 0.7})
    acme = result.table.set_index("supplier").loc["acme"]
    # sla 18/20 = 0.90 → 0.5; validity 19/20 = 0.95 → 0.5; cost 9.2/10 = 0.92 → 1 (a margin
    # of 3% or more is full marks; anchors (0.97, 1), (0.99, 0.6), (1.00, 0): 0.985 → 0.7)
    assert (acme["sla_share_value"], acme["validity_value"]) == (pytest.approx(0.5),
                                                                 pytest.approx(0.5))
    assert acme["cost_value"] == pytest.approx(1.0)
    assert acme["score_estimate"] == pytest.approx((0.25 * 0.5 + 0.30 * 0.5 + 0.15 * 1.0) / 0.7)
    assert float(value(RankingConfig().anchors.cost, 0.985)) == pytest.approx(0.7)
    assert np.isnan(acme["refunds_value"]) and np.isnan(acme["load_errors_estimate"])
    assert acme["score_lo"] <= acme["score_median"] <= acme["score_hi"]


def test_dominant_supplier_wins() -> None:
    """A supplier better on every criterion is ranked first, alone, with P(beats) ≥ 0.95."""
    result = rank([trial("good", 200, valid=200, amount=8.5),
                   trial("poor", 200, valid=188, late=20, amount=9.6)])
    assert list(result.table["supplier"]) == ["good", "poor"]
    assert result.beats.loc["good", "poor"] >= 0.95
    assert result.groups == [["good"], ["poor"]]
    assert list(result.table["rank_interval"]) == ["1", "2"]


def test_third_supplier_never_flips_two_others() -> None:
    """Adding or removing a third supplier leaves two others' scores and order unchanged."""
    a, b = trial("a", 20, valid=19, late=1), trial("b", 20, valid=19, late=2)
    pair = rank([a, b]).table.set_index("supplier")
    for third in (trial("c", 20, valid=20), trial("c", 20, valid=17, late=5),
                  trial("c", 300, valid=299)):
        trio = rank([a, third, b]).table.set_index("supplier")
        for name in ("a", "b"):
            assert trio.loc[name, "score_median"] == pair.loc[name, "score_median"]
        assert (trio.loc["a", "rank"] < trio.loc["b", "rank"]) == \
            (pair.loc["a", "rank"] < pair.loc["b", "rank"])


def test_identical_suppliers_tie_in_one_tier() -> None:
    """Two suppliers with identical data share a tier and a tie group, P(beats) near ½."""
    result = rank([trial("one", 100, valid=99), trial("two", 100, valid=99)])
    table = result.table.set_index("supplier")
    assert table.loc["one", "tier"] == table.loc["two", "tier"]
    assert result.groups == [["one", "two"]] or result.groups == [["two", "one"]]
    assert 0.4 < result.beats.loc["one", "two"] < 0.6
    assert set(table["rank_interval"]) == {"1–2"}


def separation(n: int) -> float:
    """P(99%-valid beats 95%-valid) when both deliver n orders, all else equal."""
    result = rank([trial("v99", n, valid=round(0.99 * n)), trial("v95", n, valid=round(0.95 * n))])
    p = float(result.beats.loc["v99", "v95"])
    separated = any(g == ["v99"] for g in result.groups)
    assert separated == (p >= 0.95)
    return p


def test_twenty_orders_do_not_separate_99_from_95_percent_validity() -> None:
    """At 20 orders (20/20 against 19/20 valid) the two tie: P(beats) < 0.95."""
    assert separation(20) < 0.95


def test_six_hundred_orders_separate_99_from_95_percent_validity() -> None:
    """At 600 orders (594 against 570 valid) the better one is above: P(beats) ≥ 0.95."""
    assert separation(600) >= 0.95


def test_one_resold_code_gates_a_high_scorer() -> None:
    """One resold code makes an otherwise gold supplier "gated", below the clean one."""
    orders = make_orders("clean", 600, amount=8.5)
    codes = make_codes("clean", {"valid": 600})
    dirty_orders = make_orders("dirty", 600, amount=8.5)
    dirty_codes = make_codes("dirty", {"valid": 599, "resold": 1})
    table = rank([(orders, codes), (dirty_orders, dirty_codes)]).table.set_index("supplier")
    assert table.loc["clean", "tier"] == "gold" and not table.loc["clean", "gated"]
    assert table.loc["dirty", "score_median"] > 0.9
    assert table.loc["dirty", "tier"] == "gated"
    assert table.loc["dirty", "gated"]
    assert table.loc["dirty", "gate_reasons"] == "resold_codes"
    assert table.loc["dirty", "rank"] > table.loc["clean", "rank"]


def test_low_validity_upper_bound_gates() -> None:
    """Validity whose Jeffreys upper bound is under the floor gates, and says so."""
    table = rank([trial("weak", 200, valid=176)]).table.set_index("supplier")
    assert table.loc["weak", "gated"]
    assert table.loc["weak", "gate_reasons"] == "low_validity"
    assert table.loc["weak", "tier"] == "gated"


def test_wide_score_interval_is_insufficient_evidence() -> None:
    """A 10-order trial at 90% validity has too wide a score interval for any tier."""
    table = rank([trial("tiny", 10, valid=9, late=1)]).table.iloc[0]
    assert table["score_hi"] - table["score_lo"] > FAST.max_interval_width
    assert table["tier"] == INSUFFICIENT


def test_reproducible_from_the_seed() -> None:
    """The same seed gives identical results; another seed gives other draws."""
    parts = [trial("a", 20, valid=19), trial("b", 20, valid=18, late=1)]
    first, again = rank(parts), rank(parts)
    pd.testing.assert_frame_equal(first.table, again.table)
    pd.testing.assert_frame_equal(first.beats, again.beats)
    other = rank(parts, config=RankingConfig(draws=2000, seed=7))
    assert not np.array_equal(first.scores.to_numpy(), other.scores.to_numpy())


def test_missing_criterion_is_unknown_widens_the_interval_and_is_listed() -> None:
    """A supplier without refund data that another has is drawn anywhere in [0, 1] there:
    its interval is wider by about that weight, and refunds is listed as missing."""
    refunds = make_refunds("a", [("completed", True)] * 10)
    result = rank([trial("a", 50, valid=50), trial("b", 50, valid=50)], refunds=refunds)
    table = result.table.set_index("supplier")
    assert "refunds" in result.weights
    assert np.isnan(table.loc["b", "refunds_value"])
    assert table.loc["b", "missing_criteria"] == "refunds, load_errors, load_latency"
    assert table.loc["a", "missing_criteria"] == "load_errors, load_latency"
    assert result.not_measured == ["load_errors", "load_latency"]
    assert table.loc["a", "refunds_value"] == 1.0
    width = table["score_hi"] - table["score_lo"]
    assert width["b"] - width["a"] > 0.3 * result.weights["refunds"]


def test_load_criteria_enter_with_burst_data() -> None:
    """Burst rows switch on both load criteria; a degrading supplier loses exactly that weight."""
    n = 600
    steady = make_orders("steady", n, mode="burst", spacing_s=0.1)
    growing = make_orders("growing", n, mode="burst", spacing_s=0.1,
                          acceptance_ms=[100.0 + 400.0 * i / n for i in range(n)])
    parts = [(pd.concat([make_orders(s, 20), o], ignore_index=True),
              make_codes(s, {"valid": 20})) for s, o in (("steady", steady), ("growing", growing))]
    result = rank(parts)
    table = result.table.set_index("supplier")
    assert {"load_errors", "load_latency"} <= set(result.weights)
    assert table.loc["steady", "load_latency_value"] == 1.0
    growth = table.loc["growing", "load_latency_estimate"]  # about 493 ms / 227 ms
    assert 2.0 < growth < 2.4
    assert table.loc["growing", "load_latency_value"] == pytest.approx((3.0 - growth) / 2.0)
    gap = table.loc["steady", "score_estimate"] - table.loc["growing", "score_estimate"]
    assert gap == pytest.approx(result.weights["load_latency"] * (1.0 - (3.0 - growth) / 2.0))
    assert result.beats.loc["steady", "growing"] > 0.5


def test_tie_groups_only_split_where_every_pair_is_separated() -> None:
    """A middle supplier tying with both neighbours keeps all three in one group."""
    names = ["a", "b", "c"]
    beats = pd.DataFrame([[np.nan, 0.90, 0.99], [0.10, np.nan, 0.90], [0.01, 0.10, np.nan]],
                         index=names, columns=names)
    assert tie_groups(names, beats) == [["a", "b", "c"]]
    beats.loc["b", "c"] = 0.97
    assert tie_groups(names, beats) == [["a", "b"], ["c"]]


def test_ranking_table_columns_are_documented() -> None:
    """Every column of the ranking table is documented, and every criterion has two."""
    table = rank([trial("a", 20, valid=20)]).table
    assert list(table.columns) == list(RANKING_COLUMNS)
    assert {f"{c}_value" for c in CRITERIA} <= set(table.columns)


def test_write_ranking_csv(tmp_path: Path) -> None:
    """ranking.csv and the P(beats) matrix round-trip through CSV."""
    result = rank([trial("a", 50, valid=50), trial("b", 50, valid=45)])
    path = write_ranking_csv(result, tmp_path)
    back = pd.read_csv(path, keep_default_na=False, na_values=[""])
    assert list(back["supplier"]) == list(result.table["supplier"])
    beats = pd.read_csv(tmp_path / "ranking_beats.csv", index_col="supplier")
    assert beats.loc["a", "b"] == pytest.approx(result.beats.loc["a", "b"])


def test_config_defaults_and_validation() -> None:
    """The config has sensible defaults, forbids unknown keys and checks anchors and tiers."""
    config = RankingConfig()
    assert config.anchors.validity == [(0.90, 0.0), (1.00, 1.0)]
    assert config.gold.min_score == 0.8 and config.gold.min_prob == 0.8
    assert RankingConfig.model_validate({"anchors": {"cost": [[1.0, 0], [0.9, 1]]}}
                                        ).anchors.cost == [(0.9, 1.0), (1.0, 0.0)]
    with pytest.raises(ValidationError, match="extra"):
        RankingConfig.model_validate({"weight": {}})
    with pytest.raises(ValidationError, match="distinct"):
        RankingConfig.model_validate({"anchors": {"validity": [[0.9, 0]]}})
    with pytest.raises(ValidationError, match=r"gold\.min_score"):
        RankingConfig.model_validate({"silver": {"min_score": 0.9}})


def test_nothing_to_rank_is_an_error() -> None:
    """Tables without any supplier data raise a ValueError that says what to check."""
    with pytest.raises(ValueError, match="nothing to rank"):
        rank([(empty_orders(), make_codes("x", {}))])


def empty_orders() -> pd.DataFrame:
    """An orders table with no rows."""
    return make_orders("x", 0)
