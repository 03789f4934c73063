"""Results: the run folder, and the tables derived from its event log.

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
  state, unit_price, amount, via (post, or get after an unknown outcome), answered_at (when
  that answer arrived whole, stamped by the transport; absent when a callback told it).
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
from array import array
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.errors import ResultsError
from harness.events import (
    EventOrderError,
    accepted_time,
    error_bucket,
    format_error_counts,
    is_supplier_error,
    parse_error_counts,
    read_events,
    run_complete,
    stream_events,
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
    "accepted_at": "when the answer showing it accepted arrived (UTC timestamp; NaT if never)",
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


_TABLE_EVENTS = frozenset({
    "order_planned", "order_attempt", "order_absent", "order_resumed", "order_error",
    "order_accepted", "order_final", "order_observed", "schedule_slip", "code_checked",
    "code_redeemed", "refund_attempt", "refund_requested", "refund_final", "balance_read",
    "burst_started"})
"""The event types the tables are built from; the others are skipped unparsed."""

_NAN = float("nan")
_PURPOSE_COLUMN = {"place": 1, "repost": 1, "POST": 1, "resolve": 2, "poll": 3,
                   "final_look": 3, "GET": 3}
"""Which count an order_attempt adds to besides attempts: posts, resolve_gets, polls."""
_CODE_TEXTS = ("mode", "sku", "pattern_ok", "duplicate_of", "face_value_ok", "expiry_ok",
               "issuer_status", "verdict")
"""Columns of code_checked with few distinct values, interned."""


class _Orders:
    """The orders table being folded: one slot per (supplier, client_order_id), in the order
    each was first planned; times and money in float arrays (NaN for none), short texts
    interned, so a million orders fit in a few hundred megabytes."""

    FLOATS = ("intended_at", "accepted_at", "final_at", "seen", "listed_price", "sale_price",
              "face_value", "unit_price", "amount")
    TEXTS = ("mode", "worker", "sku", "quantity", "deadline_s", "state", "last_state",
             "codes_delivered", "failure_reason", "resolution", "supplier_order_id")

    def __init__(self) -> None:
        self.slot: dict[tuple[str, str], int] = {}
        self.keys: list[tuple[str, str]] = []
        self.num = {name: array("d") for name in self.FLOATS}
        self.obj: dict[str, list[Any]] = {name: [] for name in self.TEXTS}
        self.counts = [array("q") for _ in range(4)]  # attempts, posts, resolves, polls
        self.early: dict[tuple[str, str], Counter[str]] = {}  # attempts before a plan
        self.errors: dict[tuple[str, str], list[tuple[str, int, str]]] = {}
        self._interned: dict[Any, Any] = {}

    def intern(self, value: Any) -> Any:
        try:  # keyed by type too: 1, 1.0 and True are equal but not the same value
            return self._interned.setdefault((value.__class__, value), value)
        except TypeError:  # unhashable: kept as it is
            return value

    def plan(self, key: tuple[str, str], event: dict[str, Any]) -> None:
        intern, num, obj = self.intern, self.num, self.obj
        values = {
            "intended_at": event["intended_at"], "accepted_at": _NAN, "final_at": _NAN,
            "seen": _NAN, "listed_price": _money(event["listed_price"]),
            "sale_price": _money(event["sale_price"]), "face_value": _money(event["face_value"]),
            "unit_price": _NAN, "amount": 0.0, "mode": intern(event["mode"]),
            "worker": intern(event.get("worker", "")), "sku": intern(event["sku"]),
            "quantity": event["quantity"], "deadline_s": event["deadline_s"],
            "state": "unknown", "last_state": "unknown", "codes_delivered": 0,
            "failure_reason": "", "resolution": "", "supplier_order_id": ""}
        slot = self.slot.get(key)
        if slot is None:
            self.slot[key] = len(self.keys)
            self.keys.append(key)
            for counts in self.counts:
                counts.append(0)
            for name, column in num.items():
                column.append(values[name])
            for name, texts in obj.items():
                texts.append(values[name])
        else:  # planned again: the row starts over where it stood
            for name, column in num.items():
                column[slot] = values[name]
            for name, texts in obj.items():
                texts[slot] = values[name]

    def attempt(self, key: tuple[str, str], event: dict[str, Any]) -> None:
        """Count one request by its purpose (by method in logs older than purposes)."""
        purpose = event.get("purpose") or event["method"]
        slot = self.slot.get(key)
        if slot is None:
            self.early.setdefault(key, Counter())[purpose] += 1
            return
        counts = self.counts
        counts[0][slot] += 1
        column = _PURPOSE_COLUMN.get(purpose)
        if column is not None:
            counts[column][slot] += 1

    def final(self, slot: int, event: dict[str, Any]) -> None:
        intern, num, obj = self.intern, self.num, self.obj
        num["final_at"][slot] = event["t"]
        obj["state"][slot] = intern(event["state"])
        obj["last_state"][slot] = intern(event["last_state"])
        num["amount"][slot] = _money(event["amount"])
        num["unit_price"][slot] = _money(event["unit_price"])
        obj["codes_delivered"][slot] = event["codes_delivered"]
        obj["failure_reason"][slot] = intern(event.get("failure_reason") or "")
        obj["resolution"][slot] = intern(event.get("resolution") or "")
        seen = event.get("delivered_seen_at")
        num["seen"][slot] = _NAN if seen is None else seen

    def frame(self, run_id: str) -> pd.DataFrame:
        """The orders table, as :data:`ORDERS_COLUMNS` documents it."""
        n = len(self.keys)
        num = {name: np.frombuffer(values, dtype=np.float64) if n else np.empty(0)
               for name, values in self.num.items()}
        attempts, posts, resolves, polls = (
            np.frombuffer(counts, dtype=np.int64).copy() if n else np.zeros(0, np.int64)
            for counts in self.counts)
        for key, tried in self.early.items():
            slot = self.slot.get(key)
            if slot is not None:
                attempts[slot] += sum(tried.values())
                posts[slot] += tried["place"] + tried["repost"] + tried["POST"]
                resolves[slot] += tried["resolve"]
                polls[slot] += tried["poll"] + tried["final_look"] + tried["GET"]
        errors = {self.slot[key]: errs for key, errs in self.errors.items() if key in self.slot}
        return _orders_frame(run_id, [k[0] for k in self.keys], [k[1] for k in self.keys], num,
                             self.obj, (attempts, posts, resolves, polls), errors)


def _orders_frame(run_id: str, suppliers: list[Any], client_ids: list[Any],
                  num: dict[str, np.ndarray[Any, Any]], obj: dict[str, list[Any]],
                  counts: tuple[np.ndarray[Any, Any], ...],
                  errs_by_row: dict[int, list[tuple[str, int, str]]]) -> pd.DataFrame:
    """The orders table from its folded columns (rows in first-planned order): ``num`` the
    float columns of :attr:`_Orders.FLOATS`, ``obj`` the values of :attr:`_Orders.TEXTS`,
    ``counts`` attempts, posts, resolve GETs and polls, ``errs_by_row`` each row's failed
    requests (kind, status, phase) in log order."""
    n = len(suppliers)
    intended, accepted, seen = num["intended_at"], num["accepted_at"], num["seen"]
    state = obj["state"]
    attempts, posts, resolves, polls = counts
    errors, supplier_errors = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    classes: dict[int, str] = {}
    error_kind: dict[int, str] = {}
    for slot, errs in errs_by_row.items():
        errors[slot] = len(errs)
        supplier_errors[slot] = sum(is_supplier_error(status, phase)
                                    for _, status, phase in errs)
        classes[slot] = format_error_counts(Counter(
            error_bucket(kind, status) for kind, status, _ in errs))
        places = [kind for kind, _, phase in errs if phase == "place"]
        if places and np.isnan(accepted[slot]):
            error_kind[slot] = places[-1]
    no_seen = np.isnan(seen)
    with np.errstate(invalid="ignore"):
        within = ~no_seen & (seen - intended <= np.array(obj["deadline_s"], dtype=np.float64))
    columns: dict[str, Any] = {
        "run_id": _constant(run_id, n), "mode": obj["mode"],
        "worker": obj["worker"],
        "supplier": suppliers, "client_order_id": client_ids,
        "supplier_order_id": obj["supplier_order_id"], "sku": obj["sku"],
        "quantity": obj["quantity"], "intended_at": _timestamps(intended),
        "accepted_at": _timestamps(accepted), "final_at": _timestamps(num["final_at"]),
        "acceptance_ms": (accepted - intended) * 1000,
        "delivery_ms": (seen - intended) * 1000, "deadline_s": obj["deadline_s"],
        "within_deadline": within,
        "state": state, "last_state": obj["last_state"],
        "delivered": _delivered(state),
        "codes_delivered": obj["codes_delivered"],
        "listed_price": num["listed_price"], "unit_price": num["unit_price"],
        "amount": num["amount"], "sale_price": num["sale_price"],
        "face_value": num["face_value"], "attempts": attempts, "posts": posts,
        "resolve_gets": resolves, "polls": polls,
        "resolution": obj["resolution"], "errors": errors,
        "supplier_errors": supplier_errors, "error_classes": _sparse(n, "-", classes),
        "error_kind": _sparse(n, "", error_kind), "failure_reason": obj["failure_reason"],
    }
    if not n:
        return _frame([], ORDERS_COLUMNS)
    # columns made here, not copied again (a million rows' lists would double the memory)
    return pd.DataFrame({col: columns[col] for col in ORDERS_COLUMNS}, copy=False)


def _delivered(state: Any) -> np.ndarray[Any, Any]:
    """Per row, whether the state is one of delivery (success, partial, refunded)."""
    delivered = ["success", "partial", "refunded"]
    states = pd.Series(state, copy=False)
    if states.dtype == object:  # values of any kind, as they compare
        return np.isin(states.to_numpy(), delivered)
    out: np.ndarray[Any, Any] = states.isin(delivered).to_numpy(dtype=bool)
    return out


def _take(values: list[Any], indices: np.ndarray[Any, Any]) -> Any:
    """The column ``[values[i] for i in indices]`` as pandas makes it from that list (its
    dtype inferred from ``values``, so each should be used, or be of a type that is),
    without making the list."""
    distinct = pd.Series(values)
    if isinstance(distinct.dtype, np.dtype):
        return distinct.to_numpy().take(indices)
    return distinct.array.take(indices)


def _constant(value: Any, n: int) -> Any:
    """A column of ``n`` times ``value``, as :func:`_take` makes it."""
    return _take([value], np.zeros(n, dtype=np.intp))


def _sparse(n: int, fill: Any, rows: dict[int, Any]) -> Any:
    """A column of ``n`` values, ``fill`` but at ``rows``' keys, as :func:`_take` makes it."""
    values = list(dict.fromkeys([fill, *rows.values()]))
    indices = np.zeros(n, dtype=np.intp)
    if rows:
        where = {value: i for i, value in enumerate(values)}
        indices[list(rows)] = [where[value] for value in rows.values()]
    return _take(values, indices)


