"""The driver interface: one set of operations, canonical data, no I/O.

A driver turns an operation into an :class:`HttpRequest` and an :class:`HttpResponse`
into canonical data (or a :class:`Failure`). A transport sends the request: h11 over asyncio in
trials, Locust's gevent client in bursts. So a dialect is written once and spoken by both.

Per-order trouble is data, not exceptions: every ``parse_*`` returns either the
canonical value or a :class:`Failure` describing what the supplier answered.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Protocol, TypeAlias, TypeVar

T = TypeVar("T")


class OrderState(StrEnum):
    """Canonical order states; every dialect maps onto these."""

    SUBMITTED = "submitted"
    PROCESSING = "processing"
    SUCCESS = "success"
    PARTIAL = "partial"
    FAILED = "failed"
    REFUNDED = "refunded"
    UNKNOWN = "unknown"  # timed out, or not found yet

    @property
    def is_final(self) -> bool:
        return self in _FINAL

    @property
    def delivered(self) -> bool:
        """Codes were issued or the top-up made (refunded orders were delivered first)."""
        return self in (OrderState.SUCCESS, OrderState.PARTIAL, OrderState.REFUNDED)


_FINAL = frozenset({OrderState.SUCCESS, OrderState.PARTIAL, OrderState.FAILED,
                    OrderState.REFUNDED})


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """What a transport must send: fully built and signed."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes = b""
    read_only: bool = True
    """A read may be retried freely on 5xx; a write (placing an order) may not."""


NOT_SENT = "not_sent"
"""``transport_error`` prefix for a request that certainly never reached the supplier:
the TCP connect or the TLS handshake failed, which happens before any byte of the
request is written. A write that was not sent bought nothing."""


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """What came back. ``status`` 0 means no answer (timeout or connection error).

    ``transport_error`` says what went wrong: with status 0, why nothing came
    (``timeout``, ``not_sent:ConnectError``, ``connect_error:<name>``); with a status,
    why the body did not come whole (``timeout``: past the request's total deadline,
    ``body_too_large``: over the body cap) and ``body`` is empty. Either way the answer
    cannot be read: for a write its outcome is unknown, unless it was never sent."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    elapsed_ms: float = 0.0
    transport_error: str | None = None
    received_at: float | None = None
    """When the answer was in whole (``time.time()``), stamped by the transport as it
    arrives: latencies then exclude the harness's own reading of it. None: no answer."""


@dataclass(frozen=True, slots=True)
class Failure:
    """A request that did not give the canonical value.

    ``kind`` is a stable label used in results: ``http_<status>`` combined with the
    supplier's error code where there is one (``out_of_stock``, ``rate_limited``,
    ``order_not_found`` ...), or ``timeout`` / ``connect_error`` / ``bad_response``.
    """

    kind: str
    status: int
    message: str = ""
    retry_after_s: float | None = None

    @property
    def outcome_unknown(self) -> bool:
        """For a write: the supplier may or may not have acted (5xx, no answer, or a
        redirect, which is never followed: a 303 after a POST may mean it was done). Not
        when the transport knows the request never left (:data:`NOT_SENT`: the connection
        was refused before a byte of it was sent)."""
        if self.status == 0 and self.kind.startswith(NOT_SENT):
            return False
        return self.status == 0 or self.status >= 500 or 300 <= self.status < 400

    @property
    def retryable(self) -> bool:
        """Worth asking again: rate limited, 5xx, or no answer."""
        return self.status in (0, 429) or self.status >= 500


Result: TypeAlias = T | Failure

DUPLICATE_REQUEST = "duplicate_request"
"""The :attr:`Failure.kind` of a dialect's answer that the request id was used before. What
it proves depends on the dialect's idempotency (see :mod:`harness.run.lifecycle`)."""


@dataclass(frozen=True, slots=True)
class Product:
    sku: str
    name: str
    kind: str
    face_value: Decimal
    currency: str
    price: Decimal
    stock: int | None
    code_pattern: str | None


@dataclass(frozen=True, slots=True)
class Balance:
    amount: Decimal
    currency: str


@dataclass(frozen=True, slots=True)
class Code:
    """A delivered card code. ``pin`` is money: never log it, hash it first."""

    serial: str
    pin: str
    face_value: Decimal
    expires_at: datetime | None

    def __repr__(self) -> str:
        return (f"Code(serial=<{len(self.serial)} chars>, pin=<hidden>, "
                f"face_value={self.face_value})")


@dataclass(frozen=True, slots=True)
class Refund:
    refund_id: str
    state: str  # pending, approved, rejected, completed
    amount: Decimal
    reason: str
    requested_at: datetime
    resolved_at: datetime | None

    @property
    def is_final(self) -> bool:
        return self.state in ("rejected", "completed")


@dataclass(frozen=True, slots=True)
class Order:
    """An order as the supplier reports it, in canonical form."""

    client_order_id: str
    supplier_order_id: str
    sku: str
    quantity: int
    state: OrderState
    unit_price: Decimal
    amount: Decimal
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None
    codes: tuple[Code, ...] = ()
    failure_reason: str | None = None
    refund: Refund | None = None


def supersedes(candidate: Order, current: Order | None) -> bool:
    """Whether ``candidate`` is a newer view than ``current``: callbacks repeat and arrive
    out of order, so ``updated_at`` decides, and a final state never goes back."""
    if current is None:
        return True
    if candidate.updated_at <= current.updated_at:
        return False
    return not (current.state.is_final and not candidate.state.is_final)


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """The merchant's order, as the harness means it, before a dialect encodes it."""

    client_order_id: str
    sku: str
    quantity: int = 1
    account: str | None = None
    callback_url: str | None = None


@dataclass(frozen=True, slots=True)
class CallbackEvent:
    """A verified callback: which order it is about and its state at that moment."""

    event: str
    order: Order
    complete: bool = True
    """False when the callback tells only that the order changed (its state, not its codes
    or amount, as Juhe's do): the order is then news to look up, and ``order`` is never
    final."""


@dataclass(frozen=True, slots=True)
class IssuerVerdict:
    """The issuer's answer about one code: ``status`` is active, redeemed, expired,
    disabled, or ``not_found``."""

    status: str
    face_value: Decimal | None = None
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Credentials:
    api_key: str
    secret: str = field(repr=False)


class Driver(Protocol):
    """Operations every supplier dialect offers. Build requests; parse responses."""

    name: str

    def catalog(self) -> HttpRequest: ...
    def parse_catalog(self, response: HttpResponse) -> Result[list[Product]]: ...
    def balance(self) -> HttpRequest: ...
    def parse_balance(self, response: HttpResponse) -> Result[Balance]: ...
    def place_order(self, order: OrderRequest) -> HttpRequest: ...
    def get_order(self, client_order_id: str) -> HttpRequest: ...
    def parse_order(self, response: HttpResponse) -> Result[Order]: ...
    def request_refund(self, client_order_id: str, reason: str,
                       serials: list[str] | None = None,
                       note: str | None = None) -> HttpRequest: ...
    def get_refund(self, client_order_id: str) -> HttpRequest: ...
    def parse_refund(self, response: HttpResponse) -> Result[Refund]: ...
    def verify_callback(self, method: str, path: str, headers: Mapping[str, str],
                        body: bytes) -> Result[CallbackEvent]: ...
