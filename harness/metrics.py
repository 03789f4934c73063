"""Metrics per supplier: the tables of :mod:`harness.results` in, one row per supplier out.

Pure pandas/scipy (never Locust). Every rate comes with its counts, ``<rate>_k`` successes
out of ``<rate>_n`` trials, so intervals can be computed (:func:`wilson`, :func:`jeffreys`,
:func:`rate_intervals`). Which rows feed which metric:

- delivery (SLA share, success rate, delivery median): orders of ``delivery_modes``
  (default: trial only; a burst is an overload test with its own criteria) that were sent,
  i.e. ``state != "skipped"``;
- delivery percentiles (p90/p95/p99): delivered burst orders, and only when there are at
  least ``min_percentile_orders`` of them (default :data:`PERCENTILE_MIN_ORDERS`);
  otherwise NaN and ``percentiles_ok`` is False. 20 orders cannot give a p95;
- codes: every checked code (``verdict != "unchecked"``), whatever mode delivered it;
- refunds: every refund requested;
- cost: every sold order (delivered and not refunded: a refunded order was never sold, and
  its ``amount`` is what remained after the refund);
- load: burst orders that were sent.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd
from scipy import special  # not scipy.stats: the same functions, 3 s less to import

from harness.codes import VERDICTS
from harness.events import format_error_counts, parse_error_counts

PERCENTILE_MIN_ORDERS = 100
"""Fewest delivered orders from which p90/p95/p99 are reported (else NaN, flagged)."""

BAD_VERDICTS = tuple(v for v in VERDICTS if v not in ("valid", "unchecked"))
"""Every verdict that makes a code bad; each gets a ``codes_<verdict>`` count."""

RATES = ("sla_share", "success_rate", "validity", "refund_completion", "refund_credit",
         "refund_ok", "oversold", "load_error_rate", "load_oversold")
"""Rates in the metrics table; each has ``<rate>_k`` and ``<rate>_n`` columns."""

FEE_KEYS = frozenset({"platform_pct", "fixed_per_order", "topup_pct", "withdrawal_pct"})
"""Keys of a supplier's fees (the scenario's ``fees``): percents are 0–100, fixed is money.
``topup_pct`` is paid on the money loaded to buy with, so it adds that percent of the purchase
cost; ``withdrawal_pct`` applies only to unspent balance taken back and is not a sales cost."""

METRICS_COLUMNS: dict[str, str] = {
    "supplier": "supplier name",
    "orders_sent": "orders of any mode not skipped by the spending cap",
    "orders_skipped": "orders the spending cap kept unsent (state skipped), any mode",
    "requests": "requests sent for the sent orders (POSTs and GETs), any mode",
    "supplier_errors": "failed requests that count against the supplier (all but 404s to the "
                       "harness's own GETs), any mode",
    "harness_requests": "the harness's own extra requests: re-POSTs after a 429 and GETs "
                        "resolving an unknown outcome, any mode",
    "error_classes": "failed requests by class, e.g. '503:2 timeout:1' ('-' if none)",
    "oversold": "share of accepted orders oversold: then failed for stock, partly filled, or "
                "'success' without a code for a card product (0–1), any mode",
    "oversold_k": "accepted orders oversold",
    "oversold_n": "accepted orders",
    "sla_share": "share of sent delivery-mode orders delivered within the deadline (0–1)",
    "sla_share_k": "delivery-mode orders delivered within the deadline",
    "sla_share_n": "delivery-mode orders sent",
    "success_rate": "share of sent delivery-mode orders fully delivered (success/refunded)",
    "success_rate_k": "delivery-mode orders fully delivered",
    "success_rate_n": "delivery-mode orders sent",
    "partial_orders": "delivery-mode orders only partly filled",
    "delivery_n": "delivery-mode orders with a delivery latency",
    "delivery_median_ms": "median delivery latency of delivery-mode orders, milliseconds",
    "percentile_n": "delivered burst orders with a delivery latency",
    "delivery_p90_ms": "p90 delivery latency of burst orders, ms (NaN below the minimum)",
    "delivery_p95_ms": "p95 delivery latency of burst orders, ms (NaN below the minimum)",
    "delivery_p99_ms": "p99 delivery latency of burst orders, ms (NaN below the minimum)",
    "percentiles_ok": "percentile_n reached the minimum, so the percentiles are reported (bool)",
    "validity": "share of checked codes with verdict valid (0–1)",
    "validity_k": "valid codes",
    "validity_n": "checked codes (verdict other than unchecked)",
    **{f"codes_{v}": f"codes with verdict {v}" for v in BAD_VERDICTS},
    "refund_completion": "share of requested refunds that reached completed (0–1)",
    "refund_completion_k": "refunds completed",
    "refund_completion_n": "refunds requested",
    "refund_credit": "share of completed refunds whose money came back (0–1)",
    "refund_credit_k": "completed refunds credited",
    "refund_credit_n": "completed refunds whose credit is known",
    "refund_latency_median_s": "median request-to-completion time of completed refunds, s",
    "refund_latency_max_s": "longest request-to-completion time of completed refunds, s",
    "refund_uncredited": "money of completed refunds the balance never showed (claimed minus "
                         "credited over the refund phase), currency units",
    "refund_phantom": "refunds marked completed whose money never reached the balance: "
                      "per refund where known, else the uncredited money / the mean claim",
    "refund_slow": "completed refunds that took longer than the refund deadline",
    "refund_ok": "share of requested refunds completed, credited (or credit unknown) and "
                 "within the refund deadline (0–1)",
    "refund_ok_k": "refunds completed, credited and in time",
    "refund_ok_n": "refunds requested",
    "hidden_fee_per_order": "hidden fees / orders charged, from the balance, currency units",
    "hidden_fee_unexplained_per_order": "the part of hidden_fee_per_order that orders left "
                                        "unknown (which may hold money) cannot explain: "
                                        "(hidden fees - listed price × quantity of unknown "
                                        "orders) / orders charged, at least 0",
    "sold_orders": "orders delivered and not refunded",
    "purchase_cost": "sum of amount over sold orders, currency units",
    "platform_fees": "platform_pct % of sale_revenue + fixed_per_order per sold order "
                     "+ topup_pct % of purchase_cost, currency units",
    "hidden_fees": "hidden_fee_per_order × sold_orders, currency units (0 if unknown)",
    "sale_revenue": "sale_price × units delivered over sold orders, currency units",
    "cost_rate": "(purchase_cost + platform_fees + hidden_fees) / sale_revenue (NaN if no sale)",
    "load_error_rate": "share of sent burst orders never accepted (0–1)",
    "load_error_rate_k": "burst orders never accepted",
    "load_error_rate_n": "burst orders sent",
    "load_oversold": "share of accepted burst orders oversold (0–1)",
    "load_oversold_k": "accepted burst orders oversold",
    "load_oversold_n": "accepted burst orders",
    "load_error_classes": "failed burst requests by class, e.g. '503:2 timeout:1'",
    "throughput_per_s": "burst orders accepted per second of burst (first intended to last "
                        "accepted), summed over runs",
    "acceptance_p95_first_ms": "p95 acceptance latency in the first third of the burst, ms",
    "acceptance_p95_last_ms": "p95 acceptance latency in the last third of the burst, ms",
    "latency_growth": "acceptance_p95_last_ms / acceptance_p95_first_ms (NaN when either "
                      "third has fewer than the percentile minimum)",
}
"""The metrics table, column by column with its unit."""


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes in ``n`` trials; ``(0, 1)`` when n is 0."""
    if n <= 0:
        return (0.0, 1.0)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, float(centre - half)), min(1.0, float(centre + half)))