def _timestamps(seconds: np.ndarray[Any, Any]) -> Any:
    """Unix seconds (NaN: none) as UTC timestamps, the same as ``_ts`` makes them one by
    one (a column of nothing but NaT is left to pandas to type, as those rows were)."""
    if np.isnan(seconds).all():
        return [pd.NaT] * len(seconds)
    return pd.Series(pd.to_datetime(seconds, unit="s", utc=True))


def build_tables(run_dir: Path) -> RunTables:
    """Derive the tables of one run from its event log (and nothing else).

    The log is folded in columns by DuckDB (:mod:`harness.tables_columnar`: about 3x
    faster than the per-event fold at a million orders, its memory held to a limit and
    spilled beyond it). A log it does not reproduce (a torn last line, hand-written
    layouts, a value DuckDB cannot read, ...) goes to :func:`build_tables_streaming`; the
    tables are the same either way, value for value and dtype for dtype."""
    try:
        from harness import tables_columnar
    except ImportError:  # DuckDB not installed: the streaming fold
        return build_tables_streaming(run_dir)
    try:
        return tables_columnar.build(run_dir)
    except Exception:  # whatever the columnar fold cannot reproduce
        return build_tables_streaming(run_dir)


def build_tables_streaming(run_dir: Path) -> RunTables:
    """:func:`build_tables` by the per-event Python fold (the fallback): any log
    :func:`harness.events.read_events` reads, at a few hundred bytes per order and ~15 µs
    per event. The log is streamed (:func:`harness.events.stream_events`: shards merged by
    time, never held whole); a log whose shards are out of time order by more than the
    stream's window is read whole and sorted instead."""
    try:
        return _fold(run_dir, stream_events(run_dir, types=_TABLE_EVENTS))
    except EventOrderError:
        return _fold(run_dir, read_events(run_dir))


