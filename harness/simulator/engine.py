"""State and fault logic of the simulated suppliers and the issuer; no HTTP here.

Every operation returns ``(status, body_bytes, extra_headers)`` so the ASGI layer only
routes and sends. Each order's fate is drawn at acceptance from an RNG seeded by
``(seed, supplier, client_order_id)``, so outcomes do not depend on arrival order or
concurrency; only stock, balance and capacity (which are shared) do.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from harness.protocol import (
    CLIENT_ORDER_ID_RE,
    REFUND_REASONS,
    error_body,
    format_epoch,
    format_money,
    sign,
    verify,
)
from harness.simulator.callback_client import CallbackClient
from harness.simulator.profiles import Fleet, LogNormal, Product, SupplierProfile

Headers = list[tuple[bytes, bytes]]
Reply = tuple[int, bytes, Headers]

CODE_KINDS = ("valid", "bad_pattern", "not_minted", "resold", "wrong_face_value", "expiring",
              "duplicate")
_NO_HEADERS: Headers = []
_ORDER_FIELDS = frozenset({"client_order_id", "sku", "quantity"})


def dumps(payload: Any) -> bytes:
    """Compact JSON bytes."""
    return json.dumps(payload, separators=(",", ":")).encode()


def error(status: int, code: str, message: str, headers: Headers = _NO_HEADERS) -> Reply:
    """An error reply in the protocol's envelope."""
    return status, dumps(error_body(code, message)), headers


def lognormal_ms(rng: random.Random, dist: LogNormal | tuple[float, float]) -> float:
    """One draw in milliseconds from a log-normal given by its median and sigma."""
    median, sigma = (dist.median_ms, dist.sigma) if isinstance(dist, LogNormal) else dist
    if median <= 0:
        return 0.0
    return median * math.exp(sigma * rng.gauss(0.0, 1.0)) if sigma > 0 else median


@dataclass(slots=True)
class Code:
    """A delivered code and what it really is."""

    serial: str
    pin: str
    face_value: Decimal
    expires_at: float | None
    kind: str

    def wire(self) -> dict[str, Any]:
        """The protocol's Code object."""
        return {"serial": self.serial, "pin": self.pin,
                "face_value": format_money(self.face_value),
                "expires_at": None if self.expires_at is None else format_epoch(self.expires_at)}


@dataclass(slots=True)
class IssuedCode:
    """What the issuer knows of a serial."""

    pin: str
    face_value: Decimal
    status: str
    expires_at: float | None


@dataclass(slots=True)
class Refund:
    """A refund request and the policy it will follow."""

    refund_id: str
    state: str
    amount: Decimal
    reason: str
    requested_at: float
    whole: bool
    policy: str
    resolved_at: float | None = None

    def wire(self) -> dict[str, Any]:
        """The protocol's Refund object."""
        return {"refund_id": self.refund_id, "state": self.state,
                "amount": format_money(self.amount), "reason": self.reason,
                "requested_at": format_epoch(self.requested_at),
                "resolved_at": None if self.resolved_at is None
                else format_epoch(self.resolved_at)}


@dataclass(slots=True)
class Fate:
    """Everything drawn for one order at acceptance."""

    sync: bool
    slow: bool
    delivery_ms: float
    outcome: str
    delivered_units: int
    unknown: bool
    not_found: bool
    code_kinds: list[str]
    silent: bool = False


@dataclass(slots=True)
class Order:
    """One order with its hidden fate and bookkeeping."""

    client_order_id: str
    order_id: str
    request_key: tuple[Any, ...]
    product: Product
    quantity: int
    account: str | None
    callback_url: str | None
    unit_price: Decimal
    amount: Decimal
    created_at: float
    fate: Fate
    rng: random.Random
    from_real_stock: int
    oversold: bool
    hidden_until: float
    state: str = "submitted"
    updated_at: float = 0.0
    delivered_at: float | None = None
    codes: list[Code] = field(default_factory=list)
    failure_reason: str | None = None
    refund: Refund | None = None
    last_event: bytes | None = None
    _json: bytes | None = None

    def wire(self) -> dict[str, Any]:
        """The protocol's Order object."""
        return {
            "client_order_id": self.client_order_id, "order_id": self.order_id,
            "sku": self.product.sku, "quantity": self.quantity, "account": self.account,
            "unit_price": format_money(self.unit_price), "amount": format_money(self.amount),
            "state": self.state, "created_at": format_epoch(self.created_at),
            "updated_at": format_epoch(self.updated_at),
            "delivered_at": None if self.delivered_at is None
            else format_epoch(self.delivered_at),
            "codes": [code.wire() for code in self.codes],
            "failure_reason": self.failure_reason,
            "refund": None if self.refund is None else self.refund.wire(),
        }

    def json(self) -> bytes:
        """The Order object as JSON bytes, cached until the order changes."""
        if self._json is None:
            self._json = dumps(self.wire())
        return self._json

    def touch(self, now: float) -> None:
        """Mark a change: bump ``updated_at`` (strictly increasing) and drop the cache."""
        self.updated_at = max(now, self.updated_at + 0.001)
        self._json = None