def jeffreys(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Equal-tailed Jeffreys interval, Beta(k+½, n−k+½); 0 at k=0 and 1 at k=n (Brown et al.)."""
    alpha = (1 - level) / 2
    # special.betaincinv(a, b, q) is what scipy.stats.beta.ppf(q, a, b) computes (Boost's
    # inverse of the regularised incomplete beta), without importing scipy.stats
    lo = 0.0 if k <= 0 else float(special.betaincinv(k + 0.5, n - k + 0.5, alpha))
    hi = 1.0 if k >= n else float(special.betaincinv(k + 0.5, n - k + 0.5, 1 - alpha))
    return (lo, hi)


def rate_intervals(metrics: pd.DataFrame, method: str = "jeffreys",
                   level: float = 0.95) -> pd.DataFrame:
    """A copy of ``metrics`` with ``<rate>_lo`` and ``<rate>_hi`` for every rate in it."""
    if method not in ("jeffreys", "wilson"):
        raise ValueError(f"method must be 'jeffreys' or 'wilson', not {method!r}")
    z = float(special.ndtri(1 - (1 - level) / 2))  # = scipy.stats.norm.ppf
    out = metrics.copy()
    for rate in RATES:
        if f"{rate}_k" not in out.columns:
            continue
        bounds = [jeffreys(int(k), int(n), level) if method == "jeffreys" else wilson(k, n, z)
                  for k, n in zip(out[f"{rate}_k"], out[f"{rate}_n"], strict=True)]
        out[f"{rate}_lo"] = [b[0] for b in bounds]
        out[f"{rate}_hi"] = [b[1] for b in bounds]
    return out


def check_fees(fees: Mapping[str, Mapping[str, float]] | None) -> dict[str, dict[str, float]]:
    """Validate ``{supplier: {key: amount}}`` with keys from :data:`FEE_KEYS`; absent = 0."""
    out: dict[str, dict[str, float]] = {}
    for supplier, entry in (fees or {}).items():
        unknown = set(entry) - FEE_KEYS
        if unknown:
            raise ValueError(f"fees for {supplier!r}: unknown keys {sorted(unknown)}; "
                             f"write only {sorted(FEE_KEYS)}")
        out[supplier] = {key: float(entry.get(key, 0.0)) for key in FEE_KEYS}
    return out


def seconds(series: pd.Series) -> pd.Series:
    """Timestamps (UTC, or naive taken as UTC) as float Unix seconds."""
    ts = pd.to_datetime(series, utc=True)
    return (ts - pd.Timestamp(0, tz="UTC")).dt.total_seconds()


def as_bool(series: pd.Series) -> pd.Series:
    """A column of bools that may hold None/NaN, as pandas' nullable boolean."""
    return series.astype("boolean")


def text(series: pd.Series) -> pd.Series:
    """A column of strings that may hold None/NaN, with "" for the missing ones."""
    dtype = series.dtype
    if isinstance(dtype, pd.StringDtype) and dtype.na_value is np.nan:
        # pandas' own "str" columns (as read from Parquet): the same answer, without
        # turning every value into a Python object and back
        return series.fillna("")
    return series.astype(object).where(series.notna(), "").astype(str)


def sold_mask(orders: pd.DataFrame) -> pd.Series:
    """Orders delivered and not refunded: the ones the merchant sold."""
    return orders["state"].isin(("success", "partial"))


def units_delivered(orders: pd.DataFrame) -> pd.Series:
    """Units delivered per order: the quantity, or the codes received for a partial fill."""
    partial = orders["state"] == "partial"
    units = orders["quantity"].astype(float).where(~partial, orders["codes_delivered"])
    return units.astype(float)


def burst_thirds(burst: pd.DataFrame) -> pd.Series:
    """Which third of its run's time span (0, 1, 2) each burst order was intended in."""
    t = seconds(burst["intended_at"])
    start = t.groupby(burst["run_id"]).transform("min")
    span = t.groupby(burst["run_id"]).transform("max") - start
    frac = ((t - start) / span.where(span > 0, 1.0)).clip(0, 1)
    return np.minimum((frac * 3).astype(int), 2)


def _median(values: pd.Series) -> float:
    clean = values.dropna()
    return float(clean.median()) if len(clean) else float("nan")


def _ratio(k: float, n: float) -> float:
    return float(k / n) if n else float("nan")


def _delivery(sent: pd.DataFrame, burst: pd.DataFrame, min_n: int) -> dict[str, Any]:
    k_sla = int(as_bool(sent["within_deadline"]).fillna(False).sum())
    k_ok = int(sent["state"].isin(("success", "refunded")).sum())
    delivered = as_bool(burst["delivered"]).fillna(False).astype(bool)
    delivered_burst = burst.loc[delivered, "delivery_ms"].dropna()
    ok = len(delivered_burst) >= min_n
    pct = {f"delivery_p{q}_ms": float(np.percentile(delivered_burst, q)) if ok else float("nan")
           for q in (90, 95, 99)}
    return {
        "sla_share": _ratio(k_sla, len(sent)), "sla_share_k": k_sla, "sla_share_n": len(sent),
        "success_rate": _ratio(k_ok, len(sent)), "success_rate_k": k_ok,
        "success_rate_n": len(sent), "partial_orders": int((sent["state"] == "partial").sum()),
        "delivery_n": int(sent["delivery_ms"].notna().sum()),
        "delivery_median_ms": _median(sent["delivery_ms"]),
        "percentile_n": len(delivered_burst), **pct, "percentiles_ok": ok,
    }


def _codes(codes: pd.DataFrame) -> dict[str, Any]:
    checked = codes[codes["verdict"].notna() & (codes["verdict"] != "unchecked")]
    k = int((checked["verdict"] == "valid").sum())
    counts = checked["verdict"].value_counts()
    return {"validity": _ratio(k, len(checked)), "validity_k": k, "validity_n": len(checked),
            **{f"codes_{v}": int(counts.get(v, 0)) for v in BAD_VERDICTS}}


def _uncredited(balances: pd.DataFrame) -> float:
    """Money the supplier says it refunded (completed) that the balance never showed."""
    claimed = balances["refunds_claimed"].astype(float)
    back = balances["refunds_credited"].astype(float)
    gap = (claimed - back).dropna()
    return float(gap.clip(lower=0).sum()) if len(gap) else 0.0


def _refunds(refunds: pd.DataFrame, deadline_s: float, balances: pd.DataFrame
             ) -> dict[str, Any]:
    done = refunds[refunds["state"] == "completed"]
    credited = as_bool(done["credited"])
    known = credited.notna()
    k_credit = int(credited[known].sum())
    latency = done["latency_s"].astype(float)
    in_time = latency.le(deadline_s)  # unknown latency: not shown in time
    ok = int((in_time & credited.fillna(True).astype(bool)).sum())
    phantom = int((credited[known] == False).sum())  # noqa: E712 (nullable boolean)
    # when refunds overlap, the trial cannot tell which one the balance credited: the
    # supplier's reconciliation still shows how much never came back
    uncredited = _uncredited(balances) if len(balances) else 0.0
    claims = done["claimed_amount"].astype(float).dropna()
    if uncredited >= 0.01 and len(claims) and float(claims.mean()) > 0:
        from_balance = min(len(done), max(1, round(uncredited / float(claims.mean()))))
        if from_balance > phantom:
            ok = max(0, ok - (from_balance - phantom))
            phantom = from_balance
    return {
        "refund_latency_max_s": float(latency.max()) if latency.notna().any()
        else float("nan"),
        "refund_uncredited": uncredited,
        "refund_phantom": phantom,
        "refund_slow": int(latency.gt(deadline_s).sum()),
        "refund_ok": _ratio(ok, len(refunds)), "refund_ok_k": ok, "refund_ok_n": len(refunds),
        "refund_completion": _ratio(len(done), len(refunds)),
        "refund_completion_k": len(done), "refund_completion_n": len(refunds),
        "refund_credit": _ratio(k_credit, int(known.sum())),
        "refund_credit_k": k_credit, "refund_credit_n": int(known.sum()),
        "refund_latency_median_s": _median(done["latency_s"].astype(float)),
    }


def _unexplained_fee(rows: pd.DataFrame, sent: pd.DataFrame) -> float:
    """Hidden fees per order charged beyond what unknown orders could have taken."""
    charged = float(rows["orders_charged"].sum())
    fees = rows["hidden_fees"].astype(float).dropna()
    if not charged or not len(fees):
        return float("nan")
    unknown = sent[sent["state"] == "unknown"]
    exposure = float((unknown["listed_price"].astype(float).fillna(0.0)
                      * unknown["quantity"].astype(float)).sum())
    return max(0.0, float(fees.sum()) - exposure) / charged


def _hidden_fee_per_order(rows: pd.DataFrame) -> float:
    charged = float(rows["orders_charged"].sum())
    fees = rows["hidden_fees"].astype(float).dropna()
    return float(fees.sum() / charged) if charged and len(fees) else float("nan")


def _cost(orders: pd.DataFrame, fee: dict[str, float], hidden_per_order: float) -> dict[str, Any]:
    sold = orders[sold_mask(orders)]
    revenue = float((sold["sale_price"].astype(float) * units_delivered(sold)).sum())
    purchase = float(sold["amount"].astype(float).sum())
    platform = (fee["platform_pct"] / 100 * revenue + fee["fixed_per_order"] * len(sold)
                + fee["topup_pct"] / 100 * purchase)
    hidden = 0.0 if np.isnan(hidden_per_order) else hidden_per_order * len(sold)
    total = purchase + platform + hidden
    return {"sold_orders": len(sold), "purchase_cost": purchase, "platform_fees": platform,
            "hidden_fees": hidden, "sale_revenue": revenue,
            "cost_rate": total / revenue if revenue > 0 else float("nan")}


UNOBTAINABLE = "charged_codes_unobtainable"
"""An order's resolution when the dialect says a repeat of it already exists but gives no
way to read it: charged, with no codes to show for it (see the dialect driver)."""


def taken(orders: pd.DataFrame) -> pd.Series:
    """Orders the supplier holds: accepted, or charged with codes unobtainable."""
    unobtainable = text(orders["resolution"]).eq(UNOBTAINABLE) if "resolution" in orders \
        else pd.Series(False, index=orders.index)
    return orders["accepted_at"].notna() | text(orders["supplier_order_id"]).ne("") \
        | unobtainable


def oversold_mask(orders: pd.DataFrame, card_skus: set[str]) -> pd.Series:
    """Orders the supplier took and could not fill: failed for stock afterwards, partly
    filled, "success" without a code for a product that delivers codes (``card_skus``),
    or charged with codes unobtainable."""
    reason = text(orders["failure_reason"]).str.lower()
    for_stock = (orders["state"] == "failed") & reason.str.contains("stock")
    empty = (orders["state"] == "success") & orders["codes_delivered"].fillna(0).eq(0) \
        & orders["sku"].isin(card_skus)
    unobtainable = text(orders["resolution"]).eq(UNOBTAINABLE) if "resolution" in orders \
        else pd.Series(False, index=orders.index)
    return taken(orders) & ((orders["state"] == "partial") | for_stock | empty | unobtainable)


def _requests(sent: pd.DataFrame) -> dict[str, Any]:
    totals: Counter[str] = Counter()
    # each distinct text parsed once, times the orders that have it
    for item, orders in text(sent.get("error_classes", pd.Series(dtype=str))) \
            .value_counts(sort=False).items():
        for name, count in parse_error_counts(str(item)).items():
            totals[name] += count * int(orders)
    supplier = sent["supplier_errors"] if "supplier_errors" in sent else sent["errors"]
    harness = (sent["posts"].fillna(0).clip(lower=1) - 1 + sent["resolve_gets"].fillna(0)) \
        if {"posts", "resolve_gets"} <= set(sent.columns) else pd.Series(0, index=sent.index)
    return {"requests": int(sent["attempts"].fillna(0).sum()),
            "supplier_errors": int(supplier.fillna(0).sum()),
            "harness_requests": int(harness.sum()),
            "error_classes": format_error_counts(totals)}


def _load(burst: pd.DataFrame, min_n: int) -> dict[str, Any]:
    accepted = burst["accepted_at"].notna()
    k_err = int((~accepted).sum())
    out: dict[str, Any] = {
        "load_error_rate": _ratio(k_err, len(burst)), "load_error_rate_k": k_err,
        "load_error_rate_n": len(burst),
        "load_error_classes": _requests(burst)["error_classes"] if len(burst) else "-",
        "throughput_per_s": float("nan"),
        "acceptance_p95_first_ms": float("nan"), "acceptance_p95_last_ms": float("nan"),
        "latency_growth": float("nan"),
    }
    if not len(burst):
        return out
    duration_s = 0.0
    for _, run in burst.groupby("run_id", sort=False):
        ends = seconds(run["accepted_at"].dropna())
        if len(ends):
            duration_s += float(ends.max() - seconds(run["intended_at"]).min())
    if duration_s > 0:
        out["throughput_per_s"] = int(accepted.sum()) / duration_s
    thirds = burst_thirds(burst)
    lat = burst["acceptance_ms"].astype(float)
    first, last = lat[thirds == 0].dropna(), lat[thirds == 2].dropna()
    if len(first) >= min_n and len(last) >= min_n:
        p_first, p_last = float(np.percentile(first, 95)), float(np.percentile(last, 95))
        out["acceptance_p95_first_ms"], out["acceptance_p95_last_ms"] = p_first, p_last
        out["latency_growth"] = p_last / p_first if p_first > 0 else float("nan")
    return out


def suppliers_in(*frames: pd.DataFrame) -> list[str]:
    """Every supplier named in any of the tables, sorted."""
    names: set[str] = set()
    for frame in frames:
        if "supplier" in frame.columns:
            names.update(str(s) for s in frame["supplier"].dropna().unique())
    return sorted(names)


def rows_by_supplier(frame: pd.DataFrame) -> Callable[[str], pd.DataFrame]:
    """``rows(name)`` gives ``frame[frame["supplier"] == name]`` (the same rows, in the same
    order, with the same index), from one groupby rather than a comparison over the whole
    frame for every supplier."""
    if "supplier" not in frame.columns or frame.empty:
        return lambda name: frame[frame["supplier"] == name]
    positions = frame.groupby("supplier", sort=False, observed=True, dropna=True).indices

    def rows(name: str) -> pd.DataFrame:
        at = positions.get(name)
        return frame[frame["supplier"] == name] if at is None else frame.take(at)

    return rows


def _flags(mask: pd.Series) -> np.ndarray[tuple[int], np.dtype[np.bool_]]:
    """A row mask as numpy bools, a missing value as False (as boolean indexing takes it)."""
    out: np.ndarray[tuple[int], np.dtype[np.bool_]] = mask.to_numpy(dtype=bool, na_value=False)
    return out


_PER_SUPPLIER_COLUMNS = frozenset({
    "state", "mode", "run_id", "intended_at", "accepted_at", "acceptance_ms", "delivery_ms",
    "within_deadline", "delivered", "listed_price", "quantity", "sale_price",
    "codes_delivered", "amount", "attempts", "errors", "supplier_errors", "posts",
    "resolve_gets", "error_classes"})
"""The orders columns the per-supplier parts of :func:`supplier_metrics` read
(:func:`_requests`, :func:`_delivery`, :func:`_unexplained_fee`, :func:`_cost`,
:func:`_load`): only these are copied for each supplier."""


def supplier_metrics(orders: pd.DataFrame, codes: pd.DataFrame, refunds: pd.DataFrame,
                     suppliers: pd.DataFrame,
                     fees: Mapping[str, Mapping[str, float]] | None = None, *,
                     delivery_modes: tuple[str, ...] = ("trial",),
                     min_percentile_orders: int = PERCENTILE_MIN_ORDERS,
                     refund_deadline_s: float = 3600.0) -> pd.DataFrame:
    """One row per supplier with the columns of :data:`METRICS_COLUMNS`.

    ``fees`` is ``{supplier: {"platform_pct": percent of sale revenue, "fixed_per_order":
    currency units, ...}}`` (see :data:`FEE_KEYS`); a supplier absent from it pays none.
    """
    fee_map = check_fees(fees)
    card_skus = {str(s) for s in codes["sku"].dropna().unique()} if "sku" in codes else set()
    # row-wise masks over every order once; each supplier's rows are picked by position
    state = orders["state"]
    sent_all = _flags(state != "skipped")
    # an order found by asking after a crash has no delivery time: not an SLA sample
    timed = _flags(text(orders["resolution"]) != "reconciled") if "resolution" in orders \
        else np.ones(len(orders), dtype=bool)
    delivery_all = _flags(orders["mode"].isin(delivery_modes)) & timed
    burst_all = _flags(orders["mode"] == "burst")
    taken_all = _flags(taken(orders))
    oversold_all = _flags(oversold_mask(orders, card_skus))
    if "supplier" in orders.columns and len(orders):
        positions = orders.groupby("supplier", sort=False, observed=True,
                                   dropna=True).indices
    else:
        positions = {}
    needed = orders[[c for c in orders.columns if c in _PER_SUPPLIER_COLUMNS]]
    # _codes reads only the verdict: each supplier's codes rows without the hashes and texts
    codes_of = rows_by_supplier(codes[[c for c in codes.columns if c in ("supplier", "verdict")]])
    refunds_of = rows_by_supplier(refunds)
    suppliers_of = rows_by_supplier(suppliers)
    rows = []
    for name in suppliers_in(orders, codes, refunds, suppliers):
        own_at = positions.get(name)
        if own_at is None:
            own_at = np.flatnonzero(_flags(orders["supplier"] == name))
        sent_at = own_at[sent_all[own_at]]
        burst_at = sent_at[burst_all[sent_at]]
        sent = needed.take(sent_at)
        delivery = sent[delivery_all[sent_at]]
        burst = sent[burst_all[sent_at]]
        own_suppliers = suppliers_of(name)
        hidden = _hidden_fee_per_order(own_suppliers)
        fee = fee_map.get(name, {key: 0.0 for key in FEE_KEYS})
        rows.append({
            "supplier": name, "orders_sent": len(sent),
            "orders_skipped": int((~sent_all[own_at]).sum()),
            **_requests(sent), **_oversold_counts(sent_at, taken_all, oversold_all, "oversold"),
            **_oversold_counts(burst_at, taken_all, oversold_all, "load_oversold"),
            **_delivery(delivery, burst, min_percentile_orders),
            **_codes(codes_of(name)),
            **_refunds(refunds_of(name), refund_deadline_s, own_suppliers),
            "hidden_fee_per_order": hidden,
            "hidden_fee_unexplained_per_order": _unexplained_fee(own_suppliers, sent),
            **_cost(sent, fee, hidden),
            **_load(burst, min_percentile_orders),
        })
    return pd.DataFrame(rows, columns=list(METRICS_COLUMNS))


def _oversold_counts(at: np.ndarray[tuple[int], np.dtype[np.intp]],
                     taken_all: np.ndarray[tuple[int], np.dtype[np.bool_]],
                     oversold_all: np.ndarray[tuple[int], np.dtype[np.bool_]],
                     prefix: str) -> dict[str, Any]:
    """Accepted orders (:func:`taken`) among the orders at positions ``at``, and how many of
    them were oversold (:func:`oversold_mask`, which holds only where :func:`taken` does),
    from the row masks of every order."""
    k, n = int(oversold_all[at].sum()), int(taken_all[at].sum())
    return {prefix: _ratio(k, n), f"{prefix}_k": k, f"{prefix}_n": n}