class _Money:
    """The fold of the few events about money (refunds, balances, redeemed samples): the
    same in the streaming and the columnar builder, fed in log order."""

    KINDS = frozenset({"code_redeemed", "refund_attempt", "refund_requested", "refund_final",
                       "balance_read"})

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.redeemed: dict[str, str] = {}
        self.refunds: dict[tuple[str, str], dict[str, Any]] = {}
        self.refund_sent: dict[tuple[str, str], float] = {}
        self.balances: dict[str, dict[str, float]] = defaultdict(dict)

    def add(self, kind: str, event: dict[str, Any], key: tuple[str, str], mode: Any) -> None:
        """Fold one event of :attr:`KINDS`; ``mode`` is its order's mode then ("" if the
        order was not planned yet)."""
        refunds = self.refunds
        if kind == "code_redeemed":
            self.redeemed[event["code_hash"]] = event["status"]
        elif kind == "refund_attempt":
            self.refund_sent.setdefault(key, event["t"])
        elif kind == "refund_requested" and key in refunds and event.get("via") == "resume":
            refunds[key].update(state=event.get("state") or "error",
                                request_status=event["status"],
                                claimed_amount=_money(event.get("amount")))
        elif kind == "refund_requested":
            refunds[key] = {"run_id": self.run_id, "mode": mode,
                            "supplier": key[0], "client_order_id": key[1],
                            "reason": event["reason"],
                            "requested_at": self.refund_sent.get(key, event["t"]),
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
            self.balances[key[0]][event["phase"]] = _money(event["balance"])


def _fold(run_dir: Path, events: Iterable[dict[str, Any]]) -> RunTables:
    run_id = run_dir.name
    manifest = load_manifest(run_dir)
    orders = _Orders()
    slots, num, obj = orders.slot, orders.num, orders.obj
    codes: dict[str, list[Any]] = {col: [] for col in CODES_COLUMNS}
    code_keys: list[tuple[str, str]] = []
    money = _Money(run_id)
    timeline = _TimelineBuilder(run_id)

    for event in events:
        kind = event["type"]
        key = (event.get("supplier", ""), event.get("client_order_id", ""))
        if kind == "order_planned":
            orders.plan(key, event)
        slot = slots.get(key)
        if slot is not None:
            key = orders.keys[slot]  # one tuple per order, shared by every table's state
        timeline.add(event, key)
        if kind == "order_observed" or kind == "schedule_slip" or kind == "order_planned":
            continue  # the timeline's only, or done
        if kind == "order_attempt":
            orders.attempt(key, event)
        elif kind == "order_accepted" and key in slots:
            slot = slots[key]
            if np.isnan(num["accepted_at"][slot]):
                num["accepted_at"][slot] = accepted_time(event)
            obj["supplier_order_id"][slot] = event["supplier_order_id"]
        elif kind == "order_final" and key in slots:
            orders.final(slots[key], event)
        elif kind == "order_error":
            orders.errors.setdefault(key, []).append(
                (str(event.get("kind", "")), int(event.get("status", 0)),
                 str(event.get("phase", ""))))
        elif kind == "code_checked":
            for col in CODES_COLUMNS:
                value = event.get(col)
                if col in _CODE_TEXTS:
                    value = orders.intern(value)
                elif col.endswith("face_value"):
                    value = _money(value)
                codes[col].append(value)
            if slot is not None:  # the order's own strings, not this event's copies
                codes["supplier"][-1], codes["client_order_id"][-1] = key
            code_keys.append(key)
        elif kind == "order_absent" and key in slots:
            num["intended_at"][slots[key]] = event["intended_at"]  # placed anew on resume
        elif kind == "order_resumed" and key in slots and event.get("posted_at") is None:
            num["intended_at"][slots[key]] = event["intended_at"]  # never sent: on resume
        elif kind in _Money.KINDS:
            money.add(kind, event, key, obj["mode"][slot] if slot is not None else "")

    modes = codes["mode"]
    for i, key in enumerate(code_keys):
        if not modes[i]:
            slot_ = slots.get(key)
            modes[i] = obj["mode"][slot_] if slot_ is not None else ""
    return _assemble(run_id, manifest, orders.frame(run_id), _code_frame(run_id, codes, money),
                     money, timeline.frame())


def _code_frame(run_id: str, codes: dict[str, list[Any]], money: _Money) -> pd.DataFrame:
    """The codes table from the code_checked values in log order (modes filled in)."""
    codes["expires_at"] = _expiries(codes["expires_at"])
    codes["duplicate_of"] = _duplicate_of(codes["duplicate_of"])
    return _code_table(run_id, codes, money)


def _duplicate_of(values: list[Any]) -> list[Any]:
    """``duplicate_of`` values as the codes table has them: empty where none."""
    return [value or "" for value in values]


def _code_table(run_id: str, codes: dict[str, Any], money: _Money) -> pd.DataFrame:
    """The codes table from its columns (lists, or arrays as :func:`_take` makes them; not
    copied again), ``expires_at`` and ``duplicate_of`` already as the table has them: adds
    ``run_id`` and the redeemed sample's columns."""
    n = len(codes["code_hash"])
    if not n:
        return _frame([], CODES_COLUMNS)
    codes["run_id"] = _constant(run_id, n)
    redeemed = money.redeemed
    if redeemed:  # a trial's sample: a few codes' hashes, looked up row by row
        codes["redeemed_sample"] = [h in redeemed for h in codes["code_hash"]]
        codes["redeem_status"] = [redeemed.get(h, "") for h in codes["code_hash"]]
    else:
        codes["redeemed_sample"], codes["redeem_status"] = _constant(False, n), _constant("", n)
    return _typed(pd.DataFrame({col: codes[col] for col in CODES_COLUMNS}, copy=False))


def _assemble(run_id: str, manifest: dict[str, Any], order_frame: pd.DataFrame,
              code_frame: pd.DataFrame, money: _Money, timeline: pd.DataFrame) -> RunTables:
    """The run's tables: the refunds and suppliers tables made from ``money`` and the
    orders table, beside the others."""
    refund_rows = []
    for row in money.refunds.values():
        resolved = row["resolved_at"]
        row["latency_s"] = resolved - row["requested_at"] if resolved is not None \
            else float("nan")
        row["requested_at"] = _ts(row["requested_at"])
        row["resolved_at"] = _ts(resolved)
        refund_rows.append(row)

    supplier_rows = []
    amounts = order_frame["amount"].to_numpy()
    for supplier, phases in money.balances.items():
        mine = (order_frame["supplier"] == supplier).to_numpy(bool)
        own = amounts[mine]
        # the same additions, in the same order, as summing the rows one by one
        orders_amount = sum(own[~np.isnan(own)].tolist())
        # order_final is written before the refund phase, so these amounts are pre-refund
        claimed = sum(r["claimed_amount"] for r in refund_rows if r["supplier"] == supplier
                      and r["state"] == "completed" and r["claimed_amount"] == r["claimed_amount"])
        charged = int(((own > 0) | (order_frame["state"].to_numpy(object)[mine] == "refunded"))
                      .sum())
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
        orders=_typed(order_frame),
        codes=code_frame,
        refunds=_typed(_frame(refund_rows, REFUNDS_COLUMNS)),
        suppliers=_typed(_frame(supplier_rows, SUPPLIERS_COLUMNS)),
        manifests=[manifest],
        timeline=timeline,
    )


