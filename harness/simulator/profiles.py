"""Behaviour profiles of the simulated fleet: a YAML file, validated into these models.

A fleet file names the issuer, a default seed and one profile per supplier. Every fault
listed under "What a supplier may get wrong" in the protocol has a key here; all keys
default to a well-behaved supplier, so a profile only writes what it plants. Every key is
described by the docstring under it, which becomes its description in the JSON Schema
(``trialbench schema --kind fleet``, shipped as ``scenarios/fleet.schema.json``) and the
README's table of profile keys::

    seed: 7
    issuer: {api_key: issuer-demo-key}
    suppliers:
      acme:
        api_key: acme-key
        secret: acme-secret
        balance: "5000.00"
        products:
          - {sku: steam-100, name: Steam 100, kind: card, face_value: "100.00",
             price: "98.50", stock: null, serial_prefix: STM}
        delivery: {median_ms: 300, sigma: 0.4, sync_share: 0.2}
        codes: {not_minted: 0.05}
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from harness.errors import ProfileError
from harness.yamlfile import LocatedValueError, load_model

DEFAULT_RETRY_SCHEDULE_S = (1.0, 2.0, 5.0, 10.0, 30.0)
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,31}$"
"""A supplier's name in a fleet (it becomes a URL path segment)."""
_NAME_RE = re.compile(NAME_PATTERN)
_PREFIX_RE = re.compile(r"^[A-Z][A-Z0-9]{1,7}$")

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


def _rate(default: float = 0.0) -> float:
    return Field(default=default, ge=0.0, le=1.0)


def _money(value: Decimal, what: str) -> Decimal:
    if value != value.quantize(Decimal("0.01")):
        raise ValueError(f"{what} must have at most two decimal places, e.g. \"98.50\"")
    return value


class LogNormal(_Strict):
    """A log-normal duration: half the draws fall below ``median_ms``; ``sigma`` sets the tail."""

    median_ms: float = Field(default=0.0, ge=0.0)
    """Median duration, milliseconds."""
    sigma: float = Field(default=0.0, ge=0.0, le=5.0)
    """Log-normal shape: 0 is a constant ``median_ms``; 0.5 a moderate tail; 1 or more a
    long one."""


