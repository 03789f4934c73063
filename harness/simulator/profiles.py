"""Behaviour profiles of the simulated fleet: a YAML file, validated into these models.

A fleet file names the issuer, a default seed and one profile per supplier. Every fault
listed under "What a supplier may get wrong" in the protocol has a key here; all keys
default to a well-behaved supplier, so a profile only writes what it plants::

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
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_PREFIX_RE = re.compile(r"^[A-Z][A-Z0-9]{1,7}$")

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _rate(default: float = 0.0) -> float:
    return Field(default=default, ge=0.0, le=1.0)


def _money(value: Decimal, what: str) -> Decimal:
    if value != value.quantize(Decimal("0.01")):
        raise ValueError(f"{what} must have at most two decimal places, e.g. \"98.50\"")
    return value


class LogNormal(_Strict):
    """A log-normal duration: half the draws fall below ``median_ms``; ``sigma`` sets the tail."""

    median_ms: float = Field(default=0.0, ge=0.0)
    sigma: float = Field(default=0.0, ge=0.0, le=5.0)


class Product(_Strict):
    """One catalog entry; ``stock`` is the real stock (null = unlimited, undisclosed)."""

    sku: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1)
    kind: Literal["card", "direct"] = "card"
    face_value: Decimal = Field(gt=0)
    price: Decimal = Field(gt=0)
    stock: int | None = Field(default=None, ge=0)
    oversell_units: int = Field(default=0, ge=0)
    """Units accepted beyond real stock (the catalog shows real + these)."""
    oversell_outcome: Literal["fail", "partial"] = "fail"
    """What an order reaching beyond real stock ends as: failed, or partial (real units only)."""
    serial_prefix: str = "CARD"
    """Genuine serials are ``PREFIX-dddd-dddd-dddd``; the catalog publishes that pattern."""
    publish_pattern: bool = True

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
    sigma: float = Field(default=0.3, ge=0.0, le=5.0)
    slow_share: float = _rate()
    """Share of orders in slow mode (a long tail, e.g. a slow top-up channel)."""
    slow_median_ms: float = Field(default=10_000.0, ge=0.0)
    slow_sigma: float = Field(default=0.3, ge=0.0, le=5.0)
    sync_share: float = _rate()
    """Share of orders already final in the 201 answer."""
    processing_after_ms: float = Field(default=20.0, ge=0.0)
    """When an asynchronous order becomes ``processing`` (at most half its delivery time)."""


class Outcomes(_Strict):
    """Order fates drawn per order (independent of arrival order)."""

    failure_rate: float = _rate()
    partial_rate: float = _rate()
    """Share of orders with quantity ≥ 2 that deliver only some units."""
    unknown_outcome_rate: float = _rate()
    """Share of POSTs answered 500 although the order was taken (it exists)."""
    not_found_share: float = _rate()
    """Share of orders whose GET answers 404 for ``not_found_window_ms`` after acceptance."""
    not_found_window_ms: float = Field(default=2000.0, ge=0.0)
    silent_rate: float = _rate()
    """Share of POSTs taken but not answered for ``silent_hold_ms`` (the client times out)."""
    silent_hold_ms: float = Field(default=30_000.0, ge=0.0)
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
    not_minted: float = _rate()
    resold: float = _rate()
    wrong_face_value: float = _rate()
    expiring: float = _rate()
    duplicate: float = _rate()
    """A genuine code of the same product delivered before, delivered again (same serial
    and pin); the first code of a product is always genuine."""
    wrong_face_value_factor: Decimal = Field(default=Decimal("0.5"), gt=0)
    """A wrong-face-value code is really worth face_value × this (code and issuer agree)."""
    expiring_within_s: float = Field(default=3600.0, gt=0.0)
    valid_for_days: float = Field(default=365.0, gt=0.0)

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
    slow_delay_ms: float = Field(default=5000.0, ge=0.0)

    @model_validator(mode="after")
    def _shares(self) -> Refunds:
        total = self.refuse + self.rejected + self.slow + self.stuck + self.phantom
        if total > 1.0 + 1e-9:
            raise ValueError(f"refund policy shares sum to {total:g}; they must not exceed 1")
        return self


class Callbacks(_Strict):
    """Callback faults, drawn per event, and the retry schedule."""

    missing_rate: float = _rate()
    duplicate_rate: float = _rate()
    out_of_order_rate: float = _rate()
    """Share of events after which the previous (older) snapshot is delivered again."""
    delay_ms: LogNormal = LogNormal()
    retry_schedule_s: tuple[float, ...] = DEFAULT_RETRY_SCHEDULE_S
    timeout_s: float = Field(default=5.0, gt=0.0)

    @field_validator("retry_schedule_s")
    @classmethod
    def _schedule(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(step < 0 for step in value):
            raise ValueError("retry_schedule_s holds delays in seconds; none may be negative")
        return value


class RateLimit(_Strict):
    """A token bucket per supplier over every request; beyond it, 429 with Retry-After."""

    rate_per_s: float = Field(gt=0.0)
    burst: int = Field(default=10, ge=1)


class Capacity(_Strict):
    """Degradation with orders in flight (accepted, not yet final)."""

    max_orders_in_flight: int = Field(ge=1)
    """Beyond this, POST /v1/orders answers 503 overloaded (nothing is taken)."""
    latency_ms_per_order_in_flight: float = Field(default=0.0, ge=0.0)
    """Added to response and delivery latency per order in flight."""


class SupplierProfile(_Strict):
    """One simulated supplier: credentials, catalog, balance and planted faults."""

    api_key: str = Field(min_length=1)
    secret: str = Field(min_length=1)
    currency: str = Field(default="CNY", pattern=r"^[A-Z]{3}$")
    balance: Decimal = Field(ge=0)
    products: tuple[Product, ...] = Field(min_length=1)
    response_latency: LogNormal = LogNormal()
    delivery: Delivery = Delivery()
    outcomes: Outcomes = Outcomes()
    codes: Codes = Codes()
    refunds: Refunds = Refunds()
    callbacks: Callbacks = Callbacks()
    rate_limit: RateLimit | None = None
    capacity: Capacity | None = None
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


class Fleet(_Strict):
    """A whole simulated fleet: the issuer, a default seed, and the suppliers by name."""

    seed: int = 0
    issuer: Issuer
    suppliers: dict[str, SupplierProfile] = Field(min_length=1)

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