def _expiries(values: list[Any]) -> list[Any]:
    """``expires_at`` texts as timestamps (NaT for none), one parse per distinct text."""
    parsed: dict[Any, Any] = {}
    out = []
    for value in values:
        if not value:
            out.append(pd.NaT)
            continue
        stamp = parsed.get(value)
        if stamp is None:
            stamp = parsed[value] = pd.Timestamp(value)
        out.append(stamp)
    return out


_ERROR_COLUMNS = {"429": "err_429", "503": "err_503", "5xx": "err_5xx",
                  "timeout": "err_timeout", "out_of_stock": "err_out_of_stock",
                  "connect": "err_connect", "balance": "err_balance", "refused": "err_refused",
                  "not_found": "err_not_found", "bad_response": "err_bad_response"}


def _error_column(kind: str, status: int) -> str:
    """The timeline column of a failed request (:func:`harness.events.error_bucket`):
    every failed request has one."""
    return _ERROR_COLUMNS.get(error_bucket(kind, status), "err_other")


_TIMELINE_EVENTS = frozenset({"order_planned", "order_attempt", "order_accepted",
                              "order_observed", "order_error", "schedule_slip", "order_final"})


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

    def add(self, event: dict[str, Any], key: tuple[str, str]) -> None:
        """Fold one event; ``key`` is its (supplier, client_order_id)."""
        kind = event["type"]
        if kind == "burst_started":
            self.t0 = float(event["t0"])
            self.scheduled = event.get("scheduled_per_second") or {}
            return
        if self.t0 is None or kind not in _TIMELINE_EVENTS:
            return
        supplier = key[0]
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
            self.acceptance[(supplier, self._second(intended))].append(
                (accepted_time(event) - intended) * 1000)
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
        p95 = _p95_by_key(self.acceptance)
        rows = []
        for supplier, second in sorted(keys, key=lambda k: (k[1], k[0])):
            cell = self.cells.get((supplier, second), Counter())
            per_second = self.scheduled.get(supplier, [])
            row: dict[str, Any] = {"run_id": self.run_id, "second": second,
                                   "supplier": supplier}
            for column in counts:
                row[column] = cell[column]
            row["scheduled"] = per_second[second] if 0 <= second < len(per_second) else 0
            row["acceptance_p95_ms"] = p95.get((supplier, second), float("nan"))
            rows.append(row)
        frame = pd.DataFrame(rows, columns=list(TIMELINE_COLUMNS))
        for column in ["second", *counts]:
            frame[column] = frame[column].astype("int64")
        frame["acceptance_p95_ms"] = frame["acceptance_p95_ms"].astype("float64")
        return frame


