"""The metrics an SLA can name, and how each is measured from a run's tables.

Every metric has a kind, which decides how a threshold on it is judged and how a change
against a baseline is tested (see :mod:`harness.check.evaluate`):

- ``quantile``: a latency percentile in seconds, from the per-order samples;
- ``rate``: successes ``k`` out of ``n`` (judged on its Jeffreys interval);
- ``value``: a count or an amount measured exactly (codes counted, money from balances).

Which orders feed which metric (the same rules as :mod:`harness.metrics`):

- latency percentiles: delivered burst orders when the supplier has burst orders in the
  runs, else delivered trial orders (orders found only by asking after a crash have no
  delivery time and are left out);
- delivery rates (``within_sla_rate``, ``success_rate``): sent trial orders when the runs
  have trial orders, else sent burst orders;
- codes: every checked code; refunds: every refund requested; load: sent burst orders.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from harness.metrics import as_bool, supplier_metrics, text
from harness.results import RunTables

Kind = Literal["quantile", "rate", "value"]
Test = Literal["bootstrap", "mannwhitney", "beta", "exact", "none"]


@dataclass(frozen=True)
class MetricSpec:
    """One metric an SLA can name."""

    name: str
    kind: Kind
    unit: str
    higher_is_better: bool
    min_samples: int
    """Default smallest sample a threshold on it needs (orders, codes or refunds)."""
    test: Test
    """How a change against a baseline is tested."""
    margin: float
    """Default regression margin: relative for quantiles (0.10 = 10% slower), absolute
    for rates and values (in their own unit)."""
    description: str
    quantile: float = 0.0
    """For quantiles: which one (0.95 for a p95)."""


def _q(name: str, q: float, min_n: int, test: Test, what: str) -> MetricSpec:
    return MetricSpec(name, "quantile", "s", False, min_n, test, 0.10,
                      f"p{round(q * 100)} of {what}, seconds", quantile=q)


METRICS: dict[str, MetricSpec] = {m.name: m for m in (
    _q("delivery_p50_s", 0.50, 10, "mannwhitney", "delivery latency (intended send to "
       "first sight of delivery)"),
    _q("delivery_p90_s", 0.90, 50, "bootstrap", "delivery latency"),
    _q("delivery_p95_s", 0.95, 100, "bootstrap", "delivery latency"),
    _q("delivery_p99_s", 0.99, 500, "bootstrap", "delivery latency"),
    _q("acceptance_p95_s", 0.95, 100, "bootstrap", "acceptance latency (intended send to "
       "accepted)"),
    MetricSpec("within_sla_rate", "rate", "share", True, 20, "beta", 0.05,
               "share of sent orders delivered within the deadline"),
    MetricSpec("success_rate", "rate", "share", True, 20, "beta", 0.05,
               "share of sent orders fully delivered"),
    MetricSpec("validity_rate", "rate", "share", True, 20, "beta", 0.02,
               "share of checked codes that are valid"),
    MetricSpec("burst_error_rate", "rate", "share", False, 100, "beta", 0.02,
               "share of sent burst orders never accepted"),
    MetricSpec("request_error_rate", "rate", "share", False, 50, "beta", 0.02,
               "share of requests that failed against the supplier"),
    MetricSpec("refund_completed_rate", "rate", "share", True, 5, "beta", 0.05,
               "share of requested refunds completed"),
    MetricSpec("refund_credited_rate", "rate", "share", True, 5, "beta", 0.05,
               "share of completed refunds whose money came back"),
    MetricSpec("refund_ok_rate", "rate", "share", True, 5, "beta", 0.05,
               "share of refunds completed, credited and in time"),
    MetricSpec("oversold_rate", "rate", "share", False, 20, "beta", 0.02,
               "share of accepted orders oversold"),
    MetricSpec("oversold_orders", "value", "orders", False, 1, "none", 0.0,
               "accepted orders then failed for stock, partly filled or empty"),
    MetricSpec("invalid_codes", "value", "codes", False, 1, "none", 0.0,
               "checked codes that are not valid"),
    MetricSpec("phantom_refunds", "value", "refunds", False, 1, "none", 0.0,
               "refunds marked completed whose money never came back"),
    MetricSpec("hidden_fee_per_order", "value", "currency units", False, 1, "exact", 0.01,
               "balance drop beyond the listed prices, per order charged"),
    MetricSpec("cost_rate", "value", "ratio", False, 1, "exact", 0.005,
               "(purchase + platform fees + hidden fees) / sale revenue"),
    MetricSpec("throughput_per_s", "value", "orders/s", True, 100, "none", 0.0,
               "burst orders accepted per second of burst"),
)}
"""Every metric a threshold may name, by name."""

KEY_METRICS = ("within_sla_rate", "success_rate", "validity_rate", "delivery_p50_s",
               "delivery_p95_s", "burst_error_rate", "refund_ok_rate",
               "hidden_fee_per_order", "cost_rate")
"""The metrics a history follows for change points, in display order."""


@dataclass
class Measure:
    """One metric of one supplier: the point value and the sample behind it."""

    metric: str
    value: float
    n: int
    k: int = 0
    samples: np.ndarray = field(default_factory=lambda: np.empty(0))
    """Per-order values (seconds) for quantile metrics; empty otherwise."""


def _quantile(samples: np.ndarray, q: float) -> float:
    return float(np.quantile(samples, q, method="inverted_cdf")) if len(samples) \
        else float("nan")


def _latency(own: pd.DataFrame, column: str, delivered_only: bool) -> np.ndarray:
    sent = own[own["state"] != "skipped"]
    if "resolution" in sent:
        sent = sent[text(sent["resolution"]) != "reconciled"]
    pool = sent[sent["mode"] == "burst"]
    if pool.empty:
        pool = sent[sent["mode"] == "trial"]
    if delivered_only:
        pool = pool[as_bool(pool["delivered"]).fillna(False).astype(bool)]
    values = pool[column].astype(float).dropna().to_numpy() / 1000.0
    return np.asarray(values, dtype=float)


def _rate(metric: str, k: float, n: float) -> Measure:
    k_i, n_i = int(k), int(n)
    return Measure(metric, k_i / n_i if n_i else float("nan"), n_i, k_i)


def measure_tables(tables: RunTables, *, refund_deadline_s: float = 3600.0
                   ) -> dict[str, dict[str, Measure]]:
    """``{supplier: {metric: Measure}}`` for every metric of :data:`METRICS`."""
    orders = tables.orders
    modes = ("trial",) if (orders["mode"] == "trial").any() else ("burst",)
    table = supplier_metrics(orders, tables.codes, tables.refunds, tables.suppliers,
                             delivery_modes=modes, refund_deadline_s=refund_deadline_s)
    out: dict[str, dict[str, Measure]] = {}
    for row in table.to_dict("records"):
        name = str(row["supplier"])
        own = orders[orders["supplier"] == name]
        found: dict[str, Measure] = {}
        for spec in METRICS.values():
            if spec.kind != "quantile":
                continue
            column = "acceptance_ms" if spec.name.startswith("acceptance") else "delivery_ms"
            samples = _latency(own, column, column == "delivery_ms")
            found[spec.name] = Measure(spec.name, _quantile(samples, spec.quantile),
                                       len(samples), samples=samples)
        pairs = {"within_sla_rate": "sla_share", "success_rate": "success_rate",
                 "validity_rate": "validity", "burst_error_rate": "load_error_rate",
                 "refund_completed_rate": "refund_completion",
                 "refund_credited_rate": "refund_credit", "refund_ok_rate": "refund_ok",
                 "oversold_rate": "oversold"}
        for metric, column in pairs.items():
            found[metric] = _rate(metric, row[f"{column}_k"], row[f"{column}_n"])
        found["request_error_rate"] = _rate("request_error_rate",
                                            min(row["supplier_errors"], row["requests"]),
                                            row["requests"])
        checked = int(row["validity_n"])
        found["oversold_orders"] = Measure("oversold_orders", float(row["oversold_k"]),
                                           int(row["oversold_n"]))
        found["invalid_codes"] = Measure("invalid_codes", float(checked - row["validity_k"]),
                                         checked)
        found["phantom_refunds"] = Measure("phantom_refunds", float(row["refund_phantom"]),
                                           int(row["refund_completion_k"]))
        charged = tables.suppliers.loc[tables.suppliers["supplier"] == name, "orders_charged"]
        found["hidden_fee_per_order"] = Measure(
            "hidden_fee_per_order", float(row["hidden_fee_per_order"]),
            int(pd.to_numeric(charged, errors="coerce").fillna(0).sum()))
        found["cost_rate"] = Measure("cost_rate", float(row["cost_rate"]),
                                     int(row["sold_orders"]))
        found["throughput_per_s"] = Measure("throughput_per_s", float(row["throughput_per_s"]),
                                            int(row["load_error_rate_n"]))
        for measure in found.values():  # a value that could not be computed has no sample
            if not np.isfinite(measure.value):
                measure.n = 0
        out[name] = found
    return out
