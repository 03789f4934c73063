"""The table builder as it was before issue 13 (commit 7b1263a), kept unchanged as the
reference: it reads every event into memory and sorts them all. The streaming builder in
``harness.results`` must give the same tables (tests/test_tables_stream.py), and
``bench/run_bench.py`` times the two side by side. Not used by the harness.

Results: the run folder, and the tables derived from its event log.

A run is ``results/<run-id>/`` holding ``manifest.json``, the event log
(``events*.jsonl``, one shard per writer) and Parquet tables built from the log by
:func:`build_tables`. The tables are the contract with analysis, reports and notebooks;
every column is documented below with its unit, and :data:`SCHEMAS` is checked by tests.

Events the tables are built from (fields beyond ``t``/``type``):

- ``order_planned``: mode, worker, supplier, client_order_id, sku, quantity, intended_at
  (Unix s), deadline_s, listed_price, sale_price, face_value. Written *before* sending.
- ``order_attempt``: supplier, client_order_id, attempt (1-based), method (POST or GET),
  purpose (place, repost, resolve, poll, final_look; see ``harness.run.lifecycle``).
  Written before the request is sent.
- ``order_error``: supplier, client_order_id, kind, status, phase (place, resolve or
  follow).
- ``order_accepted``: supplier, client_order_id, status (201 or 200), supplier_order_id,
  state, unit_price, amount, via (post, or get after an unknown outcome).
- ``order_observed``: supplier, client_order_id, state, updated_at, source (post, poll,
  callback).
- ``order_final``: supplier, client_order_id, state, last_state, amount, unit_price,
  codes_delivered, delivered_at (supplier's time, RFC 3339 or null), failure_reason,
  within_deadline, delivered_seen_at (Unix s or null), skipped (cap or null), accepted,
  resolution (refused:<kind>, unknown_outcome, not_found_after_window, reconciled,
  unknown_after_resume, never_sent, or null), interrupted.
- ``spend_blocked``: supplier, client_order_id, needed, committed, fees (hidden fees
  counted from balance reads), cap: the supplier's share of the cap did not allow it.
- ``balance_read`` with phase ``spend_check``: read near the cap so hidden fees count.
- ``run_interrupted`` (reason), ``trial_finished`` (budgets, retries): a run without its
  finish event (``trial_finished``, ``burst_finished`` not interrupted, or
  ``resume_finished`` after the last ``run_resumed``) was interrupted.
- Written by ``trialbench resume`` (shard ``events-resume-<n>.jsonl``): ``run_resumed``,
  ``order_resumed`` (client_order_id, intended_at, posted_at: when the log last saw a POST
  or null), ``order_absent`` (a 404 after the window: placed anew, new intended_at),
  ``refund_resumed``, ``refund_requested`` with via="resume", ``resume_finished``.
- ``code_checked``: supplier, client_order_id, sku, and the fields of ``CodeCheck``.
- ``code_redeemed``: supplier, client_order_id, code_hash, status; ``redeem_attempt``
  (supplier, client_order_id, code_hash) is written before the redeem is sent.
- ``refund_attempt``: supplier, client_order_id, reason; written before the refund
  request is sent.
- ``refund_requested`` / ``refund_final``: see the refunds table.
- ``balance_read``: supplier, phase (before, after_orders, after_refunds), balance.
- ``callback_received``: supplier, client_order_id, verdict (accepted, stale, forged, bad).

Bursts (``harness.run.burst``) write the same order events with mode="burst" and
worker=<id>, from one shard per worker (``events-<worker>.jsonl``), plus:

- ``burst_started`` (master): t0 (Unix s), phases, scheduled_per_second
  ({supplier: [orders due in second 0, 1, ...]}), workers.
- ``order_planned`` also carries started_at (Unix s, when the POST was really begun),
  phase and index; ``schedule_slip``: supplier, client_order_id, intended_at,
  started_at, slip_ms (written when an order starts late).
- ``burst_aborted`` (reason), ``burst_finished``, ``burst_worker_*``.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.errors import ResultsError
from harness.events import (
    error_bucket,
    format_error_counts,
    is_supplier_error,
    parse_error_counts,
    read_events,
    run_complete,
)

RESULTS_ROOT = Path("results")

ORDERS_COLUMNS: dict[str, str] = {
    "run_id": "run folder name",
    "mode": "trial or burst",
    "worker": "writer of the events (trial, or burst worker id)",
    "supplier": "supplier name from the scenario",
    "client_order_id": "the merchant's order id (idempotency key)",
    "supplier_order_id": "the supplier's id; empty if never accepted",
    "sku": "product ordered",
    "quantity": "units ordered",
    "intended_at": "when the order was scheduled to be sent (UTC timestamp)",
    "accepted_at": "when the harness learned it was accepted (UTC timestamp; NaT if never)",
    "final_at": "when following stopped (UTC timestamp)",
    "acceptance_ms": "accepted_at - intended_at, milliseconds (NaN if never accepted)",
    "delivery_ms": "first sight of delivery - intended_at, milliseconds (NaN if not delivered)",
    "deadline_s": "the delivery SLA, seconds",
    "within_deadline": "delivered no later than intended_at + deadline_s (bool)",
    "state": "canonical final state: success, partial, failed, refunded, unknown, skipped",
    "last_state": "last state the supplier reported (unknown if none)",
    "delivered": "codes issued or top-up made (bool)",
    "codes_delivered": "number of codes received",
    "listed_price": "catalog price per unit at the time of ordering, currency units",
    "unit_price": "price per unit the supplier charged, currency units (NaN if unknown)",
    "amount": "taken from the balance by this order as last reported, currency units",
    "sale_price": "merchant's sale price per unit (scenario), currency units",
    "face_value": "expected face value per unit (scenario), currency units",
    "attempts": "requests sent for this order (POST and GET)",
    "posts": "POSTs sent: the first, and re-POSTs of the same id after a 429",
    "resolve_gets": "GETs asking about an unknown outcome (drawn on the retry budget)",
    "polls": "GETs following an order the supplier holds (polls and a final look)",
    "resolution": "how a POST without a readable answer ended: refused:<kind>, "
                  "unknown_outcome, not_found_after_window; after a resume: reconciled "
                  "(found by asking; its delivery time is unknown), unknown_after_resume, "
                  "never_sent; empty if accepted at once",
    "errors": "failed requests for this order (any kind)",
    "supplier_errors": "failed requests that count against the supplier: all but 404s to "
                       "the harness's own GETs (harness.events.is_supplier_error)",
    "error_classes": "failed requests by class (harness.events.error_bucket), e.g. "
                     "'503:2 not_found:1'; '-' if none",
    "error_kind": "kind of the last failed POST if never accepted (e.g. http_503), else empty",
    "failure_reason": "supplier's reason when failed",
}

CODES_COLUMNS: dict[str, str] = {
    "run_id": "run folder name",
    "mode": "trial or burst: the kind of run that received the code",
    "supplier": "supplier name",
    "client_order_id": "order the code came with",
    "sku": "product",
    "code_hash": "keyed HMAC-SHA256 of the serial (hex, 32 chars); plain codes never stored here",
    "serial_masked": "serial with all but the last 4 letters/digits masked",
    "claimed_face_value": "face value the supplier claims, currency units",
    "expected_face_value": "face value from the scenario, currency units",
    "issuer_face_value": "face value the issuer reports, currency units (NaN if unknown)",
    "expires_at": "expiry (UTC timestamp; NaT if none)",
    "pattern_ok": "serial matches the product's pattern (bool; NA if no pattern)",
    "duplicate_of": "this_run or earlier_run if the code was seen before, else empty",
    "face_value_ok": "claimed and issuer face values equal the expected one (bool)",
    "expiry_ok": "expires no sooner than the scenario's margin (bool)",
    "issuer_status": "active, redeemed, expired, disabled, not_found, or unchecked",
    "verdict": "valid, or the fault: bad_pattern, duplicate, wrong_face_value, not_minted, "
               "resold, expired, disabled, expiring",
    "redeemed_sample": "redeemed at the issuer as part of the sample (bool)",
    "redeem_status": "issuer's answer to the redemption, empty if not redeemed",
}

REFUNDS_COLUMNS: dict[str, str] = {
    "run_id": "run folder name",
    "mode": "trial or burst: the kind of run that requested the refund",
    "supplier": "supplier name",
    "client_order_id": "order refunded",
    "reason": "unused, invalid_code, wrong_face_value, not_delivered, other",
    "requested_at": "when the request was sent: its refund_attempt, logged before sending "
                    "(UTC timestamp)",
    "request_status": "HTTP status of the request (0: no answer)",
    "request_error": "error code when refused (e.g. refund_not_allowed), else empty",
    "state": "last refund state: pending, approved, rejected, completed, refused, error",
    "final": "reached rejected or completed while followed (bool)",
    "claimed_amount": "what the supplier says it returns, currency units (NaN if unknown)",
    "resolved_at": "when it reached a final state, as first seen (UTC timestamp)",
    "latency_s": "resolved_at - requested_at, seconds",
    "credited_amount": "balance increase attributed to this refund, currency units",
    "credited": "money really back: credited_amount covers claimed_amount (bool; NA unknown)",
}

SUPPLIERS_COLUMNS: dict[str, str] = {
    "run_id": "run folder name",
    "supplier": "supplier name",
    "balance_before": "balance before the first order, currency units",
    "balance_after_orders": "balance once every order was final or past its deadline",
    "balance_after": "balance after refunds were followed",
    "orders_amount": "sum of order amounts reported before refunds, currency units",
    "orders_charged": "orders with a non-zero amount",
    "hidden_fees": "balance drop not explained by order amounts, currency units",
    "hidden_fee_per_order": "hidden_fees / orders_charged, currency units",
    "refunds_claimed": "sum of completed refund amounts, currency units",
    "refunds_credited": "balance increase over the refund phase, currency units",
}

TIMELINE_COLUMNS: dict[str, str] = {
    "run_id": "run folder name",
    "second": "whole seconds since the burst's t0 (0 = [t0, t0 + 1 s)); integer",
    "supplier": "supplier name",
    "scheduled": "orders the schedule put in this second (count)",
    "sent": "orders whose first POST was sent in this second (count)",
    "accepted": "orders first known accepted in this second (count)",
    "delivered": "orders first seen delivered in this second (count)",
    "err_429": "requests answered 429 in this second (any phase; count)",
    "err_503": "requests answered 503 in this second (count)",
    "err_5xx": "requests answered another 5xx in this second (count)",
    "err_timeout": "requests with no answer within the timeout in this second (count)",
    "err_out_of_stock": "POSTs answered 409 out_of_stock in this second (count)",
    "err_connect": "requests with no answer for another reason than a timeout (count)",
    "err_balance": "requests answered 402 insufficient balance (count)",
    "err_refused": "requests refused with another 4xx (not 404, 409 out of stock; count)",
    "err_not_found": "GETs answered 404 (the supplier does not hold the order yet; count)",
    "err_bad_response": "answers with a success status whose body could not be read (count)",
    "err_other": "failed requests of any other kind (count); the burst summary names them",
    "partial_oversold": "accepted orders that ended partial or failed (oversold stock among "
                        "them), by the second they ended (count)",
    "slipped": "orders of this second's schedule that started late (schedule_slip; count)",
    "acceptance_p95_ms": "p95 of acceptance_ms of the orders scheduled in this second, from "
                         "their intended start, milliseconds (NaN if none accepted)",
}

SCHEMAS = {"orders": ORDERS_COLUMNS, "codes": CODES_COLUMNS, "refunds": REFUNDS_COLUMNS,
           "suppliers": SUPPLIERS_COLUMNS, "timeline": TIMELINE_COLUMNS}


@dataclass
class RunTables:
    """The tables of one or more runs."""

    orders: pd.DataFrame
    codes: pd.DataFrame
    refunds: pd.DataFrame
    suppliers: pd.DataFrame
    manifests: list[dict[str, Any]]
    timeline: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=list(TIMELINE_COLUMNS)))
    """Per supplier per second of a burst (empty for trials)."""


def _ts(value: float | None) -> pd.Timestamp:
    return pd.NaT if value is None else pd.Timestamp(value, unit="s", tz="UTC")


def _money(value: Any) -> float:
    return float("nan") if value is None or value == "" else float(value)


def _frame(rows: list[dict[str, Any]], columns: dict[str, str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(columns))
    return frame


def build_tables(run_dir: Path) -> RunTables:
    """Derive the tables of one run from its event log (and nothing else)."""
    run_id = run_dir.name
    manifest = load_manifest(run_dir)
    orders: dict[tuple[str, str], dict[str, Any]] = {}
    attempts: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    errors: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    codes: list[dict[str, Any]] = []
    redeemed: dict[str, str] = {}
    refunds: dict[tuple[str, str], dict[str, Any]] = {}
    refund_sent: dict[tuple[str, str], float] = {}
    balances: dict[str, dict[str, float]] = defaultdict(dict)
    timeline = _TimelineBuilder(run_id)

    for event in read_events(run_dir):
        kind = event["type"]
        timeline.add(event)
        key = (event.get("supplier", ""), event.get("client_order_id", ""))
        if kind == "order_planned":
            orders[key] = {
                "run_id": run_id, "mode": event["mode"], "worker": event.get("worker", ""),
                "supplier": key[0], "client_order_id": key[1], "supplier_order_id": "",
                "sku": event["sku"], "quantity": event["quantity"],
                "intended_at": event["intended_at"], "accepted_at": None, "final_at": None,
                "deadline_s": event["deadline_s"], "listed_price": _money(event["listed_price"]),
                "sale_price": _money(event["sale_price"]),
                "face_value": _money(event["face_value"]), "delivered_seen_at": None,
                "state": "unknown", "last_state": "unknown", "unit_price": float("nan"),
                "amount": 0.0, "codes_delivered": 0, "failure_reason": "", "resolution": "",
            }
        elif kind == "order_attempt":
            attempts[key][event.get("purpose") or event["method"]] += 1
        elif kind == "order_absent" and key in orders:
            orders[key]["intended_at"] = event["intended_at"]  # placed anew on resume
        elif kind == "order_resumed" and key in orders and event.get("posted_at") is None:
            orders[key]["intended_at"] = event["intended_at"]  # never sent: placed on resume
        elif kind == "order_error":
            errors[key].append(event)
        elif kind == "order_accepted" and key in orders:
            row = orders[key]
            if row["accepted_at"] is None:  # the answer's arrival (the line's time before)
                answered = event.get("answered_at")
                row["accepted_at"] = answered if answered is not None else event["t"]
            row["supplier_order_id"] = event["supplier_order_id"]
        elif kind == "order_final" and key in orders:
            row = orders[key]
            row.update(final_at=event["t"], state=event["state"], last_state=event["last_state"],
                       amount=_money(event["amount"]), unit_price=_money(event["unit_price"]),
                       codes_delivered=event["codes_delivered"],
                       failure_reason=event.get("failure_reason") or "",
                       resolution=event.get("resolution") or "",
                       delivered_seen_at=event.get("delivered_seen_at"))
        elif kind == "code_checked":
            codes.append({**event, "run_id": run_id})
        elif kind == "code_redeemed":
            redeemed[event["code_hash"]] = event["status"]
        elif kind == "refund_attempt":
            refund_sent.setdefault(key, event["t"])
        elif kind == "refund_requested" and key in refunds and event.get("via") == "resume":
            refunds[key].update(state=event.get("state") or "error",
                                request_status=event["status"],
                                claimed_amount=_money(event.get("amount")))
        elif kind == "refund_requested":
            refunds[key] = {"run_id": run_id, "mode": orders.get(key, {}).get("mode", ""),
                            "supplier": key[0], "client_order_id": key[1],
                            "reason": event["reason"],
                            "requested_at": refund_sent.get(key, event["t"]),
                            "request_status": event["status"],
                            "request_error": event.get("error") or "",
                            "state": event.get("state") or "error", "final": False,
                            "claimed_amount": _money(event.get("amount")),
                            "resolved_at": None, "credited_amount": float("nan"),
                            "credited": None}
        elif kind == "refund_final" and key in refunds:
            refunds[key].update(state=event["state"], final=event["final"],
                                claimed_amount=_money(event.get("amount")),
                                resolved_at=event.get("resolved_seen_at"),
                                credited_amount=_money(event.get("credited_amount")),
                                credited=event.get("credited"))
        elif kind == "balance_read":
            balances[key[0]][event["phase"]] = _money(event["balance"])

    order_rows = []
    for key, row in orders.items():
        errs = errors.get(key, [])
        place_errs = [e for e in errs if e.get("phase") == "place"]
        delivered = row["state"] in ("success", "partial", "refunded")
        seen = row.pop("delivered_seen_at")
        intended = row["intended_at"]
        row["acceptance_ms"] = (row["accepted_at"] - intended) * 1000 \
            if row["accepted_at"] is not None else float("nan")
        row["delivery_ms"] = (seen - intended) * 1000 if seen is not None else float("nan")
        row["within_deadline"] = bool(seen is not None and seen - intended <= row["deadline_s"])
        row["delivered"] = delivered
        tried = attempts.get(key, Counter())  # by purpose; by method in logs older than it
        row["attempts"] = sum(tried.values())
        row["posts"] = tried["place"] + tried["repost"] + tried["POST"]
        row["resolve_gets"] = tried["resolve"]
        row["polls"] = tried["poll"] + tried["final_look"] + tried["GET"]
        row["errors"] = len(errs)
        row["supplier_errors"] = sum(is_supplier_error(int(e.get("status", 0)),
                                                       str(e.get("phase", ""))) for e in errs)
        row["error_classes"] = format_error_counts(Counter(
            error_bucket(str(e.get("kind", "")), int(e.get("status", 0))) for e in errs))
        row["error_kind"] = place_errs[-1]["kind"] if place_errs and row["accepted_at"] is None \
            else ""
        row["intended_at"] = _ts(intended)
        row["accepted_at"] = _ts(row["accepted_at"])
        row["final_at"] = _ts(row["final_at"])
        order_rows.append(row)

    code_rows = []
    for event in codes:
        row = {col: event.get(col) for col in CODES_COLUMNS}
        row["run_id"] = run_id
        order = orders.get((event.get("supplier", ""), event.get("client_order_id", "")), {})
        row["mode"] = event.get("mode") or order.get("mode", "")
        for col in ("claimed_face_value", "expected_face_value", "issuer_face_value"):
            row[col] = _money(row[col])
        row["expires_at"] = pd.Timestamp(row["expires_at"]) if row["expires_at"] else pd.NaT
        row["duplicate_of"] = row["duplicate_of"] or ""
        row["redeemed_sample"] = event["code_hash"] in redeemed
        row["redeem_status"] = redeemed.get(event["code_hash"], "")
        code_rows.append(row)

    refund_rows = []
    for row in refunds.values():
        resolved = row["resolved_at"]
        row["latency_s"] = resolved - row["requested_at"] if resolved is not None \
            else float("nan")
        row["requested_at"] = _ts(row["requested_at"])
        row["resolved_at"] = _ts(resolved)
        refund_rows.append(row)

    supplier_rows = []
    for supplier, phases in balances.items():
        sup_orders = [r for r in order_rows if r["supplier"] == supplier]
        amount = sum(r["amount"] for r in sup_orders if r["amount"] == r["amount"])
        # order_final is written before the refund phase, so these amounts are pre-refund
        orders_amount = amount
        claimed = sum(r["claimed_amount"] for r in refund_rows if r["supplier"] == supplier
                      and r["state"] == "completed" and r["claimed_amount"] == r["claimed_amount"])
        charged = sum(1 for r in sup_orders if r["amount"] > 0 or r["state"] == "refunded")
        before = phases.get("before", float("nan"))
        after_orders = phases.get("after_orders", float("nan"))
        after = phases.get("after_refunds", after_orders)
        hidden = round(before - after_orders - orders_amount, 2)
        supplier_rows.append({
            "run_id": run_id, "supplier": supplier, "balance_before": before,
            "balance_after_orders": after_orders, "balance_after": after,
            "orders_amount": round(orders_amount, 2), "orders_charged": charged,
            "hidden_fees": hidden,
            "hidden_fee_per_order": round(hidden / charged, 4) if charged else float("nan"),
            "refunds_claimed": round(claimed, 2),
            "refunds_credited": round(after - after_orders, 2),
        })

    return RunTables(
        orders=_typed(_frame(order_rows, ORDERS_COLUMNS)),
        codes=_typed(_frame(code_rows, CODES_COLUMNS)),
        refunds=_typed(_frame(refund_rows, REFUNDS_COLUMNS)),
        suppliers=_typed(_frame(supplier_rows, SUPPLIERS_COLUMNS)),
        manifests=[manifest],
        timeline=timeline.frame(),
    )


_ERROR_COLUMNS = {"429": "err_429", "503": "err_503", "5xx": "err_5xx",
                  "timeout": "err_timeout", "out_of_stock": "err_out_of_stock",
                  "connect": "err_connect", "balance": "err_balance", "refused": "err_refused",
                  "not_found": "err_not_found", "bad_response": "err_bad_response"}


def _error_column(kind: str, status: int) -> str:
    """The timeline column of a failed request (:func:`harness.events.error_bucket`):
    every failed request has one."""
    return _ERROR_COLUMNS.get(error_bucket(kind, status), "err_other")


class _TimelineBuilder:
    """Per supplier per second counts of a burst, fed every event in time order."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.t0: float | None = None
        self.scheduled: dict[str, list[int]] = {}
        self.cells: dict[tuple[str, int], Counter[str]] = defaultdict(Counter)
        self.intended: dict[tuple[str, str], float] = {}
        self.accepted: set[tuple[str, str]] = set()
        self.delivered: set[tuple[str, str]] = set()
        self.acceptance: dict[tuple[str, int], list[float]] = defaultdict(list)

    def _second(self, t: float) -> int:
        assert self.t0 is not None
        return int((t - self.t0) // 1)

    def add(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "burst_started":
            self.t0 = float(event["t0"])
            self.scheduled = event.get("scheduled_per_second") or {}
            return
        if self.t0 is None:
            return
        supplier = event.get("supplier", "")
        key = (supplier, event.get("client_order_id", ""))
        if kind == "order_planned" and event.get("mode") == "burst":
            self.intended[key] = float(event["intended_at"])
        elif key not in self.intended:
            return
        elif kind == "order_attempt" and event.get("attempt") == 1 \
                and event.get("method") == "POST":
            self.cells[(supplier, self._second(event["t"]))]["sent"] += 1
        elif kind == "order_accepted" and key not in self.accepted:
            self.accepted.add(key)
            self.cells[(supplier, self._second(event["t"]))]["accepted"] += 1
            intended = self.intended[key]
            answered = event.get("answered_at")  # the answer's arrival (the line's before)
            self.acceptance[(supplier, self._second(intended))].append(
                ((answered if answered is not None else event["t"]) - intended) * 1000)
        elif kind == "order_observed" and key not in self.delivered \
                and event.get("state") in ("success", "partial", "refunded"):
            self.delivered.add(key)
            self.cells[(supplier, self._second(event["t"]))]["delivered"] += 1
        elif kind == "order_error":
            column = _error_column(str(event.get("kind", "")), int(event.get("status", 0)))
            self.cells[(supplier, self._second(event["t"]))][column] += 1
        elif kind == "schedule_slip":
            self.cells[(supplier, self._second(self.intended[key]))]["slipped"] += 1
        elif kind == "order_final" and key in self.accepted \
                and event.get("state") in ("partial", "failed"):
            self.cells[(supplier, self._second(event["t"]))]["partial_oversold"] += 1

    def frame(self) -> pd.DataFrame:
        counts = [c for c in TIMELINE_COLUMNS
                  if c not in ("run_id", "second", "supplier", "acceptance_p95_ms")]
        keys = set(self.cells) | set(self.acceptance)
        for supplier, per_second in self.scheduled.items():
            keys.update((supplier, second) for second in range(len(per_second)))
        rows = []
        for supplier, second in sorted(keys, key=lambda k: (k[1], k[0])):
            cell = self.cells.get((supplier, second), Counter())
            per_second = self.scheduled.get(supplier, [])
            row: dict[str, Any] = {"run_id": self.run_id, "second": second,
                                   "supplier": supplier}
            for column in counts:
                row[column] = cell[column]
            row["scheduled"] = per_second[second] if 0 <= second < len(per_second) else 0
            latencies = self.acceptance.get((supplier, second))
            row["acceptance_p95_ms"] = float(np.percentile(latencies, 95)) if latencies \
                else float("nan")
            rows.append(row)
        frame = pd.DataFrame(rows, columns=list(TIMELINE_COLUMNS))
        for column in ["second", *counts]:
            frame[column] = frame[column].astype("int64")
        frame["acceptance_p95_ms"] = frame["acceptance_p95_ms"].astype("float64")
        return frame


def burst_summary(run_dir: Path) -> pd.DataFrame:
    """Per supplier: scheduled vs sent orders and rates, slips, errors and latency
    percentiles (acceptance and delivery from intended start, ms) of a burst run.

    ``errors`` is every failed request by class (:func:`harness.events.error_bucket`,
    formatted by :func:`harness.events.format_error_counts`), the same count as the
    timeline's ``err_*`` columns and the live view; ``supplier errors`` leaves out the 404s
    the harness's own GETs drew; ``blocked`` counts orders the spending cap kept unsent.
    The single-class columns (429, 503, ...) stay for older callers."""
    orders = pd.read_parquet(run_dir / "orders.parquet")
    timeline = pd.read_parquet(run_dir / "timeline.parquet")
    orders = orders[orders["mode"] == "burst"]
    codes = pd.read_parquet(run_dir / "codes.parquet")
    suppliers = pd.read_parquet(run_dir / "suppliers.parquet").set_index("supplier")
    duration = max(1, int((timeline.groupby("second")["scheduled"].sum() > 0).sum())) \
        if len(timeline) else 1
    rows = []
    for supplier, part in timeline.groupby("supplier", sort=False):
        mine = orders[orders["supplier"] == supplier]
        rows.append({
            "supplier": supplier, "scheduled": int(part["scheduled"].sum()),
            "sent": int(part["sent"].sum()),
            "sched/s": float(part["scheduled"].sum() / duration),
            "sent/s": float(part["sent"].sum() / duration),
            "slipped": int(part["slipped"].sum()),
            "accepted": int(mine["accepted_at"].notna().sum()),
            "delivered": int(mine["delivered"].sum()),
            "429": int(part["err_429"].sum()), "503": int(part["err_503"].sum()),
            "5xx": int(part["err_5xx"].sum()), "timeout": int(part["err_timeout"].sum()),
            "oos": int(part["err_out_of_stock"].sum()),
            "partial/oversold": int(part["partial_oversold"].sum()),
            "errors": format_error_counts(_error_totals(mine)),
            "supplier errors": int(mine["supplier_errors"].sum())
            if "supplier_errors" in mine else int(mine["errors"].sum()),
            "blocked": int((mine["state"] == "skipped").sum()),
            "writes+resolves/order": float((mine["posts"].sum() + mine["resolve_gets"].sum())
                                           / max(1, int(part["scheduled"].sum()))),
            "polls/order": float(mine["polls"].sum() / max(1, int(part["scheduled"].sum()))),
            "accept p50 ms": float(mine["acceptance_ms"].quantile(0.50)),
            "accept p95 ms": float(mine["acceptance_ms"].quantile(0.95)),
            "accept p99 ms": float(mine["acceptance_ms"].quantile(0.99)),
            "deliver p95 ms": float(mine["delivery_ms"].quantile(0.95)),
            "codes checked": int((codes["supplier"] == supplier).sum()),
            "bad codes": codes[(codes["supplier"] == supplier) & (codes["verdict"] != "valid")]
            ["verdict"].value_counts().to_dict(),
            "hidden fee/order": float(suppliers["hidden_fee_per_order"].get(supplier,
                                                                            float("nan"))),
        })
    return pd.DataFrame(rows)


def burst_error_text(row: dict[str, Any]) -> str:
    """The burst summary's errors cell for one :func:`burst_summary` row: every failed
    request by class (as the live view prints :func:`harness.events.format_error_counts`),
    then the orders accepted and then partly filled or failed, and the orders the cap
    blocked; ``-`` if none."""
    parts = [] if row["errors"] == "-" else [str(row["errors"])]
    if row["partial/oversold"]:
        parts.append(f"partial/oversold:{row['partial/oversold']}")
    if row.get("blocked"):
        parts.append(f"blocked:{row['blocked']}")
    return " ".join(parts) or "-"


def _error_totals(orders: pd.DataFrame) -> Counter[str]:
    """Failed requests by class over ``orders`` (its ``error_classes`` column)."""
    total: Counter[str] = Counter()
    if "error_classes" in orders:
        for text in orders["error_classes"]:
            total.update(parse_error_counts(text if isinstance(text, str) else ""))
    return total


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """Stable dtypes so empty and full tables write the same Parquet schema."""
    for col in frame.columns:
        if frame[col].dtype == object and frame[col].map(lambda v: isinstance(v, bool)).all() \
                and len(frame):
            frame[col] = frame[col].astype(bool)
    return frame


def write_tables(run_dir: Path, tables: RunTables) -> None:
    """Write the Parquet tables and ``schema.json`` (column → meaning and unit)."""
    for name in SCHEMAS:
        getattr(tables, name).to_parquet(run_dir / f"{name}.parquet", index=False)
    (run_dir / "schema.json").write_text(json.dumps(SCHEMAS, indent=2) + "\n")


def load_manifest(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "manifest.json"
    if not path.exists():
        raise ResultsError(f"{run_dir}: no manifest.json; is this a trialbench run folder?")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def load_runs(run_dirs: Iterable[Path], *, allow_partial: bool = False) -> RunTables:
    """Load and concatenate the tables of runs (building them from the log if missing).

    A run whose log lacks its finish event was interrupted (killed, or Ctrl-C): it is
    refused, naming it, unless ``allow_partial``; then its manifest says
    ``"partial": true`` and the report names it.
    """
    parts: list[RunTables] = []
    for run_dir in run_dirs:
        if not run_dir.is_dir():
            raise ResultsError(f"{run_dir}: no such run folder; see `ls results/`")
        complete = run_complete(run_dir)
        if not complete and not allow_partial:
            raise ResultsError(f"{run_dir}: the run was interrupted (its log has no finish "
                               f"event); finish it with `trialbench resume {run_dir}`, or "
                               "pass --allow-partial to use what it recorded")
        fresh = complete and (run_dir / "manifest.json").exists() and all(
            (run_dir / f"{name}.parquet").exists()
            and (run_dir / f"{name}.parquet").stat().st_mtime
            >= max((p.stat().st_mtime for p in run_dir.glob("events*.jsonl")), default=0)
            for name in SCHEMAS)
        frames = {n: pd.read_parquet(run_dir / f"{n}.parquet") for n in SCHEMAS} if fresh \
            else {}
        if fresh and all(list(frames[n].columns) == list(SCHEMAS[n]) for n in SCHEMAS):
            part = RunTables(**frames, manifests=[load_manifest(run_dir)])
        else:  # interrupted, stale, or written by an older build: derive from the log
            part = build_tables(run_dir)
        part.manifests[0]["partial"] = not complete
        parts.append(part)
    if not parts:
        raise ResultsError("no run folders given")
    merged = {n: pd.concat([getattr(p, n) for p in parts], ignore_index=True) for n in SCHEMAS}
    return RunTables(**merged, manifests=[m for p in parts for m in p.manifests])