@dataclass(slots=True)
class Counters:
    """Ground-truth tallies of one supplier."""

    hidden_fees_taken: Decimal = Decimal("0")
    unknown_outcomes: int = 0
    silent_outcomes: int = 0
    not_found_orders: int = 0
    rejected_503: int = 0
    rate_limited_429: int = 0
    unauthorized_401: int = 0
    oversold_orders: int = 0
    refunds_requested: int = 0
    refunds_refused: int = 0
    refunds_rejected: int = 0
    refunds_completed: int = 0
    refunds_completed_amount: Decimal = Decimal("0")
    refunds_credited: int = 0
    refunds_credited_amount: Decimal = Decimal("0")
    refunds_phantom: int = 0
    refunds_phantom_amount: Decimal = Decimal("0")
    callback_events: int = 0
    callbacks_sent: int = 0
    callbacks_acked: int = 0
    callbacks_failed: int = 0
    callbacks_given_up: int = 0
    callbacks_suppressed: int = 0
    callbacks_duplicated: int = 0
    callbacks_out_of_order: int = 0
    codes_issued: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CODE_KINDS, 0))


class Issuer:
    """The brand's registry of minted serials."""

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.codes: dict[str, IssuedCode] = {}
        self.taken: set[str] = set()
        """Every serial handed out by any supplier (minted or not), for fleet-wide uniqueness."""

    def status_of(self, code: IssuedCode, now: float) -> str:
        """The code's status at ``now`` (active codes past expiry read as expired)."""
        if code.status == "active" and code.expires_at is not None and now >= code.expires_at:
            return "expired"
        return code.status

    def check(self, api_key: str | None, serial: str, pin: str | None) -> Reply:
        """``GET /v1/codes/{serial}?pin=``: non-consuming check."""
        if api_key != self.api_key:
            return error(401, "unauthorized", "missing or unknown X-Api-Key")
        code = self.codes.get(serial)
        if code is None or pin is None or code.pin != pin:
            return error(404, "not_found", "no such serial, or the pin does not match")
        return 200, dumps({
            "serial": serial, "status": self.status_of(code, time.time()),
            "face_value": format_money(code.face_value),
            "expires_at": None if code.expires_at is None else format_epoch(code.expires_at),
        }), _NO_HEADERS

    def redeem(self, api_key: str | None, serial: str, body: bytes) -> Reply:
        """``POST /v1/codes/{serial}/redeem``: consumes the code."""
        if api_key != self.api_key:
            return error(401, "unauthorized", "missing or unknown X-Api-Key")
        try:
            payload = json.loads(body)
        except ValueError:
            return error(400, "invalid_request", "body is not valid JSON")
        if not isinstance(payload, dict) or not isinstance(payload.get("pin"), str):
            return error(400, "invalid_request", "body must be {\"pin\": string}")
        code = self.codes.get(serial)
        if code is None or code.pin != payload["pin"]:
            return error(404, "not_found", "no such serial, or the pin does not match")
        status = self.status_of(code, time.time())
        if status == "redeemed":
            return error(409, "already_redeemed", "this code was already redeemed")
        if status != "active":
            return error(410, "expired", f"this code is {status}")
        code.status = "redeemed"
        return 200, dumps({"status": "redeemed",
                           "face_value": format_money(code.face_value)}), _NO_HEADERS