def _p95_by_key(values: dict[Any, list[float]]) -> dict[Any, float]:
    """``np.percentile(v, 95)`` of each non-empty list, the lists of one length in one
    call (a matrix, one row each: the same floats as one call per list, far fewer calls)."""
    by_length: dict[int, list[Any]] = defaultdict(list)
    for key, latencies in values.items():
        if latencies:
            by_length[len(latencies)].append(key)
    out: dict[Any, float] = {}
    for keys in by_length.values():
        matrix = np.array([values[key] for key in keys], dtype=np.float64)
        out.update(zip(keys, np.percentile(matrix, 95, axis=1).tolist(), strict=True))
    return out


def burst_summary(run_dir: Path) -> pd.DataFrame:
    """Per supplier: scheduled vs sent orders and rates, slips, errors and latency
    percentiles (acceptance and delivery from intended start, ms) of a burst run.

    ``errors`` is every failed request by class (:func:`harness.events.error_bucket`,
    formatted by :func:`harness.events.format_error_counts`), the same count as the
    timeline's ``err_*`` columns and the live view; ``supplier errors`` leaves out the 404s
    the harness's own GETs drew; ``blocked`` counts orders the spending cap kept unsent.
    The single-class columns (429, 503, ...) stay for older callers."""
    orders = read_table(run_dir / "orders.parquet")
    timeline = read_table(run_dir / "timeline.parquet")
    orders = orders[orders["mode"] == "burst"]
    codes = read_table(run_dir / "codes.parquet")
    suppliers = read_table(run_dir / "suppliers.parquet").set_index("supplier")
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


