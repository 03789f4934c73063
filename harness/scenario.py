"""The scenario file: what to test, against whom, and within which limits.

A scenario is YAML validated into the frozen pydantic models below. Every problem is a
:class:`~harness.errors.ScenarioError` (or :class:`~harness.errors.MissingEnvError`) with
one line that names the file, the line, the key, and what to write instead::

    scenarios/demo.yaml:12: suppliers[0].products[1].face_value: Input should be greater than 0

A minimal scenario::

    name: demo
    suppliers:
      - name: acme
        base_url: ${TRIALBENCH_SIM_URL}/suppliers/acme
        credentials: {api_key: "${ACME_API_KEY}", secret: "${ACME_SECRET}"}
        products:
          - {sku: steam-50, face_value: 50, sale_price: 52.50}
    trial:
      deadline_s: 1800
      spending_cap: 500

``${VAR}`` may appear inside any string value and is replaced from the environment
before validation. Credentials must be exactly one ``${VAR}`` reference: secrets never
appear in scenario files, and the resolved values are kept in :class:`EnvSecret`, which
shows only the reference in ``repr``, ``str``, ``model_dump`` and :meth:`Scenario.manifest_dict`.

Safety: a supplier or issuer URL whose host is not loopback (``127.0.0.1``, ``::1``,
``localhost``) is refused unless the scenario sets ``allow_non_loopback: true``.

Every number has a sane range (:class:`~harness.yamlfile.Bounded`), stated in the message
when a value falls outside it: money from 0.01 to 10,000,000, deadlines up to a day,
rates up to 5,000 orders a second. ``true`` is not a count and ``2.0`` is not a whole
number. The file itself is bounded too (size, nesting, aliases): see :mod:`harness.yamlfile`.

The JSON Schema (``trialbench schema``, shipped as ``scenarios/scenario.schema.json``)
describes the file as written, before ``${VAR}`` replacement.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import os
import re
from collections.abc import Mapping
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, Self, final
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    field_validator,
    model_validator,
)
from pydantic_core import core_schema

from harness.check.sla import SlaConfig
from harness.errors import MissingEnvError, ScenarioError
from harness.ranking_config import RankingConfig
from harness.yamlfile import (
    Bounded,
    Loc,
    LocatedValueError,
    format_loc,
    read_yaml,
    validate_located,
)

__all__ = [
    "KNOWN_DRIVERS",
    "AbortPlan",
    "AfterSalesPlan",
    "BrandAuthorisation",
    "BurstPhase",
    "BurstPlan",
    "CallbackPlan",
    "Credentials",
    "EnvSecret",
    "FeesConfig",
    "IssuerConfig",
    "PollPlan",
    "ProductConfig",
    "QualificationChecks",
    "Qualifications",
    "Scenario",
    "SupplierConfig",
    "TrialPlan",
    "load_scenario",
    "parse_scenario",
    "scenario_hash",
    "scenario_json_schema",
    "with_callback_url",
]

KNOWN_DRIVERS: tuple[str, ...] = ("reference", "gateway", "concat_md5", "sync_trade")
"""Driver names shipped with trialbench; the first is the default. A supplier may also name
a plugin (``trialbench.drivers`` entry point) or a dialect file (``*.yaml``): see
``trialbench dialects``."""

SLUG_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
_SLUG_RE = re.compile(SLUG_PATTERN)
_VAR_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
ENV_REF_PATTERN = rf"^\$\{{{_VAR_NAME}\}}$"
_ENV_REF_RE = re.compile(ENV_REF_PATTERN)
_REF_RE = re.compile(rf"\$\{{({_VAR_NAME})\}}")
_LOOPBACK_NAMES = frozenset({"localhost"})


# --------------------------------------------------------------------------- ${VAR}


class _Interpolated(str):
    """A string after ``${VAR}`` replacement that remembers what the file said.

    Its ``repr`` is the template, so pydantic's error reports never show resolved values.
    """

    template: str

    def __new__(cls, value: str, template: str) -> Self:
        self = super().__new__(cls, value)
        self.template = template
        return self

    def __repr__(self) -> str:
        return repr(self.template)


def _resolve(text: str, env: Mapping[str, str], where: str) -> str:
    """Replace every ``${VAR}`` in ``text``; ``where`` prefixes error messages."""
    out: list[str] = []
    pos = 0
    while (start := text.find("${", pos)) != -1:
        match = _REF_RE.match(text, start)
        if match is None:
            raise ScenarioError(
                f"{where}malformed reference at {text[start:start + 20]!r}; write ${{NAME}} "
                "with letters, digits and _ (only the ${VAR} form is supported)")
        name = match.group(1)
        if name not in env:
            raise MissingEnvError(f"{where}environment variable {name} is not set; "
                                  f"export {name}=... before loading the scenario")
        out.append(text[pos:start])
        out.append(env[name])
        pos = match.end()
    out.append(text[pos:])
    return "".join(out)


def _interpolate(data: Any, env: Mapping[str, str], source: str, lines: dict[Loc, int],
                 loc: Loc = ()) -> Any:
    """Return ``data`` with ``${VAR}`` replaced in every string value (not in keys)."""
    if isinstance(data, str):
        if "${" not in data:
            return data
        line = lines.get(loc)
        where = f"{source}:{line}: " if line is not None else f"{source}: "
        if loc:
            where += f"{format_loc(loc)}: "
        return _Interpolated(_resolve(data, env, where), data)
    if isinstance(data, dict):
        return {key: _interpolate(value, env, source, lines, (*loc, key))
                for key, value in data.items()}
    if isinstance(data, list):
        return [_interpolate(item, env, source, lines, (*loc, index))
                for index, item in enumerate(data)]
    return data


def _as_written(value: object) -> str:
    """How a value appeared in the file: the template if it was interpolated."""
    if isinstance(value, _Interpolated):
        if value.template == str(value):
            return repr(value.template)
        return f"{str(value)!r} (from {value.template!r})"
    return repr(value)


@final
class EnvSecret:
    """A credential read from the environment: the ``${VAR}`` reference is public, the value not.

    ``repr``, ``str`` and serialisation show only the reference; call
    :meth:`get_secret_value` where the value is really needed (signing a request).
    """

    __slots__ = ("_value", "ref")

    def __init__(self, ref: str, value: str) -> None:
        if not _ENV_REF_RE.match(ref):
            raise ValueError(f"not a ${{VAR}} reference: {ref!r}")
        self.ref = ref
        self._value = value

    @property
    def variable(self) -> str:
        """The environment variable's name, e.g. ``ACME_API_KEY``."""
        return self.ref[2:-1]

    def get_secret_value(self) -> str:
        """The resolved secret."""
        return self._value

    def __repr__(self) -> str:
        return f"EnvSecret({self.ref!r})"

    def __str__(self) -> str:
        return self.ref

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EnvSecret):
            return NotImplemented
        return self.ref == other.ref and hmac.compare_digest(
            self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(self.ref)

    @classmethod
    def _validate(cls, value: object) -> EnvSecret:
        if isinstance(value, EnvSecret):
            return value
        if isinstance(value, _Interpolated) and _ENV_REF_RE.match(value.template):
            if not value:
                raise ValueError(f"{value.template} is set but empty; export its value")
            return cls(value.template, str(value))
        if isinstance(value, str) and _ENV_REF_RE.match(value):
            raise ValueError(f"{value} was not resolved; load scenarios with load_scenario() "
                             "or parse_scenario(), which read the environment")
        raise ValueError("a literal value is not allowed; write ${ENV_VAR}: "
                         "secrets never appear in scenario files")

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler
                                     ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls._validate,
            json_schema_input_schema=core_schema.str_schema(pattern=ENV_REF_PATTERN),
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda secret: secret.ref, when_used="always"),
        )