class Supplier:
    """One simulated supplier: its catalog, balance, orders and faults."""

    def __init__(self, sim: Simulation, name: str, profile: SupplierProfile) -> None:
        self.sim = sim
        self.name = name
        self.profile = profile
        self.retired = False
        self.products = {p.sku: p for p in profile.products}
        self.stock: dict[str, int | None] = {p.sku: p.stock for p in profile.products}
        self.oversell_left: dict[str, int] = {p.sku: p.oversell_units for p in profile.products}
        self.balance = profile.balance
        self.orders: dict[str, Order] = {}
        self.in_flight = 0
        self._hold_s = 0.0
        """Extra hold for the reply being built: set by a silent POST, taken by the app
        for that same request (nothing awaits in between)."""
        self.counters = Counters()
        self.money_kept = Decimal("0")
        self.genuine: dict[str, list[Code]] = {}
        """Genuine codes issued per sku, from which a ``duplicate`` code is drawn again."""
        self._tokens = float(profile.rate_limit.burst) if profile.rate_limit else 0.0
        self._tokens_at = time.monotonic()
        self._order_seq = 0
        self._refund_seq = 0
        self._products_json: bytes | None = None
        self._balance_json: bytes | None = None
        self.dialect_state: dict[str, Any] = {}
        """What a dialect adapter keeps about this supplier (e.g. trade numbers)."""

    # -- request gates ---------------------------------------------------------------

    def rate_limited(self) -> Reply | None:
        """Take a token from the bucket, or answer 429 with Retry-After in seconds."""
        limit = self.profile.rate_limit
        if limit is None:
            return None
        now = time.monotonic()
        self._tokens = min(float(limit.burst),
                           self._tokens + (now - self._tokens_at) * limit.rate_per_s)
        self._tokens_at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return None
        self.counters.rate_limited_429 += 1
        retry_s = max(1, math.ceil((1.0 - self._tokens) / limit.rate_per_s))
        return error(429, "rate_limited", "too many requests",
                     [(b"retry-after", str(retry_s).encode())])

    def authorized(self, method: str, path: str, body: bytes, api_key: str | None,
                   timestamp: str | None, signature: str | None) -> bool:
        """True when the key is this supplier's and the signature and timestamp are good."""
        if api_key == self.profile.api_key and verify(
                self.profile.secret, method, path, timestamp, body, signature):
            return True
        self.counters.unauthorized_401 += 1
        return False

    def response_delay_s(self) -> float:
        """How long to hold this response: profile latency plus degradation, plus the
        silence of a POST that was taken but is not to be answered in time."""
        delay_ms = lognormal_ms(self.sim.noise, self.profile.response_latency)
        cap = self.profile.capacity
        if cap is not None:
            delay_ms += cap.latency_ms_per_order_in_flight * self.in_flight
        hold_s, self._hold_s = self._hold_s, 0.0
        return delay_ms / 1000.0 + hold_s

    # -- catalog and balance ---------------------------------------------------------

    def get_products(self) -> Reply:
        """``GET /v1/products``."""
        if self._products_json is None:
            items = []
            for p in self.profile.products:
                real = self.stock[p.sku]
                items.append({
                    "sku": p.sku, "name": p.name, "kind": p.kind,
                    "face_value": format_money(p.face_value),
                    "currency": self.profile.currency, "price": format_money(p.price),
                    "stock": None if real is None else real + self.oversell_left[p.sku],
                    "code_pattern": p.code_pattern if p.publish_pattern and p.kind == "card"
                    else None,
                })
            self._products_json = dumps({"products": items})
        return 200, self._products_json, _NO_HEADERS

    def get_balance(self) -> Reply:
        """``GET /v1/balance``."""
        if self._balance_json is None:
            self._balance_json = dumps({"balance": format_money(self.balance),
                                        "currency": self.profile.currency})
        return 200, self._balance_json, _NO_HEADERS

    def _move_balance(self, delta: Decimal) -> None:
        self.balance += delta
        self._balance_json = None

    def _move_stock(self, sku: str, real_delta: int, oversell_delta: int = 0) -> None:
        real = self.stock[sku]
        if real is not None:
            self.stock[sku] = real + real_delta
            self.oversell_left[sku] += oversell_delta
            self._products_json = None

    # -- orders ----------------------------------------------------------------------

    def place_order(self, body: bytes) -> tuple[Reply, Order | None]:
        """``POST /v1/orders``; also returns the order when one was taken."""
        try:
            payload = json.loads(body)
        except ValueError:
            return error(400, "invalid_request", "body is not valid JSON"), None
        problem = _order_problem(payload)
        if problem:
            return error(400, "invalid_request", problem), None
        coid: str = payload["client_order_id"]
        key = (payload["sku"], payload["quantity"], payload["account"], payload["callback_url"])
        existing = self.orders.get(coid)
        if existing is not None:
            if existing.request_key == key:
                return (200, b'{"order":' + existing.json() + b"}", _NO_HEADERS), None
            return error(409, "duplicate_order",
                         "client_order_id was used before with a different body"), None
        product = self.products.get(payload["sku"])
        if product is None:
            return error(404, "unknown_sku", f"no product {payload['sku']!r}"), None
        account = payload["account"]
        if product.kind == "direct" and not account:
            return error(400, "invalid_request", "account is required for a direct product"), None
        if product.kind == "card" and account is not None:
            return error(400, "invalid_request", "account must be null for a card product"), None
        cap = self.profile.capacity
        if cap is not None and self.in_flight >= cap.max_orders_in_flight:
            self.counters.rejected_503 += 1
            return error(503, "overloaded", "too many orders in flight; try later",
                         [(b"retry-after", b"1")]), None
        quantity: int = payload["quantity"]
        real = self.stock[product.sku]
        from_real = quantity
        oversold = False
        if real is not None:
            if quantity > real + self.oversell_left[product.sku]:
                return error(409, "out_of_stock", f"{max(real, 0)} units in stock"), None
            from_real = min(real, quantity)
            oversold = from_real < quantity
        cost = product.price * quantity
        fee = self.profile.outcomes.hidden_fee
        if cost + fee > self.balance:
            return error(402, "insufficient_balance",
                         f"balance {format_money(self.balance)} cannot pay "
                         f"{format_money(cost)}"), None
        # taken: from here on the order exists whatever the answer says
        now = time.time()
        self._move_balance(-(cost + fee))
        self.money_kept += cost
        self.counters.hidden_fees_taken += fee
        self._move_stock(product.sku, -from_real, -(quantity - from_real))
        rng = random.Random(f"{self.sim.seed}/{self.name}/{coid}")
        fate = self._draw_fate(rng, quantity)
        self._order_seq += 1
        order = Order(
            client_order_id=coid, order_id=f"{self.name[:4].upper()}{self._order_seq:09d}",
            request_key=key, product=product, quantity=quantity, account=account,
            callback_url=payload["callback_url"], unit_price=product.price, amount=cost,
            created_at=now, updated_at=now, fate=fate, rng=rng, from_real_stock=from_real,
            oversold=oversold,
            hidden_until=now + self.profile.outcomes.not_found_window_ms / 1000.0
            if fate.not_found else 0.0)
        self.orders[coid] = order
        self.in_flight += 1
        if oversold:
            self.counters.oversold_orders += 1
        if fate.not_found:
            self.counters.not_found_orders += 1
        if fate.sync:
            self._finish(order)
        else:
            self._schedule(order)
        if fate.unknown:
            self.counters.unknown_outcomes += 1
            return error(500, "internal_error", "upstream channel error"), order
        if fate.silent:
            self.counters.silent_outcomes += 1
            self._hold_s = self.profile.outcomes.silent_hold_ms / 1000.0
        return (201, b'{"order":' + order.json() + b"}", _NO_HEADERS), order

    def _draw_fate(self, rng: random.Random, quantity: int) -> Fate:
        """Draw an order's fate; the order of draws is fixed so a seed fixes the fate."""
        d = self.profile.delivery
        o = self.profile.outcomes
        c = self.profile.codes
        sync = rng.random() < d.sync_share
        slow = rng.random() < d.slow_share
        delivery_ms = lognormal_ms(rng, (d.slow_median_ms, d.slow_sigma) if slow
                                   else (d.median_ms, d.sigma))
        roll = rng.random()
        outcome, units = "success", quantity
        if roll < o.failure_rate:
            outcome, units = "failed", 0
        elif roll < o.failure_rate + o.partial_rate and quantity >= 2:
            outcome, units = "partial", rng.randint(1, quantity - 1)
        unknown = rng.random() < o.unknown_outcome_rate
        not_found = rng.random() < o.not_found_share
        shares = ((c.bad_pattern, "bad_pattern"), (c.not_minted, "not_minted"),
                  (c.resold, "resold"), (c.wrong_face_value, "wrong_face_value"),
                  (c.expiring, "expiring"), (c.duplicate, "duplicate"))
        kinds = []
        for _ in range(quantity):
            draw = rng.random()
            kind = "valid"
            for share, name in shares:
                if draw < share:
                    kind = name
                    break
                draw -= share
            kinds.append(kind)
        silent = not unknown and rng.random() < o.silent_rate  # drawn last: older fates hold
        return Fate(sync=sync, slow=slow, delivery_ms=delivery_ms, outcome=outcome,
                    delivered_units=units, unknown=unknown, not_found=not_found,
                    code_kinds=kinds, silent=silent)

    def _schedule(self, order: Order) -> None:
        delivery_ms = order.fate.delivery_ms
        cap = self.profile.capacity
        if cap is not None:
            delivery_ms += cap.latency_ms_per_order_in_flight * self.in_flight
        processing_ms = min(self.profile.delivery.processing_after_ms, delivery_ms / 2)
        self.sim.later(processing_ms / 1000.0, self, lambda: self._processing(order))
        self.sim.later(delivery_ms / 1000.0, self, lambda: self._finish(order))

    def _processing(self, order: Order) -> None:
        if order.state == "submitted":
            order.state = "processing"
            order.touch(time.time())
            self._emit(order, "order.updated")

    def _finish(self, order: Order) -> None:
        """Move an order to its final state, settle money and stock, issue codes."""
        if order.state not in ("submitted", "processing"):
            return
        now = time.time()
        fate = order.fate
        units = fate.delivered_units
        outcome = fate.outcome
        if order.oversold:
            if order.product.oversell_outcome == "partial" and order.from_real_stock > 0:
                outcome, units = "partial", min(units, order.from_real_stock)
            else:
                outcome, units = "failed", 0
        if outcome == "failed":
            order.failure_reason = ("out of stock at the channel" if order.oversold
                                    else "channel rejected the order")
        keep = order.unit_price * units
        returned = order.amount - keep
        self._move_balance(returned)
        self.money_kept -= returned
        order.amount = keep
        self._move_stock(order.product.sku, max(0, order.from_real_stock - units))
        if units:
            order.delivered_at = now
            if order.product.kind == "card":
                order.codes = [self._issue_code(order, fate.code_kinds[i], now)
                               for i in range(units)]
        order.state = outcome
        order.touch(now)
        self.in_flight -= 1
        self._emit(order, "order.updated")

    def _issue_code(self, order: Order, kind: str, now: float) -> Code:
        rng = order.rng
        product = order.product
        issuer = self.sim.issuer
        codes = self.profile.codes
        if kind == "duplicate":
            earlier = self.genuine.get(product.sku)
            if earlier:  # the very same serial and pin, delivered again
                old = earlier[rng.randrange(len(earlier))]
                self.counters.codes_issued[kind] += 1
                return Code(serial=old.serial, pin=old.pin, face_value=old.face_value,
                            expires_at=old.expires_at, kind=kind)
            kind = "valid"  # nothing to copy yet: the first code is genuine
        while True:
            digits = f"{rng.randrange(10**12):012d}"
            if kind == "bad_pattern":
                serial = f"{product.serial_prefix}{digits}"
            else:
                serial = f"{product.serial_prefix}-{digits[:4]}-{digits[4:8]}-{digits[8:]}"
            if serial not in issuer.taken:
                break
        issuer.taken.add(serial)
        pin = f"{rng.randrange(10**8):08d}"
        face = product.face_value
        expires: float | None = now + codes.valid_for_days * 86400.0
        if kind == "wrong_face_value":
            face = (face * codes.wrong_face_value_factor).quantize(Decimal("0.01"))
        elif kind == "expiring":
            expires = now + codes.expiring_within_s
        if kind not in ("bad_pattern", "not_minted"):
            status = "redeemed" if kind == "resold" else "active"
            issuer.codes[serial] = IssuedCode(pin=pin, face_value=face, status=status,
                                              expires_at=expires)
        self.counters.codes_issued[kind] += 1
        code = Code(serial=serial, pin=pin, face_value=face, expires_at=expires, kind=kind)
        if kind == "valid":
            self.genuine.setdefault(product.sku, []).append(code)
        return code

    def visible(self, coid: str) -> Order | None:
        """The order as GET sees it: None if unknown or inside its not-found window."""
        order = self.orders.get(coid)
        if order is None or (order.hidden_until and time.time() < order.hidden_until):
            return None
        return order

    def get_order(self, coid: str) -> Reply:
        """``GET /v1/orders/{client_order_id}``."""
        order = self.visible(coid)
        if order is None:
            return error(404, "order_not_found", f"no order {coid!r}")
        return 200, b'{"order":' + order.json() + b"}", _NO_HEADERS

    # -- refunds ---------------------------------------------------------------------

    def request_refund(self, coid: str, body: bytes) -> Reply:
        """``POST /v1/orders/{client_order_id}/refund``."""
        try:
            payload = json.loads(body)
        except ValueError:
            return error(400, "invalid_request", "body is not valid JSON")
        problem = _refund_problem(payload)
        if problem:
            return error(400, "invalid_request", problem)
        order = self.visible(coid)
        if order is None:
            return error(404, "order_not_found", f"no order {coid!r}")
        if order.refund is not None:
            return error(409, "refund_exists", "a refund was already requested on this order")
        if order.state not in ("success", "partial"):
            return error(409, "refund_not_allowed",
                         f"the order is {order.state}; only delivered orders are refunded")
        serials = payload.get("serials")
        whole = serials is None
        if whole:
            amount = order.amount
        else:
            mine = {code.serial for code in order.codes}
            if not serials or len(set(serials)) != len(serials) or not set(serials) <= mine:
                return error(400, "invalid_request",
                             "serials must be distinct serials delivered in this order")
            amount = min(order.amount, order.unit_price * len(serials))
        policy = self._draw_policy(coid)
        self.counters.refunds_requested += 1
        if policy == "refuse":
            self.counters.refunds_refused += 1
            return error(409, "refund_not_allowed", "refused by policy: codes are non-returnable")
        now = time.time()
        self._refund_seq += 1
        refund = Refund(refund_id=f"R{self.name[:4].upper()}{self._refund_seq:08d}",
                        state="pending", amount=amount, reason=payload["reason"],
                        requested_at=now, whole=whole, policy=policy)
        order.refund = refund
        order.touch(now)
        rp = self.profile.refunds
        if policy == "instant":
            self._complete_refund(order)
        else:
            self._emit(order, "refund.updated")
            if policy == "rejected":
                self.sim.later(rp.delay_ms / 1000.0, self, lambda: self._reject_refund(order))
            elif policy == "phantom":
                self.sim.later(rp.delay_ms / 1000.0, self, lambda: self._complete_refund(order))
            elif policy == "slow":
                self.sim.later(rp.slow_delay_ms / 2000.0, self,
                               lambda: self._approve_refund(order))
                self.sim.later(rp.slow_delay_ms / 1000.0, self,
                               lambda: self._complete_refund(order))
        return 202, dumps({"refund": refund.wire()}), _NO_HEADERS

    def _draw_policy(self, coid: str) -> str:
        rp = self.profile.refunds
        draw = random.Random(f"{self.sim.seed}/{self.name}/{coid}/refund").random()
        for share, name in ((rp.refuse, "refuse"), (rp.rejected, "rejected"),
                            (rp.slow, "slow"), (rp.stuck, "stuck"), (rp.phantom, "phantom")):
            if draw < share:
                return name
            draw -= share
        return "instant"

    def _approve_refund(self, order: Order) -> None:
        refund = order.refund
        if refund is not None and refund.state == "pending":
            refund.state = "approved"
            order.touch(time.time())
            self._emit(order, "refund.updated")

    def _reject_refund(self, order: Order) -> None:
        refund = order.refund
        if refund is not None and refund.state == "pending":
            now = time.time()
            refund.state = "rejected"
            refund.resolved_at = now
            order.touch(now)
            self.counters.refunds_rejected += 1
            self._emit(order, "refund.updated")

    def _complete_refund(self, order: Order) -> None:
        refund = order.refund
        if refund is None or refund.state not in ("pending", "approved"):
            return
        now = time.time()
        refund.state = "completed"
        refund.resolved_at = now
        order.amount -= refund.amount
        c = self.counters
        c.refunds_completed += 1
        c.refunds_completed_amount += refund.amount
        if refund.policy == "phantom":
            c.refunds_phantom += 1
            c.refunds_phantom_amount += refund.amount
        else:
            self._move_balance(refund.amount)
            self.money_kept -= refund.amount
            c.refunds_credited += 1
            c.refunds_credited_amount += refund.amount
        order_changed = refund.whole
        if order_changed:
            order.state = "refunded"
        order.touch(now)
        self._emit(order, "refund.updated")
        if order_changed:
            self._emit(order, "order.updated")

    def get_refund(self, coid: str) -> Reply:
        """``GET /v1/orders/{client_order_id}/refund``."""
        order = self.visible(coid)
        if order is None:
            return error(404, "order_not_found", f"no order {coid!r}")
        if order.refund is None:
            return error(404, "no_refund", "no refund was requested on this order")
        return 200, dumps({"refund": order.refund.wire()}), _NO_HEADERS

    # -- callbacks -------------------------------------------------------------------

    def _emit(self, order: Order, event: str) -> None:
        """Queue a callback for a state change, applying the profile's callback faults."""
        if order.callback_url is None:
            return
        self.counters.callback_events += 1
        body = b'{"event":"' + event.encode() + b'","order":' + order.json() + b"}"
        previous = order.last_event
        order.last_event = body
        cb = self.profile.callbacks
        rng = order.rng
        missing = rng.random() < cb.missing_rate
        duplicate = rng.random() < cb.duplicate_rate
        stale = rng.random() < cb.out_of_order_rate and previous is not None
        delay_s = lognormal_ms(rng, cb.delay_ms) / 1000.0
        if missing:
            self.counters.callbacks_suppressed += 1
            return
        bodies = [body]
        if duplicate:
            self.counters.callbacks_duplicated += 1
            bodies.append(body)
        if stale and previous is not None:
            self.counters.callbacks_out_of_order += 1
            bodies.append(previous)
        self.sim.deliver(self, order.callback_url, bodies, delay_s)

    # -- ground truth ----------------------------------------------------------------

    def truth(self) -> dict[str, Any]:
        """The supplier's ground truth (never read by the measuring harness)."""
        c = self.counters
        by_state: dict[str, int] = {}
        for order in self.orders.values():
            by_state[order.state] = by_state.get(order.state, 0) + 1
        shown = sum((o.amount for o in self.orders.values()), Decimal("0"))
        return {
            "orders_created": len(self.orders),
            "orders_by_state": by_state,
            "client_order_ids": list(self.orders),
            "money_charged": format_money(self.money_kept),
            "orders_amount_shown": format_money(shown),
            "hidden_fees_taken": format_money(c.hidden_fees_taken),
            "initial_balance": format_money(self.profile.balance),
            "balance": format_money(self.balance),
            "in_flight": self.in_flight,
            "refunds": {
                "requested": c.refunds_requested, "refused": c.refunds_refused,
                "rejected": c.refunds_rejected, "completed": c.refunds_completed,
                "completed_amount": format_money(c.refunds_completed_amount),
                "credited": c.refunds_credited,
                "credited_amount": format_money(c.refunds_credited_amount),
                "phantom": c.refunds_phantom,
                "phantom_amount": format_money(c.refunds_phantom_amount),
            },
            "codes_issued": dict(c.codes_issued),
            "unknown_outcomes": c.unknown_outcomes,
            "silent_outcomes": c.silent_outcomes,
            "not_found_orders": c.not_found_orders,
            "rejected_503": c.rejected_503,
            "rate_limited_429": c.rate_limited_429,
            "unauthorized_401": c.unauthorized_401,
            "oversold_orders": c.oversold_orders,
            "callbacks": {
                "events": c.callback_events, "sent": c.callbacks_sent, "acked": c.callbacks_acked,
                "failed": c.callbacks_failed, "given_up": c.callbacks_given_up,
                "suppressed": c.callbacks_suppressed, "duplicated": c.callbacks_duplicated,
                "out_of_order": c.callbacks_out_of_order,
            },
        }