MONEY_COLUMNS: dict[str, tuple[str, ...]] = {
    name: tuple(col for col, text in columns.items() if "currency units" in text)
    for name, columns in SCHEMAS.items()}
"""The money columns of each table: those its schema gives in currency units."""

MONEY_PARQUET = ("decimal128(38, s) in Parquet, s the fewest decimals (2 to 8) that hold "
                 "every value of the column exactly")
"""How money columns are stored; ``schema.json`` says it beside each one."""


def _money_numbers(values: pd.Series) -> tuple[np.ndarray[Any, Any], Any]:
    """A money column's floats, NaN where it holds no number, and the exact Arrow decimal
    type to store them in: the fewest decimals from 2 to 8 that hold every value (each is
    the float nearest its decimal text, so it casts back to that text); None for the type
    if a value is infinite or too big for decimal128."""
    import pyarrow as pa

    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    finite = numbers[~np.isnan(numbers)]
    if len(finite) and not np.isfinite(finite).all():
        return numbers, None
    scale = next((k for k in range(2, 9) if np.array_equal(np.round(finite, k), finite)), 8)
    if len(finite) and float(np.abs(finite).max()) >= 10.0 ** (38 - scale - 1):
        return numbers, None
    return numbers, pa.decimal128(38, scale)


WRITE_ROWS = 1 << 17
"""Rows per Parquet row group: a table is written a row group at a time, its money turned
into decimals for that group only, so that writing a million orders costs little memory."""