# --------------------------------------------------------------------------- field types


def _check_slug(value: str) -> str:
    if not _SLUG_RE.match(value):
        raise ValueError(f"{value!r} is not a slug; write lowercase letters, digits, - and _, "
                         "starting with a letter or digit (e.g. acme-cards)")
    return value


def _check_url(value: object) -> object:
    """Accept an http(s) URL with a host and no credentials, query or fragment."""
    if not isinstance(value, str):
        return value  # pydantic reports the wrong type
    shown = _as_written(value)
    parts = urlsplit(str(value))
    fix = "write e.g. http://127.0.0.1:8080/suppliers/acme"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{shown} is not an http:// or https:// URL with a host; {fix}")
    try:
        parts.port  # noqa: B018 (urlsplit checks the port lazily)
    except ValueError as exc:
        raise ValueError(f"{shown} has an invalid port; {fix}") from exc
    if parts.username is not None or parts.password is not None:
        raise ValueError("user:password@ is not allowed in a URL; put credentials in "
                         "credentials: as ${ENV_VAR} references")
    if parts.query or parts.fragment:
        raise ValueError(f"{shown} has a query or fragment; write the base URL only")
    return str(value).rstrip("/")


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


MAX_MONEY = Decimal(10_000_000)
"""Largest sane amount of money anywhere in a scenario (a price, a fee, a cap)."""
MAX_RUN_S = 86_400
"""Longest sane deadline or follow-up, seconds (a day)."""
MAX_BODY_BYTES = 64 * 1_048_576
"""Largest sane cap on one response body, bytes (64 MiB)."""

Money = Annotated[Decimal, Bounded(Decimal("0.01"), MAX_MONEY, "amount", places=2)]
Fee = Annotated[Decimal, Bounded(Decimal(0), MAX_MONEY, "amount", places=2)]
Percent = Annotated[Decimal, Bounded(Decimal(0), Decimal(100), "percentage")]
Weight = Annotated[float, Bounded(0, 1_000_000, "weight", low_open=True)]
Seconds = Annotated[float, Bounded(0, MAX_RUN_S, "duration in seconds", low_open=True)]
Timeout = Annotated[float, Bounded(0, 120, "timeout in seconds", low_open=True)]
Window = Annotated[float, Bounded(0, 3600, "window in seconds", low_open=True)]
Rate = Annotated[float, Bounded(0, 5000, "rate (orders per second)")]
BodyBytes = Annotated[int, Bounded(1024, MAX_BODY_BYTES, "body cap in bytes")]
Slug = Annotated[str, AfterValidator(_check_slug),
                 Field(json_schema_extra={"pattern": SLUG_PATTERN})]
Url = Annotated[str, BeforeValidator(_check_url)]

_CONFIG = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


# --------------------------------------------------------------------------- models