class Product(_Strict):
    """One catalog entry; ``stock`` is the real stock (null = unlimited, undisclosed)."""

    sku: str = Field(min_length=1, max_length=64)
    """The product's id in the catalog; scenarios name products by it."""
    name: str = Field(min_length=1)
    """Display name in the catalog."""
    kind: Literal["card", "direct"] = "card"
    """``card``: delivers codes (serial and pin); ``direct``: a top-up to an account, no code."""
    face_value: Decimal = Field(gt=0)
    """Face value per unit, currency units, at most two decimals (write it quoted: "100.00")."""
    price: Decimal = Field(gt=0)
    """Price per unit taken from the balance, currency units, at most two decimals."""
    stock: int | None = Field(default=None, ge=0)
    """Real units held; null: unlimited and undisclosed. An order beyond it fails
    ``out_of_stock`` (or is oversold, see ``oversell_units``)."""
    oversell_units: int = Field(default=0, ge=0)
    """Units accepted beyond real stock (the catalog shows real + these)."""
    oversell_outcome: Literal["fail", "partial"] = "fail"
    """What an order reaching beyond real stock ends as: failed, or partial (real units only)."""
    serial_prefix: str = "CARD"
    """Genuine serials are ``PREFIX-dddd-dddd-dddd``; the catalog publishes that pattern."""
    publish_pattern: bool = True
    """Publish the serial pattern in the catalog (false: the scenario must give one)."""

    @field_validator("face_value", "price")
    @classmethod
    def _two_places(cls, value: Decimal) -> Decimal:
        return _money(value, "money")

    @field_validator("serial_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not _PREFIX_RE.match(value):
            raise ValueError("serial_prefix must be 2-8 upper-case letters/digits, e.g. STM")
        return value

    @model_validator(mode="after")
    def _oversell_needs_stock(self) -> Product:
        if self.oversell_units and self.stock is None:
            raise ValueError("oversell_units needs a finite stock; set stock or drop it")
        return self

    @property
    def code_pattern(self) -> str:
        """The regular expression every genuine serial of this product matches."""
        return f"^{self.serial_prefix}-[0-9]{{4}}-[0-9]{{4}}-[0-9]{{4}}$"


class Delivery(_Strict):
    """How long an accepted order takes to reach its final state."""

    median_ms: float = Field(default=200.0, ge=0.0)
    """Median time from acceptance to the final state, milliseconds (log-normal)."""
    sigma: float = Field(default=0.3, ge=0.0, le=5.0)
    """Log-normal shape of the delivery time (0: always ``median_ms``)."""
    slow_share: float = _rate()
    """Share of orders in slow mode (a long tail, e.g. a slow top-up channel)."""
    slow_median_ms: float = Field(default=10_000.0, ge=0.0)
    """Median delivery time of slow-mode orders, milliseconds."""
    slow_sigma: float = Field(default=0.3, ge=0.0, le=5.0)
    """Log-normal shape of slow-mode delivery times."""
    sync_share: float = _rate()
    """Share of orders already final in the 201 answer."""
    processing_after_ms: float = Field(default=20.0, ge=0.0)
    """When an asynchronous order becomes ``processing`` (at most half its delivery time)."""


class Outcomes(_Strict):
    """Order fates drawn per order (independent of arrival order)."""

    failure_rate: float = _rate()
    """Share of accepted orders that end ``failed`` (the money is not taken)."""
    partial_rate: float = _rate()
    """Share of orders with quantity ≥ 2 that deliver only some units."""
    unknown_outcome_rate: float = _rate()
    """Share of POSTs answered 500 although the order was taken (it exists)."""
    not_found_share: float = _rate()
    """Share of orders whose GET answers 404 for ``not_found_window_ms`` after acceptance."""
    not_found_window_ms: float = Field(default=2000.0, ge=0.0)
    """How long those orders stay invisible to GET after acceptance, milliseconds."""
    silent_rate: float = _rate()
    """Share of POSTs taken but not answered for ``silent_hold_ms`` (the client times out)."""
    silent_hold_ms: float = Field(default=30_000.0, ge=0.0)
    """How long a silent POST is held before it is answered, milliseconds."""
    hidden_fee: Decimal = Field(default=Decimal("0"), ge=0)
    """Taken from the balance per order accepted; no order shows it; never returned."""

    @field_validator("hidden_fee")
    @classmethod
    def _two_places(cls, value: Decimal) -> Decimal:
        return _money(value, "hidden_fee")

    @model_validator(mode="after")
    def _shares(self) -> Outcomes:
        if self.failure_rate + self.partial_rate > 1.0:
            raise ValueError("failure_rate + partial_rate must not exceed 1")
        return self


class Codes(_Strict):
    """Shares of delivered codes that are bad, drawn per code; the rest are valid."""

    bad_pattern: float = _rate()
    """Share of codes whose serial breaks the published pattern (no dashes)."""
    not_minted: float = _rate()
    """Share of fake codes: well-formed serials the issuer never minted."""
    resold: float = _rate()
    """Share of codes already redeemed at the issuer when delivered."""
    wrong_face_value: float = _rate()
    """Share of codes really worth ``face_value`` × ``wrong_face_value_factor`` (the
    supplier claims the full face value; the issuer knows better)."""
    expiring: float = _rate()
    """Share of codes that expire within ``expiring_within_s``."""
    duplicate: float = _rate()
    """A genuine code of the same product delivered before, delivered again (same serial
    and pin); the first code of a product is always genuine."""
    wrong_face_value_factor: Decimal = Field(default=Decimal("0.5"), gt=0)
    """A wrong-face-value code is really worth face_value × this (code and issuer agree)."""
    expiring_within_s: float = Field(default=3600.0, gt=0.0)
    """When an expiring code expires, seconds after it is issued."""
    valid_for_days: float = Field(default=365.0, gt=0.0)
    """When every other code expires, days after it is issued."""

    @model_validator(mode="after")
    def _shares(self) -> Codes:
        total = (self.bad_pattern + self.not_minted + self.resold + self.wrong_face_value
                 + self.expiring + self.duplicate)
        if total > 1.0 + 1e-9:
            raise ValueError(f"bad-code shares sum to {total:g}; they must not exceed 1")
        if self.wrong_face_value_factor == 1:
            raise ValueError("wrong_face_value_factor must differ from 1")
        return self


class Refunds(_Strict):
    """Refund policy mix, drawn per refund; the remainder is ``instant``."""

    refuse: float = _rate()
    """Answered 409 refund_not_allowed."""
    rejected: float = _rate()
    """Recorded (202 pending), then ``rejected`` after ``delay_ms``."""
    slow: float = _rate()
    """Pending, approved, then completed after ``slow_delay_ms``."""
    stuck: float = _rate()
    """Pending forever."""
    phantom: float = _rate()
    """``completed`` and the order's amount reduced, but the balance is never credited."""
    delay_ms: float = Field(default=200.0, ge=0.0)
    """When a ``rejected`` or ``phantom`` refund reaches its final state, milliseconds."""
    slow_delay_ms: float = Field(default=5000.0, ge=0.0)
    """When a ``slow`` refund completes (approved at half of it), milliseconds."""

    @model_validator(mode="after")
    def _shares(self) -> Refunds:
        total = self.refuse + self.rejected + self.slow + self.stuck + self.phantom
        if total > 1.0 + 1e-9:
            raise ValueError(f"refund policy shares sum to {total:g}; they must not exceed 1")
        return self


class Callbacks(_Strict):
    """Callback faults, drawn per event, and the retry schedule."""

    missing_rate: float = _rate()
    """Share of events whose callback is never sent."""
    duplicate_rate: float = _rate()
    """Share of events whose callback is sent twice."""
    out_of_order_rate: float = _rate()
    """Share of events after which the previous (older) snapshot is delivered again."""
    delay_ms: LogNormal = LogNormal()
    """Delay before each callback is sent (log-normal; default none)."""
    retry_schedule_s: tuple[float, ...] = DEFAULT_RETRY_SCHEDULE_S
    """Waits before each re-send of a callback the merchant did not acknowledge with a
    2xx, seconds."""
    timeout_s: float = Field(default=5.0, gt=0.0)
    """How long one callback waits for the merchant's answer, seconds."""

    @field_validator("retry_schedule_s")
    @classmethod
    def _schedule(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(step < 0 for step in value):
            raise ValueError("retry_schedule_s holds delays in seconds; none may be negative")
        return value


class RateLimit(_Strict):
    """A token bucket per supplier over every request; beyond it, 429 with Retry-After."""

    rate_per_s: float = Field(gt=0.0)
    """Requests per second the bucket refills."""
    burst: int = Field(default=10, ge=1)
    """Bucket size: requests allowed at once before the rate applies."""


class Capacity(_Strict):
    """Degradation with orders in flight (accepted, not yet final)."""

    max_orders_in_flight: int = Field(ge=1)
    """Beyond this, POST /v1/orders answers 503 overloaded (nothing is taken)."""
    latency_ms_per_order_in_flight: float = Field(default=0.0, ge=0.0)
    """Added to response and delivery latency per order in flight."""


class SupplierProfile(_Strict):
    """One simulated supplier: credentials, catalog, balance and planted faults."""

    api_key: str = Field(min_length=1)
    """The key the merchant sends (``X-Api-Key``); a simulator-only fixture, never a real
    credential. Unique in the fleet."""
    secret: str = Field(min_length=1)
    """The signing secret (HMAC, or the dialect's signature); a simulator-only fixture."""
    currency: str = Field(default="CNY", pattern=r"^[A-Z]{3}$")
    """ISO 4217 code of every price and of the balance."""
    balance: Decimal = Field(ge=0)
    """The merchant's starting balance, currency units, at most two decimals ("20000.00")."""
    products: tuple[Product, ...] = Field(min_length=1)
    """The catalog: one entry per product, each with its own sku."""
    response_latency: LogNormal = LogNormal()
    """Time to answer any request (log-normal; default instant)."""
    delivery: Delivery = Delivery()
    """How long accepted orders take to reach their final state."""
    outcomes: Outcomes = Outcomes()
    """Order fates: failures, partial fills, unknown outcomes, not-found windows, silence,
    hidden fees."""
    codes: Codes = Codes()
    """Shares of bad codes by kind (fake, resold, wrong face value, ...)."""
    refunds: Refunds = Refunds()
    """Refund policy mix (refused, rejected, slow, stuck, phantom; the rest instant)."""
    callbacks: Callbacks = Callbacks()
    """Callback faults (missing, repeated, out of order, late) and the retry schedule."""
    rate_limit: RateLimit | None = None
    """A token bucket over every request (429 with Retry-After beyond it); null: none."""
    capacity: Capacity | None = None
    """Degradation with orders in flight (latency growth, 503 beyond a limit); null: none."""
    dialect: Literal["reference", "gateway", "concat_md5", "sync_trade"] = "reference"
    """The API it speaks at ``/suppliers/<name>``: the reference protocol, or a dialect of
    the field through an adapter in front of the same engine (every fault still applies).
    ``gateway`` encrypts codes with the secret, so its secret is 16, 24 or 32 characters."""

    @field_validator("balance")
    @classmethod
    def _two_places(cls, value: Decimal) -> Decimal:
        return _money(value, "balance")

    @model_validator(mode="after")
    def _aes_secret(self) -> SupplierProfile:
        if self.dialect == "gateway" and len(self.secret.encode()) not in (16, 24, 32):
            raise LocatedValueError("the gateway dialect encrypts codes with AES keyed by the "
                                    "secret: give it 16, 24 or 32 characters", ("secret",))
        return self

    @model_validator(mode="after")
    def _unique_skus(self) -> SupplierProfile:
        seen: set[str] = set()
        for index, product in enumerate(self.products):
            if product.sku in seen:
                raise LocatedValueError(
                    f"sku {product.sku!r} appears twice; give each product its own sku",
                    ("products", index, "sku"))
            seen.add(product.sku)
        return self


class Issuer(_Strict):
    """The issuer service; its requests carry ``X-Api-Key`` only."""

    api_key: str = Field(min_length=1)
    """The key the harness sends to the issuer (``X-Api-Key``); a simulator-only fixture."""


class Fleet(_Strict):
    """A fleet file for `trialbench sim --profiles` (and `--simulate`): the issuer, a
    default seed, and one behaviour profile per simulated supplier, by name."""

    seed: int = 0
    """Seed of every random draw (fates, latencies, codes); `--seed` overrides it. The same
    seed and the same requests give the same answers."""
    issuer: Issuer
    """The simulated issuer, where codes are verified and redeemed (at `/issuer`)."""
    suppliers: dict[str, SupplierProfile] = Field(min_length=1)
    """Simulated suppliers by name (1-32 of a-z 0-9 _ -); each is served at
    `/suppliers/<name>`."""

    @field_validator("suppliers")
    @classmethod
    def _names(cls, value: dict[str, SupplierProfile]) -> dict[str, SupplierProfile]:
        keys: set[str] = set()
        for name, profile in value.items():
            if not _NAME_RE.match(name):
                raise LocatedValueError(f"supplier name {name!r} must be 1-32 of a-z 0-9 _ - "
                                        "(it becomes a URL path segment)", (name,))
            if profile.api_key in keys:
                raise LocatedValueError("another supplier has this api_key; give each its own",
                                        (name, "api_key"))
            keys.add(profile.api_key)
        return value


def load_fleet(path: Path) -> Fleet:
    """Read and validate a fleet file; errors are :class:`ProfileError` naming file:line:key."""
    return load_model(path, Fleet, error=ProfileError)