def write_tables(run_dir: Path, tables: RunTables) -> None:
    """Write the Parquet tables and ``schema.json`` (column → meaning and unit).

    Money columns (:data:`MONEY_COLUMNS`) are exact decimals in Parquet
    (:data:`MONEY_PARQUET`); a column with an infinite or astronomically large value
    (a supplier's garbage) stays float64. :func:`read_table` reads them back as floats,
    as :func:`build_tables` makes them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for name in SCHEMAS:
        frame = getattr(tables, name)
        table = pa.Table.from_pandas(frame, preserve_index=False)
        exact: dict[int, tuple[Any, Any]] = {}
        written = table.schema
        for col in MONEY_COLUMNS[name]:
            if col in frame.columns:
                numbers, decimal = _money_numbers(frame[col])
                if decimal is not None:
                    i = written.get_field_index(col)
                    exact[i] = (numbers, decimal)
                    written = written.set(i, pa.field(col, decimal))
        with pq.ParquetWriter(run_dir / f"{name}.parquet", written) as writer:
            for start in range(0, max(table.num_rows, 1), WRITE_ROWS):
                part = table.slice(start, WRITE_ROWS)
                for i, (numbers, decimal) in exact.items():
                    floats = numbers[start:start + WRITE_ROWS]
                    part = part.set_column(i, written.field(i), pa.array(
                        floats, mask=np.isnan(floats), type=pa.float64()).cast(decimal,
                                                                              safe=False))
                writer.write_table(part)
    schema = {name: {col: f"{text}; {MONEY_PARQUET}" if col in MONEY_COLUMNS[name] else text
                     for col, text in columns.items()} for name, columns in SCHEMAS.items()}
    (run_dir / "schema.json").write_text(json.dumps(schema, indent=2) + "\n")


def read_table(path: Path) -> pd.DataFrame:
    """One table written by :func:`write_tables`, with its decimal money as float64 (the
    analysis works in floats; the Parquet file keeps the exact decimals)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    for i, field_ in enumerate(table.schema):
        if pa.types.is_decimal(field_.type):
            table = table.set_column(i, field_.name, pa.chunked_array(
                [_decimal_floats(chunk) for chunk in table.column(i).chunks], pa.float64()))
    frame: pd.DataFrame = table.to_pandas()
    return frame


def _decimal_floats(chunk: Any) -> Any:
    """A decimal Arrow array as the float64 nearest each value, as its text would parse.

    Arrow's own decimal→float cast is off by an ulp, so the exact path is text
    (decimal → string → float64, correctly rounded). The same floats come faster from
    the unscaled integers: where ``|unscaled| <= 2**53`` both it and ``10**scale`` are
    exact doubles and IEEE division rounds their quotient correctly, i.e. to the nearest
    float of the decimal value. The other values (none in practice) go by text."""
    import numpy as np
    import pyarrow as pa

    if not pa.types.is_decimal128(chunk.type) or len(chunk) == 0:
        return chunk.cast(pa.string()).cast(pa.float64())
    words = np.frombuffer(chunk.buffers()[1], dtype="<i8")[2 * chunk.offset:
                                                          2 * (chunk.offset + len(chunk))]
    low, high = words[0::2], words[1::2]
    exact = (high == (low >> 63)) & (low >= -(2**53)) & (low <= 2**53)
    values = low.astype(np.float64) / (10.0 ** chunk.type.scale)
    if not exact.all():
        by_text = chunk.cast(pa.string()).cast(pa.float64())
        values[~exact] = by_text.fill_null(0.0).to_numpy()[~exact]
    mask = chunk.is_null().to_numpy(zero_copy_only=False) if chunk.null_count else None
    return pa.array(values, type=pa.float64(), mask=mask)


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
        frames = {n: read_table(run_dir / f"{n}.parquet") for n in SCHEMAS} if fresh \
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