class Credentials(BaseModel):
    """A supplier's API credentials, each a ``${ENV_VAR}`` reference."""

    model_config = _CONFIG

    api_key: EnvSecret
    """The merchant's API key at this supplier: write ``${ENV_VAR}``."""
    secret: EnvSecret
    """The signing secret: write ``${ENV_VAR}``."""


class ProductConfig(BaseModel):
    """One product a supplier sells, as the merchant expects it."""

    model_config = _CONFIG

    sku: str = Field(min_length=1)
    """The supplier's product id."""
    kind: Literal["card", "direct"] = "card"
    """``card``: codes are delivered; ``direct``: an account is topped up."""
    face_value: Money
    """What a code or top-up is worth (money, two decimal places)."""
    sale_price: Money
    """What the merchant sells it for, for the margin and cost rate (money)."""
    code_pattern: str | None = None
    """Regular expression every genuine serial matches, if the supplier publishes none."""
    account: str | None = None
    """The account to top up: required for ``direct``, must be null for ``card``."""

    @field_validator("code_pattern")
    @classmethod
    def _pattern_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression ({exc}); write a Python "
                                 r"regex such as ^[A-Z0-9]{16}$") from exc
        return value

    @model_validator(mode="after")
    def _account_matches_kind(self) -> Self:
        if self.kind == "direct":
            if not self.account:
                raise LocatedValueError("a direct product needs the account to top up; "
                                        "add account: <account id>", ("account",))
            if self.code_pattern is not None:
                raise LocatedValueError("a direct product delivers no codes; remove "
                                        "code_pattern", ("code_pattern",))
        elif self.account is not None:
            raise LocatedValueError("a card product has no account; remove account or set "
                                    "kind: direct", ("account",))
        return self


class FeesConfig(BaseModel):
    """Published fees, for the comprehensive cost rate; hidden fees are measured."""

    model_config = _CONFIG

    platform_pct: Percent = Decimal(0)
    """Platform fee, percent of the sale price (0–100)."""
    fixed_per_order: Fee = Decimal(0)
    """Fixed fee per order (money)."""
    topup_pct: Percent = Decimal(0)
    """Fee on topping up the balance at the supplier, percent (0–100)."""
    withdrawal_pct: Percent = Decimal(0)
    """Fee on withdrawing the balance from the supplier, percent (0–100)."""


def _check_display_name(value: str) -> str:
    if not value.strip() or any(ord(c) < 32 for c in value):
        raise ValueError("write the name as merchants know it, on one line, e.g. 星辰卡盟")
    return value.strip()


class BrandAuthorisation(BaseModel):
    """A brand's authorisation for the supplier to sell its codes, as the merchant has it
    on file."""

    model_config = _CONFIG

    brand: str = Field(min_length=1, max_length=100)
    """The brand that authorises, as it signs (any script), e.g. ``Steam`` or ``腾讯``."""
    products: tuple[str, ...] = Field(min_length=1)
    """The skus the authorisation covers (the supplier's product ids)."""
    expires: date
    """Last day the authorisation is valid (YYYY-MM-DD)."""


class Qualifications(BaseModel):
    """The paperwork a merchant collects about a supplier; every field is optional."""

    model_config = _CONFIG

    registration_number: str | None = Field(default=None, min_length=1, max_length=64)
    """Business registration number (e.g. the unified social credit code)."""
    icp_filing: str | None = Field(default=None, min_length=1, max_length=64)
    """ICP filing number of the supplier's site, e.g. ``京ICP备12345678号``."""
    authorisations: tuple[BrandAuthorisation, ...] = ()
    """Brand authorisations, each with the products it covers and its expiry date. A
    product being sold that none covers is flagged (``missing_authorisation``)."""
    platform_grade: Literal["gold", "silver"] | None = None
    """The trading platform's grade of this supplier, if it has one."""


QualificationKind = Literal["missing_authorisation", "authorisation_expired",
                            "authorisation_expiring", "authorisation_lapses_before_peak"]


class QualificationChecks(BaseModel):
    """How the suppliers' qualifications are checked against the products being sold."""

    model_config = _CONFIG

    expiry_window_days: Annotated[int, Bounded(0, 3650, "window in days")] = 60
    """Flag an authorisation that expires within this many days of the run (0–3650)."""
    gate: tuple[QualificationKind, ...] = ()
    """The qualification findings that gate a supplier (rank it below every clean one,
    tier "gated"): any of ``missing_authorisation``, ``authorisation_expired``,
    ``authorisation_expiring``, ``authorisation_lapses_before_peak``. Default: none gate;
    every finding is shown in the verdict."""


