"""Metrics per supplier, from small hand-built tables with the documented columns."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from harness.metrics import (
    BAD_VERDICTS,
    METRICS_COLUMNS,
    check_fees,
    jeffreys,
    rate_intervals,
    supplier_metrics,
    wilson,
)
from harness.results import CODES_COLUMNS, ORDERS_COLUMNS, REFUNDS_COLUMNS, SUPPLIERS_COLUMNS

T0 = pd.Timestamp("2026-11-20T12:00:00", tz="UTC")


def make_orders(supplier: str, n: int, *, mode: str = "trial", late: int = 0, failed: int = 0,
                skipped: int = 0, amount: float = 9.0, sale_price: float = 10.0,
                spacing_s: float = 1.0, acceptance_ms: Sequence[float] | None = None,
                delivery_ms: Sequence[float] | None = None, unaccepted: int = 0,
                run_id: str = "run-1") -> pd.DataFrame:
    """``n`` orders; the last ``failed`` fail, the ``late`` before them miss the deadline."""
    rows = []
    for i in range(n):
        intended = T0 + pd.Timedelta(seconds=i * spacing_s)
        is_failed = i >= n - failed - skipped and i < n - skipped
        is_skipped = i >= n - skipped
        is_late = not is_failed and not is_skipped and n - failed - skipped - late <= i
        is_unaccepted = i < unaccepted
        accept_ms = float("nan") if is_unaccepted or is_skipped else (
            acceptance_ms[i] if acceptance_ms is not None else 200.0)
        deliver_ms = float("nan") if is_failed or is_skipped or is_unaccepted else (
            delivery_ms[i] if delivery_ms is not None else (2_000_000.0 if is_late else 5000.0))
        delivered = not (is_failed or is_skipped or is_unaccepted)
        state = "skipped" if is_skipped else ("success" if delivered else "failed")
        rows.append({
            "run_id": run_id, "mode": mode, "worker": mode, "supplier": supplier,
            "client_order_id": f"{supplier}-{mode}-{i}", "supplier_order_id": f"s{i}",
            "sku": "card-10", "quantity": 1, "intended_at": intended,
            "accepted_at": pd.NaT if math.isnan(accept_ms)
            else intended + pd.Timedelta(milliseconds=accept_ms),
            "final_at": intended + pd.Timedelta(seconds=60), "acceptance_ms": accept_ms,
            "delivery_ms": deliver_ms, "deadline_s": 1800.0,
            "within_deadline": delivered and not is_late, "state": state, "last_state": state,
            "delivered": delivered, "codes_delivered": int(delivered), "listed_price": amount,
            "unit_price": amount, "amount": amount if delivered else 0.0,
            "sale_price": sale_price, "face_value": 10.0, "attempts": 1,
            "errors": int(is_unaccepted), "error_kind": "http_503" if is_unaccepted else "",
            "failure_reason": "out_of_stock" if is_failed else "",
        })
    return pd.DataFrame(rows, columns=list(ORDERS_COLUMNS))


def make_codes(supplier: str, verdicts: dict[str, int]) -> pd.DataFrame:
    """Codes with the given count of each verdict."""
    rows = []
    for verdict, count in verdicts.items():
        for i in range(count):
            rows.append({
                "run_id": "run-1", "supplier": supplier, "client_order_id": f"{supplier}-{i}",
                "sku": "card-10", "code_hash": f"{supplier}{verdict}{i}".ljust(32, "0")[:32],
                "serial_masked": "****-1234", "claimed_face_value": 10.0,
                "expected_face_value": 10.0, "issuer_face_value": 10.0, "expires_at": pd.NaT,
                "pattern_ok": verdict != "bad_pattern",
                "duplicate_of": "this_run" if verdict == "duplicate" else "",
                "face_value_ok": verdict != "wrong_face_value", "expiry_ok": True,
                "issuer_status": "redeemed" if verdict == "resold" else "active",
                "verdict": verdict, "redeemed_sample": False, "redeem_status": "",
            })
    return pd.DataFrame(rows, columns=list(CODES_COLUMNS))


def make_refunds(supplier: str, outcomes: Sequence[tuple[str, bool | None]]) -> pd.DataFrame:
    """One refund per (state, credited) pair; completed ones took 30 s."""
    rows = []
    for i, (state, credited) in enumerate(outcomes):
        done = state == "completed"
        rows.append({
            "run_id": "run-1", "supplier": supplier, "client_order_id": f"{supplier}-{i}",
            "reason": "unused", "requested_at": T0, "request_status": 201,
            "request_error": "", "state": state, "final": state in ("completed", "rejected"),
            "claimed_amount": 9.0, "resolved_at": T0 + pd.Timedelta(seconds=30) if done
            else pd.NaT, "latency_s": 30.0 if done else float("nan"),
            "credited_amount": 9.0 if credited else 0.0, "credited": credited,
        })
    return pd.DataFrame(rows, columns=list(REFUNDS_COLUMNS))


def make_suppliers(supplier: str, hidden_fees: float, orders_charged: int) -> pd.DataFrame:
    """The balance reconciliation row of one supplier."""
    return pd.DataFrame([{
        "run_id": "run-1", "supplier": supplier, "balance_before": 1000.0,
        "balance_after_orders": 800.0, "balance_after": 810.0, "orders_amount": 190.0,
        "orders_charged": orders_charged, "hidden_fees": hidden_fees,
        "hidden_fee_per_order": hidden_fees / orders_charged, "refunds_claimed": 10.0,
        "refunds_credited": 10.0}], columns=list(SUPPLIERS_COLUMNS))


def empty(columns: dict[str, str]) -> pd.DataFrame:
    """An empty table with the documented columns."""
    return pd.DataFrame(columns=list(columns))


def test_wilson_twenty_of_twenty() -> None:
    """20 of 20 successes give the Wilson interval [0.839, 1.0] that the design quotes."""
    lo, hi = wilson(20, 20)
    assert lo == pytest.approx(0.8389, abs=5e-4)
    assert hi == 1.0


def test_wilson_matches_closed_form_midrange() -> None:
    """Wilson for 10 of 20 is symmetric about one half with the textbook half-width."""
    lo, hi = wilson(10, 20)
    assert lo == pytest.approx(1 - hi)
    half = 1.96 * math.sqrt(0.25 / 20 + 1.96**2 / (4 * 20**2)) / (1 + 1.96**2 / 20)
    assert hi - lo == pytest.approx(2 * half)
    assert wilson(0, 0) == (0.0, 1.0)


def test_jeffreys_interval_ends() -> None:
    """Jeffreys is pinned at 0 for k=0 and at 1 for k=n, else Beta(k+½, n−k+½) quantiles."""
    assert jeffreys(20, 20) == (pytest.approx(stats.beta.ppf(0.025, 20.5, 0.5)), 1.0)
    assert jeffreys(0, 20)[0] == 0.0
    lo, hi = jeffreys(19, 20)
    assert 0.75 < lo < 0.8 < 0.95 < hi < 1.0


def test_trial_metrics_by_hand() -> None:
    """A 20-order trial with late, failed and bad codes gives the hand-computed metrics."""
    orders = make_orders("acme", 20, late=2, failed=1, amount=9.0, sale_price=10.0)
    codes = make_codes("acme", {"valid": 16, "resold": 1, "duplicate": 1, "expiring": 1})
    refunds = make_refunds("acme", [("completed", True), ("completed", False), ("refused", None),
                                    ("completed", None)])
    suppliers = make_suppliers("acme", hidden_fees=3.8, orders_charged=19)
    fees = {"acme": {"platform_pct": 2.0, "fixed_per_order": 0.05, "topup_pct": 1.0,
                     "withdrawal_pct": 3.0}}
    row = supplier_metrics(orders, codes, refunds, suppliers, fees).iloc[0]

    assert (row["sla_share_k"], row["sla_share_n"]) == (17, 20)
    assert row["sla_share"] == pytest.approx(0.85)
    assert (row["success_rate_k"], row["success_rate_n"]) == (19, 20)
    assert row["delivery_median_ms"] == 5000.0
    assert (row["validity_k"], row["validity_n"]) == (16, 19)
    assert (row["codes_resold"], row["codes_duplicate"], row["codes_expiring"]) == (1, 1, 1)
    assert row["codes_not_minted"] == 0
    assert (row["refund_completion_k"], row["refund_completion_n"]) == (3, 4)
    assert (row["refund_credit_k"], row["refund_credit_n"]) == (1, 2)
    assert row["refund_latency_median_s"] == 30.0
    assert row["hidden_fee_per_order"] == pytest.approx(0.2)
    # 19 sold orders: cost 19*9 (+1% top-up), revenue 19*10, fees 2% of 190 + 19*0.05,
    # hidden 19*0.2; the withdrawal fee is no sales cost
    expected = (19 * 9 * 1.01 + 0.02 * 190 + 19 * 0.05 + 19 * 0.2) / 190
    assert row["cost_rate"] == pytest.approx(expected)
    assert row["sold_orders"] == 19


def test_skipped_orders_are_not_sent() -> None:
    """Orders skipped by the spending cap count in no rate."""
    orders = make_orders("acme", 10, skipped=4)
    row = supplier_metrics(orders, empty(CODES_COLUMNS), empty(REFUNDS_COLUMNS),
                           empty(SUPPLIERS_COLUMNS)).iloc[0]
    assert (row["sla_share_k"], row["sla_share_n"], row["orders_sent"]) == (6, 6, 6)


def test_percentiles_nan_and_flagged_for_a_twenty_order_trial() -> None:
    """A 20-order trial reports a median but no p90/p95/p99, and says why."""
    orders = make_orders("acme", 20, delivery_ms=[1000.0 * (i + 1) for i in range(20)])
    row = supplier_metrics(orders, empty(CODES_COLUMNS), empty(REFUNDS_COLUMNS),
                           empty(SUPPLIERS_COLUMNS)).iloc[0]
    assert row["delivery_median_ms"] == 10_500.0
    assert not row["percentiles_ok"]
    assert all(math.isnan(row[f"delivery_p{q}_ms"]) for q in (90, 95, 99))


def test_percentiles_reported_for_a_large_burst() -> None:
    """Burst orders past the minimum give percentiles computed over their delivery latency."""
    latencies = [float(i) for i in range(1, 201)]
    orders = make_orders("acme", 200, mode="burst", spacing_s=0.1, delivery_ms=latencies)
    row = supplier_metrics(orders, empty(CODES_COLUMNS), empty(REFUNDS_COLUMNS),
                           empty(SUPPLIERS_COLUMNS)).iloc[0]
    assert row["percentiles_ok"]
    assert row["percentile_n"] == 200
    assert row["delivery_p95_ms"] == pytest.approx(np.percentile(latencies, 95))
    assert row["sla_share_n"] == 0  # delivery metrics come from trial orders only
    assert math.isnan(row["sla_share"])


def test_load_metrics_from_a_degrading_burst() -> None:
    """A burst whose acceptance latency triples shows errors, throughput and that growth."""
    n = 600  # 60 s at 10 orders/s
    acceptance = [100.0 + 200.0 * i / (n - 1) for i in range(n)]
    orders = make_orders("acme", n, mode="burst", spacing_s=0.1, acceptance_ms=acceptance,
                         unaccepted=30)
    row = supplier_metrics(orders, empty(CODES_COLUMNS), empty(REFUNDS_COLUMNS),
                           empty(SUPPLIERS_COLUMNS)).iloc[0]
    assert (row["load_error_rate_k"], row["load_error_rate_n"]) == (30, 600)
    # 570 accepted between the first intended time (0 s) and the last acceptance (59.9 s + 0.3 s)
    assert row["throughput_per_s"] == pytest.approx(570 / (59.9 + 0.3), rel=1e-3)
    # thirds of the 59.9 s span: orders 0 to 199 (the first 30 never accepted) and 400 to 599
    first, last = np.percentile(acceptance[30:200], 95), np.percentile(acceptance[400:], 95)
    assert row["acceptance_p95_first_ms"] == pytest.approx(first)
    assert row["latency_growth"] == pytest.approx(last / first)
    assert 1.7 < row["latency_growth"] < 1.9


def test_latency_growth_nan_for_a_small_burst() -> None:
    """A burst with fewer than the minimum per third reports no latency growth."""
    orders = make_orders("acme", 90, mode="burst", spacing_s=0.1)
    row = supplier_metrics(orders, empty(CODES_COLUMNS), empty(REFUNDS_COLUMNS),
                           empty(SUPPLIERS_COLUMNS)).iloc[0]
    assert math.isnan(row["latency_growth"])
    assert row["load_error_rate_n"] == 90


def test_empty_tables_give_an_empty_metrics_table() -> None:
    """No data gives no rows but every documented column, without warnings."""
    out = supplier_metrics(empty(ORDERS_COLUMNS), empty(CODES_COLUMNS), empty(REFUNDS_COLUMNS),
                           empty(SUPPLIERS_COLUMNS))
    assert list(out.columns) == list(METRICS_COLUMNS)
    assert out.empty


def test_supplier_with_only_codes_has_nan_rates_not_errors() -> None:
    """A supplier seen only in the codes table gets NaN delivery rates with n = 0."""
    out = supplier_metrics(make_orders("acme", 5), make_codes("beta", {"valid": 3}),
                           empty(REFUNDS_COLUMNS), empty(SUPPLIERS_COLUMNS))
    beta = out.set_index("supplier").loc["beta"]
    assert beta["sla_share_n"] == 0 and math.isnan(beta["sla_share"])
    assert beta["validity"] == 1.0
    assert math.isnan(beta["cost_rate"])


def test_rate_intervals_adds_bounds_for_each_rate() -> None:
    """rate_intervals adds Wilson or Jeffreys bounds next to every rate."""
    orders = make_orders("acme", 20)
    metrics = supplier_metrics(orders, make_codes("acme", {"valid": 20}), empty(REFUNDS_COLUMNS),
                               empty(SUPPLIERS_COLUMNS))
    out = rate_intervals(metrics, method="wilson")
    assert out.loc[0, "validity_lo"] == pytest.approx(0.8389, abs=5e-4)
    assert out.loc[0, "validity_hi"] == 1.0
    assert (out.loc[0, "refund_credit_lo"], out.loc[0, "refund_credit_hi"]) == (0.0, 1.0)
    with pytest.raises(ValueError, match="jeffreys"):
        rate_intervals(metrics, method="wald")


def test_fees_reject_unknown_keys() -> None:
    """A misspelt fee key is an error naming the keys to write instead."""
    with pytest.raises(ValueError, match="platform_pct"):
        check_fees({"acme": {"platform_percent": 2.0}})
    assert check_fees({"acme": {"platform_pct": 2.0}})["acme"]["fixed_per_order"] == 0.0


def test_every_bad_verdict_has_a_count_column() -> None:
    """Each bad verdict from the code pipeline has its own documented count column."""
    assert {f"codes_{v}" for v in BAD_VERDICTS} <= set(METRICS_COLUMNS)
    assert "codes_valid" not in METRICS_COLUMNS


def test_orders_charged_with_codes_unobtainable_count_as_oversold() -> None:
    """An order a dialect says exists but cannot show (charged, codes unobtainable) counts
    against its supplier as taken without value, never as merely unknown."""
    from harness.metrics import oversold_mask

    orders = make_orders("s", 4)
    orders["resolution"] = ""
    orders.loc[3, ["state", "accepted_at", "supplier_order_id", "codes_delivered",
                   "resolution"]] = ["unknown", pd.NaT, "", 0, "charged_codes_unobtainable"]
    assert oversold_mask(orders, {"card-10"}).tolist() == [False, False, False, True]