class Simulation:
    """The whole fleet and the issuer, with timers and callback delivery."""

    def __init__(self, fleet: Fleet, seed: int | None = None) -> None:
        self.fleet = fleet
        self.seed = fleet.seed if seed is None else seed
        self.noise = random.Random(self.seed)
        """Draws that do not belong to an order (response latency)."""
        self.issuer = Issuer(fleet.issuer.api_key)
        self.suppliers = {name: Supplier(self, name, profile)
                          for name, profile in fleet.suppliers.items()}
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: CallbackClient | None = None

    def reset(self, seed: int | None = None) -> None:
        """Restore the initial state (optionally with a new seed); pending work is dropped."""
        for supplier in self.suppliers.values():
            supplier.retired = True
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()
        self.seed = self.fleet.seed if seed is None else seed
        self.noise = random.Random(self.seed)
        self.issuer = Issuer(self.fleet.issuer.api_key)
        self.suppliers = {name: Supplier(self, name, profile)
                          for name, profile in self.fleet.suppliers.items()}

    def truth(self) -> dict[str, Any]:
        """Ground truth of every supplier, plus the issuer's size."""
        return {"seed": self.seed,
                "issuer": {"codes_minted": len(self.issuer.codes)},
                "suppliers": {name: s.truth() for name, s in self.suppliers.items()}}

    def later(self, delay_s: float, owner: Supplier, action: Callable[[], None]) -> None:
        """Run ``action`` after ``delay_s`` unless ``owner`` was retired by a reset."""
        def fire() -> None:
            if not owner.retired:
                action()
        asyncio.get_running_loop().call_later(max(0.0, delay_s), fire)

    def deliver(self, owner: Supplier, url: str, bodies: list[bytes], delay_s: float) -> None:
        """Send callback bodies in order, each retried on its own schedule."""
        task = asyncio.get_running_loop().create_task(
            self._deliver(owner, url, bodies, delay_s))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, owner: Supplier, url: str, bodies: list[bytes],
                       delay_s: float) -> None:
        cb = owner.profile.callbacks
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        parts = urlsplit(url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        client = self._http()
        for body in bodies:
            for wait_s in (0.0, *cb.retry_schedule_s):
                if wait_s:
                    await asyncio.sleep(wait_s)
                if owner.retired:
                    return
                ts = int(time.time() * 1000)
                headers = {"content-type": "application/json", "x-timestamp": str(ts),
                           "x-signature": sign(owner.profile.secret, "POST", path, ts, body)}
                sent = body
                if owner.profile.dialect != "reference":  # the dialect's own callback
                    from harness.simulator.dialects import ADAPTERS

                    encoded = ADAPTERS[owner.profile.dialect].callback(owner, body)
                    if encoded is None:
                        break  # this dialect sends no callback for this event
                    sent, headers = encoded
                owner.counters.callbacks_sent += 1
                try:
                    status = await client.post(url, sent, headers, cb.timeout_s)
                    ok = 200 <= status < 300
                except (OSError, TimeoutError):
                    ok = False
                if ok:
                    owner.counters.callbacks_acked += 1
                    break
                owner.counters.callbacks_failed += 1
            else:
                owner.counters.callbacks_given_up += 1

    def _http(self) -> CallbackClient:
        if self._client is None:
            self._client = CallbackClient()
        return self._client

    async def aclose(self) -> None:
        """Cancel callback deliveries and close the HTTP client."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _order_problem(payload: Any) -> str | None:
    """Why an order body breaks the protocol's field rules, or None."""
    if not isinstance(payload, dict):
        return "body must be a JSON object"
    missing = _ORDER_FIELDS - payload.keys()
    if missing:
        return f"missing field(s): {', '.join(sorted(missing))}"
    payload.setdefault("account", None)  # absent reads as null
    payload.setdefault("callback_url", None)
    coid = payload["client_order_id"]
    if not isinstance(coid, str) or not CLIENT_ORDER_ID_RE.match(coid):
        return "client_order_id must be 1-64 characters of A-Z a-z 0-9 _ -"
    if not isinstance(payload["sku"], str) or not payload["sku"]:
        return "sku must be a non-empty string"
    quantity = payload["quantity"]
    if isinstance(quantity, bool) or not isinstance(quantity, int) or not 1 <= quantity <= 100:
        return "quantity must be an integer from 1 to 100"
    if payload["account"] is not None and not isinstance(payload["account"], str):
        return "account must be a string or null"
    if payload["callback_url"] is not None and not isinstance(payload["callback_url"], str):
        return "callback_url must be a string or null"
    url = payload["callback_url"]
    if url is not None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return "callback_url must be an absolute http(s) URL"
    return None


def _refund_problem(payload: Any) -> str | None:
    """Why a refund body breaks the protocol's field rules, or None."""
    if not isinstance(payload, dict):
        return "body must be a JSON object"
    if payload.get("reason") not in REFUND_REASONS:
        return f"reason must be one of {', '.join(REFUND_REASONS)}"
    serials = payload.get("serials")
    if serials is not None and (not isinstance(serials, list)
                                or not all(isinstance(s, str) for s in serials)):
        return "serials must be a list of strings or null"
    note = payload.get("note")
    if note is not None and not isinstance(note, str):
        return "note must be a string or null"
    return None