class SupplierConfig(BaseModel):
    """A supplier under test."""

    model_config = _CONFIG

    name: Slug
    """Unique name in this scenario: lowercase letters, digits, - and _ (used in files and
    ids); ``display_name`` is how reports write it."""
    display_name: Annotated[str, AfterValidator(_check_display_name),
                            Field(min_length=1, max_length=64)] | None = None
    """The name as merchants write it, in any script, e.g. ``星辰卡盟``; reports and the
    terminal show it (default: ``name``)."""
    driver: str = KNOWN_DRIVERS[0]
    """The API dialect: ``reference``, a shipped dialect (``gateway``, ``concat_md5``,
    ``sync_trade``), an installed plugin, or the path of a dialect file (``.yaml``);
    ``trialbench dialects`` lists them."""
    base_url: Url
    """http(s) URL of the supplier's API, e.g. ``${TRIALBENCH_SIM_URL}/suppliers/acme``."""
    credentials: Credentials
    """API key and signing secret, as ``${ENV_VAR}`` references."""
    products: tuple[ProductConfig, ...] = Field(min_length=1)
    """The products to test (at least one, unique skus)."""
    fees: FeesConfig = FeesConfig()
    """Published fees (default: none)."""
    qualifications: Qualifications = Qualifications()
    """Registration, ICP filing, brand authorisations and platform grade (all optional)."""

    @field_validator("driver")
    @classmethod
    def _known_driver(cls, value: str) -> str:
        from harness.drivers.dialect import known_driver

        problem = known_driver(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _unique_skus(self) -> Self:
        seen: set[str] = set()
        for index, product in enumerate(self.products):
            if product.sku in seen:
                raise LocatedValueError(f"sku {product.sku!r} is listed twice; list each "
                                        "product once", ("products", index, "sku"))
            seen.add(product.sku)
        return self

    def product(self, sku: str) -> ProductConfig:
        """The product with this sku; ``KeyError`` if the supplier does not offer it."""
        for product in self.products:
            if product.sku == sku:
                return product
        raise KeyError(sku)


class IssuerConfig(BaseModel):
    """Where delivered codes can be checked and redeemed."""

    model_config = _CONFIG

    base_url: Url
    """http(s) URL of the issuer's API."""
    api_key: EnvSecret
    """The issuer API key: write ``${ENV_VAR}``."""


class PollPlan(BaseModel):
    """How to poll an order until it is final: exponential backoff with a ceiling."""

    model_config = _CONFIG

    initial_interval_s: Window = 0.2
    """Wait before the first poll, seconds (at most an hour)."""
    max_interval_s: Window = 2.0
    """Longest wait between polls, seconds (at most an hour)."""
    backoff_factor: Annotated[float, Bounded(1, 10, "backoff factor")] = 1.5
    """Each wait is the previous one times this (1 = fixed interval; at most 10)."""

    @model_validator(mode="after")
    def _ceiling_above_start(self) -> Self:
        if self.max_interval_s < self.initial_interval_s:
            raise LocatedValueError(
                f"max_interval_s ({self.max_interval_s}) is below initial_interval_s "
                f"({self.initial_interval_s}); raise it", ("max_interval_s",))
        return self


class RetryPlan(BaseModel):
    """How much the harness may ask again, so it never multiplies the load it measures.

    Re-POSTs (the same client order id, after a 429) and GETs that resolve an unknown
    outcome draw on a per-supplier budget of ``reserve`` + ``ratio`` × orders placed
    (client-side retry throttling); polls of orders the supplier holds are not drawn
    from it but back off.
    """

    model_config = _CONFIG

    ratio: Annotated[float, Bounded(0, 1, "ratio")] = 0.4
    """Extra requests allowed per order placed, on average (0–1; 0.4 = 40%): with the
    reserve, at most about 1.5 requests (writes and resolution GETs) per order reach a
    supplier that refuses everything with 5xx."""
    reserve: Annotated[int, Bounded(0, 1000, "count")] = 10
    """Extra requests allowed before any order has been placed."""
    max_reposts: Annotated[int, Bounded(0, 10, "count")] = 2
    """Re-POSTs of one order after 429 (same id, after Retry-After), at most."""
    max_resolve_gets: Annotated[int, Bounded(1, 20, "count")] = 3
    """GETs asking about one order after an unknown outcome, at most."""


class CallbackPlan(BaseModel):
    """Where suppliers send callbacks: the receiver's bind address and the public URL
    suppliers are given are set apart (a tunnel or a reverse proxy in between)."""

    model_config = _CONFIG

    public_url: Url | None = None
    """The URL suppliers can reach that forwards to the receiver, e.g.
    ``https://cb.example.com/trialbench``; ``/callbacks/<supplier>`` is appended. Default:
    the receiver's own loopback address (only a supplier on this machine reaches it).
    ``--callback-url`` overrides it."""
    bind: str = "127.0.0.1"
    """Address the receiver binds to (loopback unless told otherwise)."""

    @field_validator("bind")
    @classmethod
    def _address(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not an IP address; write e.g. 127.0.0.1") from exc
        return value


class AfterSalesPlan(BaseModel):
    """Which delivered orders get a refund request, and how long refunds are followed."""

    model_config = _CONFIG

    refund_unused: Annotated[int, Bounded(0, 1000, "count")] = 1
    """Delivered orders per supplier that get an ``unused`` refund request (0–1000)."""
    refund_bad_codes: bool = True
    """Request a refund, with the matching reason, for every order with a bad code."""
    refund_follow_s: Seconds = 30.0
    """How long to follow a refund to a final state, seconds (at most a day)."""


class TrialPlan(BaseModel):
    """A small scripted batch of orders at every supplier.

    Product mix rule: orders at a supplier are drawn from ``product_mix`` restricted to
    the skus that supplier offers, with the weights renormalised (``TrialPlan.weights_for``);
    without a mix, every product of the supplier is equally likely. So every sku in the
    mix must be offered by at least one supplier, and every supplier must offer at least
    one sku of the mix.
    """

    model_config = _CONFIG

    orders_per_supplier: Annotated[int, Bounded(1, 1000, "count")] = 15
    """Orders placed at each supplier (1–1000)."""
    product_mix: dict[str, Weight] | None = None
    """sku → weight (above 0, at most 1000000); default: uniform over each supplier's
    products."""
    quantity: Annotated[int, Bounded(1, 100, "count")] = 1
    """Codes (or top-ups) per order (1–100)."""
    concurrency: Annotated[int, Bounded(1, 256, "count")] = 4
    """Orders in flight at once per supplier (1–256)."""
    deadline_s: Seconds
    """Delivery SLA, seconds from placing an order (at most a day); later is an SLA miss."""
    delivery: Literal["poll", "callback", "both"] = "both"
    """How to learn of delivery: polling with backoff, callbacks, or both."""
    poll: PollPlan = PollPlan()
    """Polling backoff."""
    request_timeout_s: Timeout = 5.0
    """Timeout of one HTTP request, seconds (at most 120)."""
    max_body_bytes: BodyBytes = 1_048_576
    """Most bytes read of one response body (1 KiB–64 MiB); a longer body is a protocol
    error on that request."""
    unknown_outcome_window_s: Window = 10.0
    """The supplier's not-found window: a 404 after it proves an order with an unknown
    outcome was not taken, seconds (at most an hour)."""
    retries: RetryPlan = RetryPlan(reserve=60)
    """The retry budget and per-order limits (a trial's small batch gets a reserve of 60
    extra requests per supplier, so a flaky supplier's orders are all resolved)."""
    after_sales: AfterSalesPlan = AfterSalesPlan()
    """Refund requests and how long to follow them."""
    callback: CallbackPlan = CallbackPlan()
    """The callback receiver's bind address and the public URL given to suppliers."""
    redeem_sample: Annotated[int, Bounded(0, 100_000, "count")] = 1
    """Codes per supplier redeemed at the issuer as a sample (none without an issuer)."""
    expiry_margin_days: Annotated[int, Bounded(0, 3650, "number of days")] = 30
    """Codes expiring sooner than this many days are flagged (0–3650)."""
    spending_cap: Money
    """Most the whole run may spend, across all suppliers (money)."""
    keep_plain_codes: bool = False
    """Keep plain codes in one owner-only file (otherwise only keyed hashes and masks)."""

    @model_validator(mode="after")
    def _samples_fit(self) -> Self:
        if self.after_sales.refund_unused > self.orders_per_supplier:
            raise LocatedValueError(
                f"refund_unused ({self.after_sales.refund_unused}) exceeds "
                f"orders_per_supplier ({self.orders_per_supplier}); lower it",
                ("after_sales", "refund_unused"))
        codes = self.orders_per_supplier * self.quantity
        if self.redeem_sample > codes:
            raise LocatedValueError(
                f"redeem_sample ({self.redeem_sample}) exceeds the codes ordered per "
                f"supplier ({codes}); lower it", ("redeem_sample",))
        return self

    def weights_for(self, supplier: SupplierConfig) -> dict[str, float]:
        """The sku → probability this plan draws orders at ``supplier`` with (sums to 1)."""
        offered = [product.sku for product in supplier.products]
        if self.product_mix is None:
            return {sku: 1 / len(offered) for sku in offered}
        weights = {sku: self.product_mix[sku] for sku in offered if sku in self.product_mix}
        total = sum(weights.values())
        return {sku: weight / total for sku, weight in weights.items()}


class BurstPhase(BaseModel):
    """One phase of a burst, in the manner of Artillery and k6 (arrivals per second).

    The kind follows from the keys when ``kind`` is left out: ``rate_per_s`` alone is
    ``constant``; ``to_rate_per_s`` is a ``ramp`` (from ``from_rate_per_s``, or from the
    rate the previous phase ended at); no rate at all is a ``hold`` of the previous
    phase's end rate. A ``spike`` is a constant phase that jumps straight to
    ``rate_per_s`` (written as its own kind so reports can label it)::

        phases:
          - {duration_s: 10, rate_per_s: 20}                        # constant
          - {duration_s: 20, to_rate_per_s: 150}                    # ramp 20 -> 150
          - {duration_s: 5, rate_per_s: 300, kind: spike}           # spike
          - {duration_s: 15, to_rate_per_s: 150}                    # back down
          - {duration_s: 10}                                        # hold at 150
    """

    model_config = _CONFIG

    name: str = ""
    """Label shown in the live view and written to the events (default: the kind)."""
    kind: Literal["constant", "ramp", "spike", "hold"] | None = None
    """What the phase does; inferred from the rate keys when left out."""
    duration_s: Window
    """How long the phase lasts, seconds (at most an hour)."""
    rate_per_s: Rate | None = None
    """Constant arrival rate, orders per second (constant and spike)."""
    from_rate_per_s: Rate | None = None
    """Rate at the start of a ramp, orders per second (default: the previous end rate)."""
    to_rate_per_s: Rate | None = None
    """Rate at the end of a ramp, orders per second."""

    @model_validator(mode="after")
    def _keys_match_kind(self) -> Self:
        kind = self.resolved_kind
        if kind in ("constant", "spike"):
            if self.rate_per_s is None:
                raise LocatedValueError(f"a {kind} phase needs rate_per_s: <orders per second>",
                                        ("rate_per_s",))
            for key in ("from_rate_per_s", "to_rate_per_s"):
                if getattr(self, key) is not None:
                    raise LocatedValueError(f"a {kind} phase has one rate; remove {key} (or "
                                            "write kind: ramp)", (key,))
        elif kind == "ramp":
            if self.to_rate_per_s is None:
                raise LocatedValueError("a ramp needs to_rate_per_s: <orders per second>",
                                        ("to_rate_per_s",))
            if self.rate_per_s is not None:
                raise LocatedValueError("a ramp goes from_rate_per_s -> to_rate_per_s; remove "
                                        "rate_per_s", ("rate_per_s",))
        else:
            for key in ("rate_per_s", "from_rate_per_s", "to_rate_per_s"):
                if getattr(self, key) is not None:
                    raise LocatedValueError(f"a hold keeps the previous rate; remove {key} (or "
                                            "write kind: constant)", (key,))
        return self

    @property
    def resolved_kind(self) -> str:
        """``kind`` as written, or inferred from the rate keys."""
        if self.kind is not None:
            return self.kind
        if self.to_rate_per_s is not None or self.from_rate_per_s is not None:
            return "ramp"
        return "constant" if self.rate_per_s is not None else "hold"


class AbortPlan(BaseModel):
    """When to stop a burst early (everything recorded so far is kept).

    Judged every second over the last ``window_s`` seconds, across all suppliers, once
    the window holds at least ``min_orders`` orders. Leave a condition out to disable it.
    """

    model_config = _CONFIG

    error_rate: Annotated[float, Bounded(0, 1, "share", low_open=True)] | None = None
    """Stop when this share of the window's orders had a failed POST (0–1)."""
    latency_ms: Annotated[float, Bounded(0, 600_000, "latency in ms", low_open=True)] \
        | None = None
    """Stop when the acceptance latency percentile (from intended start) exceeds this, ms
    (at most 600000)."""
    latency_percentile: Annotated[float, Bounded(0, 99.99, "percentile", low_open=True)] = 95
    """Which percentile ``latency_ms`` applies to (above 0, at most 99.99)."""
    spend: Money | None = None
    """Stop when the money committed to orders reaches this (money); below spending_cap."""
    window_s: Annotated[float, Bounded(0, 300, "window in seconds", low_open=True)] = 5
    """The sliding window the rates and the percentile are judged over, seconds."""
    min_orders: Annotated[int, Bounded(1, 1_000_000, "count")] = 20
    """Do not judge a window with fewer orders than this (1–1000000)."""


class BurstPlan(BaseModel):
    """A peak-load burst: orders arrive on a schedule (an open model) whether or not the
    suppliers keep up; latency is measured from each order's intended start.

    Arrivals are spread evenly within each phase (deterministic); each arrival goes to a
    supplier by smooth weighted round robin over ``weights`` and to a product drawn from
    ``product_mix`` (the trial's rule) with the scenario's seed, so every worker computes
    the same schedule and takes its own share.
    """

    model_config = _CONFIG

    phases: tuple[BurstPhase, ...] = Field(min_length=1)
    """The arrival-rate phases, in order (at least one)."""
    weights: dict[str, Annotated[float, Bounded(0, 1_000_000, "weight")]] | None = None
    """supplier name -> share of the arrivals (0–1000000; default: equal; unnamed: 0)."""
    product_mix: dict[str, Weight] | None = None
    """sku -> weight (above 0, at most 1000000), restricted to each supplier's skus;
    default: uniform."""
    quantity: Annotated[int, Bounded(1, 100, "count")] = 1
    """Codes (or top-ups) per order (1–100)."""
    deadline_s: Seconds
    """Delivery SLA, seconds from an order's intended start (at most a day); later is an
    SLA miss."""
    follow_s: Seconds | None = None
    """Follow each order this long after its intended start, seconds (at most a day;
    default: 2 × deadline_s)."""
    delivery: Literal["poll", "callback", "both"] = "both"
    """How to learn of delivery: polling with backoff, callbacks (a receiver per worker),
    or both."""
    poll: PollPlan = PollPlan()
    """Polling backoff."""
    request_timeout_s: Timeout = 5.0
    """Timeout of one HTTP request, seconds (at most 120)."""
    max_body_bytes: BodyBytes = 1_048_576
    """Most bytes read of one response body (1 KiB–64 MiB); a longer body is a protocol
    error on that request."""
    unknown_outcome_window_s: Window = 5.0
    """The supplier's not-found window: a 404 after it proves an order with an unknown
    outcome was not taken, seconds (at most an hour)."""
    retries: RetryPlan = RetryPlan()
    """The retry budget and per-order limits."""
    callback: CallbackPlan = CallbackPlan()
    """The callback receivers' bind address and the public URL given to suppliers (each
    worker's receiver must then be reachable behind it)."""
    spending_cap: Money
    """Most the whole burst may spend, across all suppliers and workers (money); each of N
    workers may commit at most cap / N."""
    abort: AbortPlan = AbortPlan()
    """Conditions that stop the burst early."""
    workers: Annotated[int, Bounded(1, 64, "count")] = 1
    """Local worker processes (1: everything in one process); ``--workers`` overrides."""
    expected_latency_ms: Annotated[float, Bounded(0, 60_000, "latency in ms",
                                                  low_open=True)] = 250
    """Expected time to place one order, ms (at most 60000); sizes the concurrency (see
    ``headroom``)."""
    headroom: Annotated[float, Bounded(1, 100, "headroom factor")] = 3.0
    """Concurrency = rate × (expected_latency × headroom + stall_cover_s) (+1 per supplier
    and worker), at most ``max_concurrency``."""
    max_concurrency: Annotated[int, Bounded(1, 20_000, "count")] = 1000
    """Most orders being placed at once across all workers."""
    stall_cover_s: Annotated[float, Bounded(0, 120, "duration in seconds")] = 2.0
    """Concurrency also covers a supplier that stops answering for this long, seconds
    (0–120): the orders due meanwhile still go out on time, and their latency from the
    intended start shows the whole stall. Counted up to ``request_timeout_s`` (a POST holds
    its slot no longer); 0 sizes for ``expected_latency_ms`` alone (orders due during a
    stall then start late: ``schedule_slip``)."""
    slip_warning_ms: Annotated[float, Bounded(0, 60_000, "delay in ms", low_open=True)] = 100
    """An order sent later than this after its intended start gets a schedule_slip event,
    ms (at most 60000)."""
    max_orders: Annotated[int, Bounded(1, 1_000_000, "count")] = 100_000
    """Safety bound on the schedule's size; a schedule with more arrivals is refused."""

    @model_validator(mode="after")
    def _bounded(self) -> Self:
        rate = 0.0
        total = 0.0
        for index, phase in enumerate(self.phases):
            kind = phase.resolved_kind
            if kind == "hold" and index == 0:
                raise LocatedValueError("the first phase cannot hold: there is no previous "
                                        "rate; write rate_per_s", ("phases", 0))
            start = rate if kind == "hold" else (
                phase.rate_per_s if kind != "ramp" else
                (phase.from_rate_per_s if phase.from_rate_per_s is not None else rate))
            end = rate if kind == "hold" else (
                phase.to_rate_per_s if kind == "ramp" else phase.rate_per_s)
            assert start is not None and end is not None
            total += (start + end) / 2 * phase.duration_s
            rate = end
        if total > self.max_orders:
            raise LocatedValueError(f"the phases schedule about {total:,.0f} orders, more than "
                                    f"max_orders ({self.max_orders:,}); lower the rates or "
                                    "durations, or raise max_orders", ("phases",))
        if total < 1:
            raise LocatedValueError("the phases schedule no order at all; give a rate above 0",
                                    ("phases",))
        if self.abort.spend is not None and self.abort.spend > self.spending_cap:
            raise LocatedValueError(f"abort.spend ({self.abort.spend}) is above spending_cap "
                                    f"({self.spending_cap}); the cap stops orders first, lower "
                                    "it", ("abort", "spend"))
        return self

    @property
    def follow_for_s(self) -> float:
        """How long each order is followed after its intended start, seconds."""
        return self.follow_s if self.follow_s is not None else 2 * self.deadline_s

    def weights_for(self, supplier: SupplierConfig) -> dict[str, float]:
        """The sku -> probability this plan draws orders at ``supplier`` with (sums to 1)."""
        offered = [product.sku for product in supplier.products]
        if self.product_mix is None:
            return {sku: 1 / len(offered) for sku in offered}
        weights = {sku: self.product_mix[sku] for sku in offered if sku in self.product_mix}
        total = sum(weights.values())
        return {sku: weight / total for sku, weight in weights.items()}


class Scenario(BaseModel):
    """A whole scenario file: suppliers, optional issuer, and the plans to run."""

    model_config = _CONFIG

    name: str = Field(min_length=1)
    """Name of the scenario, shown in reports."""
    description: str = ""
    """Free text."""
    seed: Annotated[int, Bounded(0, 2**63 - 1, "seed")] = 0
    """Random seed for everything the harness draws (product mix, samples); 0–2**63-1."""
    allow_non_loopback: bool = False
    """Allow supplier or issuer URLs off loopback: real orders that cost real money."""
    suppliers: tuple[SupplierConfig, ...] = Field(min_length=1)
    """The suppliers under test (at least one, unique names)."""
    issuer: IssuerConfig | None = None
    """Where codes can be checked (optional)."""
    trial: TrialPlan | None = None
    """The trial batch (optional)."""
    burst: BurstPlan | None = None
    """The peak-load burst (optional): phases of arrival rates, run on Locust."""
    ranking: RankingConfig | None = None
    """How suppliers are ranked: weights, value-function anchors, gates, tier thresholds
    (default: ``harness.ranking_config.RankingConfig()``)."""
    sla: SlaConfig | None = None
    """Thresholds for CI (``trialbench check``): k6-like ``metric op number`` for every
    supplier (``all``) and per supplier (``suppliers``); see ``harness.check.sla``."""
    peak_date: date | None = None
    """The planned peak (YYYY-MM-DD), e.g. the holiday sale: an authorisation that expires
    before it is flagged (``authorisation_lapses_before_peak``)."""
    qualification_checks: QualificationChecks = QualificationChecks()
    """The expiry window for brand authorisations and which qualification findings gate."""

    @model_validator(mode="after")
    def _cross_checks(self) -> Self:
        names: set[str] = set()
        for index, supplier in enumerate(self.suppliers):
            if supplier.name in names:
                raise LocatedValueError(f"supplier name {supplier.name!r} is used twice; "
                                        "give each supplier its own name",
                                        ("suppliers", index, "name"))
            names.add(supplier.name)
        if not self.allow_non_loopback:
            targets: list[tuple[str, Loc]] = [
                (s.base_url, ("suppliers", i, "base_url")) for i, s in enumerate(self.suppliers)]
            if self.issuer is not None:
                targets.append((self.issuer.base_url, ("issuer", "base_url")))
            for url, loc in targets:
                if not _is_loopback(url):
                    raise LocatedValueError(
                        f"{urlsplit(url).hostname} is not loopback (127.0.0.1, ::1, "
                        "localhost); set allow_non_loopback: true at the top of the scenario "
                        "to send real orders there, or use a loopback URL", loc)
        if self.trial is not None:
            self._check_mix(self.trial)
            if self.issuer is None and self.trial.redeem_sample > 0 \
                    and "redeem_sample" in self.trial.model_fields_set:
                raise LocatedValueError("redeeming needs an issuer; add an issuer: section "
                                        "or set redeem_sample: 0", ("trial", "redeem_sample"))
        if self.burst is not None:
            self._check_burst(self.burst)
        if self.sla is not None:
            self.sla.check_suppliers({s.name for s in self.suppliers}, ("sla",))
        return self

    def _check_burst(self, burst: BurstPlan) -> None:
        names = {s.name for s in self.suppliers}
        for name in burst.weights or {}:
            if name not in names:
                raise LocatedValueError(
                    f"supplier {name!r} is not in suppliers:; write one of: "
                    + ", ".join(sorted(names)), ("burst", "weights", name))
        if burst.weights is not None and not any(burst.weights.values()):
            raise LocatedValueError("every weight is 0; give at least one supplier a weight "
                                    "above 0", ("burst", "weights"))
        self._check_mix(burst, "burst")

    def _check_mix(self, trial: TrialPlan | BurstPlan, section: str = "trial") -> None:
        if trial.product_mix is None:
            return
        offered = {p.sku for s in self.suppliers for p in s.products}
        for sku in trial.product_mix:
            if sku not in offered:
                raise LocatedValueError(
                    f"sku {sku!r} is not offered by any supplier; remove it or add it to a "
                    "supplier's products", (section, "product_mix", sku))
        for supplier in self.suppliers:
            if not any(p.sku in trial.product_mix for p in supplier.products):
                skus = ", ".join(p.sku for p in supplier.products)
                raise LocatedValueError(
                    f"no sku in the mix is offered by supplier {supplier.name!r}; add one of "
                    f"its skus ({skus})", (section, "product_mix"))

    def supplier(self, name: str) -> SupplierConfig:
        """The supplier with this name; ``KeyError`` if there is none."""
        for supplier in self.suppliers:
            if supplier.name == name:
                return supplier
        raise KeyError(name)

    def manifest_dict(self) -> dict[str, Any]:
        """JSON-able dict for the run manifest: money as strings, secrets as ``${VAR}``."""
        return self.model_dump(mode="json")


# --------------------------------------------------------------------------- loading


def parse_scenario(data: Any, env: Mapping[str, str] | None = None, *,
                   source: str = "<scenario>", lines: dict[Loc, int] | None = None
                   ) -> Scenario:
    """Validate already-parsed scenario data (e.g. a dict built in a notebook).

    ``${VAR}`` references are resolved from ``env`` (default ``os.environ``); ``source``
    and ``lines`` (key path → line, from :func:`harness.yamlfile.read_yaml`) locate errors.
    """
    lines = {} if lines is None else lines
    resolved = _interpolate(data, os.environ if env is None else env, source, lines)
    return validate_located(resolved, lines, source, Scenario, error=ScenarioError)


def load_scenario(path: Path, env: Mapping[str, str] | None = None) -> Scenario:
    """Read and validate a scenario file, resolving ``${VAR}`` from ``env`` (default os.environ).

    Raises :class:`ScenarioError` or :class:`MissingEnvError`, whose message names the
    file, the line, the key, and the fix.
    """
    data, lines = read_yaml(path, error=ScenarioError)
    return parse_scenario(data, env, source=str(path), lines=lines)


def with_callback_url(scenario: Scenario, url: str) -> Scenario:
    """``scenario`` with ``callback.public_url`` of its plans set to ``url``
    (``--callback-url``); a bad URL is a :class:`ScenarioError` naming the option."""
    from pydantic import ValidationError

    update: dict[str, Any] = {}
    for section in ("trial", "burst"):
        plan = getattr(scenario, section)
        if plan is None:
            continue
        try:
            callback = CallbackPlan.model_validate({"public_url": url,
                                                    "bind": plan.callback.bind})
        except ValidationError as exc:
            raise ScenarioError(f"--callback-url: {exc.errors()[0]['msg']}") from None
        update[section] = plan.model_copy(update={"callback": callback})
    return scenario.model_copy(update=update)


def scenario_hash(path: Path) -> str:
    """Lowercase hex SHA-256 of the scenario file's bytes, for the run manifest."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise ScenarioError(f"cannot read: {exc.strerror}; check the path",
                            path=str(path)) from exc


def scenario_json_schema() -> str:
    """The JSON Schema of a scenario file, as the text ``trialbench schema`` writes."""
    from harness.schemas import DRAFT, markdown_descriptions

    schema = {"$schema": DRAFT, **Scenario.model_json_schema()}
    return json.dumps(markdown_descriptions(schema), indent=2, ensure_ascii=False) + "\n"
