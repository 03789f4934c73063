"""Declarative supplier dialects: a YAML file says how a supplier speaks, no code.

A dialect file (see the three shipped in ``harness/drivers/dialects/`` and
``trialbench dialects --schema``) names:

- the requests: per operation (``catalog``, ``balance``, ``place_order``, ``get_order``)
  the method, the path below the supplier's base URL, form, JSON or query parameters;
  values are templates (``"{client_order_id}"``); a mapping value is sent as a JSON
  *string* (the gateway style's ``biz_content``);
- where values live in the answer: dotted paths (``result.cards``), where a segment
  ending ``@json`` is a JSON string to decode first (``result@json.order_state``);
- the envelope's success predicate, and which error codes or messages mean out of stock,
  insufficient balance, unknown product, bad signature, a duplicate request ...;
- a map from the supplier's states (numbers or words) to canonical states;
- time format and zone, money as numbers or strings;
- a signer, a decryptor and an authenticator, by name (:mod:`harness.drivers.signers`);
- its idempotency: what a repeated request id does (``replay``: ``original``, ``error``,
  ``accepted`` or ``none``) and whether an order can be looked up by the merchant's id
  (``lookup: client_order_id``) or only by the supplier's own number;
- its callback, if it has one: encoding, fields, signature and acknowledgement.

:func:`load_dialect` validates a file with the located one-line errors of scenarios.
:class:`DialectDriver` speaks a dialect through the driver interface of
:mod:`harness.drivers.base`: it builds requests and parses answers, never sends.
Whatever a supplier answers is data: every parser returns a :class:`Failure` for an
answer it cannot read (HTML with status 200, wrong types, money that is not finite,
negative or huge), never raises.

Template variables: ``api_key``, ``client_order_id``, ``request_id`` (the client order id
fitted to the dialect's id rules), ``sku``, ``quantity``, ``account``, ``callback_url``,
``supplier_order_id``, ``now`` (the dialect's time format), ``now_s``, ``now_ms``;
``secret`` only in signature parts. A parameter whose template is one variable keeps the
variable's type (``quantity`` stays a number in JSON) and is left out when it is null.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from urllib.parse import parse_qsl, urlencode, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from harness import protocol
from harness.drivers.base import (
    DUPLICATE_REQUEST,
    Balance,
    CallbackEvent,
    Code,
    Credentials,
    Failure,
    HttpRequest,
    HttpResponse,
    Order,
    OrderRequest,
    OrderState,
    Product,
    Refund,
    Result,
)
from harness.drivers.signers import (
    DECRYPTORS,
    SIGNERS,
    DecryptError,
    OAuth2ClientCredentials,
    SignInput,
    md5_hex,
)
from harness.errors import ConfigError
from harness.yamlfile import LocatedValueError, load_model

# ---------------------------------------------------------------------------- the model

ERROR_KINDS: dict[str, int] = {
    "bad_signature": 401,
    "unknown_merchant": 401,
    "invalid_request": 400,
    "insufficient_balance": 402,
    "unknown_product": 404,
    "not_found": 404,
    "out_of_stock": 409,
    "duplicate_request": 409,
    "rate_limited": 429,
    "server_busy": 503,
}
"""What a supplier's error may mean, and the HTTP status the lifecycle reads it as: 4xx is
a refusal (nothing bought), 404 says no such order, 5xx leaves a write's outcome unknown."""

UNRECOGNISED = "unrecognised_error"
"""An error answer no rule names: read as status 502, so a write's outcome stays unknown
(asked about, never bought again) rather than assumed refused."""

IdempotencyReplay = Literal["original", "error", "accepted", "none"]
Lookup = Literal["client_order_id", "supplier_order_id"]
CanonicalState = Literal["submitted", "processing", "success", "partial", "failed",
                         "refunded"]
_NAME = r"^[a-z][a-z0-9_]{0,31}$"
_TEMPLATE_VAR = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
REQUEST_VARS = frozenset({"api_key", "client_order_id", "request_id", "sku", "quantity",
                          "account", "callback_url", "supplier_order_id", "now", "now_s",
                          "now_ms"})
MAX_ANSWER_TEXT = 1000
MAX_CODES = 100
MAX_PRODUCTS = 10_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


Scalar = str | int | float | bool | None
ParamValue = Scalar | dict[str, Any]


class FieldRef(_Strict):
    """Where a value is: a ``path`` in the answer (optionally through a ``map`` of its
    values), or a constant ``value``. A plain string is short for ``{path: ...}``."""

    path: str | None = None
    """Dotted path; ``name@json`` decodes a JSON string; ``""`` is the data itself."""
    value: Scalar = None
    """A constant, when the answer does not carry the field."""
    map: dict[str, Scalar] | None = None
    """The answer's values (as text) → what they mean, e.g. stock words → numbers."""

    @model_validator(mode="before")
    @classmethod
    def _short(cls, data: Any) -> Any:
        return {"path": data} if isinstance(data, str) else data

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: CoreSchema,
                                     handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        """The file may write the short form: the schema says so, or editors flag it."""
        full = handler.resolve_ref_schema(handler(schema))
        return {"anyOf": [{"type": "string", "description": "short for `{path: ...}`"},
                          {key: value for key, value in full.items() if key != "description"}],
                "description": full.get("description", "")}


Ref = FieldRef


class Operation(_Strict):
    """One request: method, path, parameters (templates), and where its data is."""

    method: Literal["GET", "POST"] | None = None
    """Default: the dialect's ``method``."""
    path: str = ""
    """Below the supplier's base URL, e.g. ``/shared/commodity/trade``; ``""`` for one URL."""
    encoding: Literal["form", "json", "query"] | None = None
    """Default: the dialect's ``encoding``."""
    params: dict[str, ParamValue] = {}
    """Parameters of this operation, after the dialect's ``common_params``."""
    sign_parts: tuple[str, ...] = ()
    direct_params: dict[str, ParamValue] = {}
    """For ``place_order``: parameters that replace ``params`` for a direct top-up (an
    order with an account), e.g. another ``method`` (the gateway's
    ``fulu.order.direct.add``)."""
    """For ``md5_concat``: the templates concatenated (``{secret}`` allowed)."""
    data: str = ""
    """Path from the envelope's data to this operation's data."""

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if value and not value.startswith("/"):
            raise ValueError(f"{value!r} must start with / (it follows the base URL)")
        return value


class Operations(_Strict):
    catalog: Operation
    balance: Operation
    place_order: Operation
    get_order: Operation


class Envelope(_Strict):
    """The wrapper of every answer: success predicate, error code, message, data."""

    success_path: str
    """Path of the field that says success, e.g. ``code``."""
    success_values: tuple[str | int, ...]
    """Its values that mean success (compared as text), e.g. ``[0]`` or ``[200]``."""
    code_path: str | None = None
    """Path of the error code."""
    message_path: str | None = None
    """Path of the human message (errors told apart by message only look here)."""
    data_path: str = ""
    """Path of the data, e.g. ``result@json`` or ``data``."""
    sign_path: str | None = None
    """Path of the answer's own signature, if the supplier signs its answers."""
    signed_path: str | None = None
    """Path of the text that signature covers (as sent: a JSON string stays a string),
    signed with the dialect's signer and secret; a success answer whose signature does not
    match is a ``bad_response``."""

    @model_validator(mode="after")
    def _both(self) -> Self:
        if (self.sign_path is None) != (self.signed_path is None):
            raise ValueError("write both sign_path and signed_path, or neither")
        return self


class ErrorRule(_Strict):
    """An error answer that means ``means``: any of ``codes``, or a message containing
    any of ``messages``."""

    means: Literal["bad_signature", "unknown_merchant", "invalid_request",
                   "insufficient_balance", "unknown_product", "not_found", "out_of_stock",
                   "duplicate_request", "rate_limited", "server_busy"]
    codes: tuple[str | int, ...] = ()
    messages: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _something(self) -> Self:
        if not self.codes and not self.messages:
            raise ValueError("an error rule needs codes: or messages:")
        return self


class Signer(_Strict):
    name: str
    """One of ``md5_concat``, ``md5_sorted_query``, ``md5_sorted_chars``, ``hmac_sha256``."""
    param: str = "sign"
    """The parameter the signature is sent in."""
    upper: bool = False
    """Send the hex in upper case."""

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in SIGNERS:
            raise ValueError(f"unknown signer {value!r}; write one of: {', '.join(SIGNERS)}")
        return value


class Decryptor(_Strict):
    name: Literal["aes_ecb"]
    encoding: Literal["base64", "hex"] = "base64"
    fields: tuple[Literal["serial", "pin"], ...] = ("serial", "pin")
    """Which code fields come encrypted."""


class Authenticator(_Strict):
    """OAuth2 client credentials: the api_key is the client id, the secret its secret."""

    name: Literal["oauth2_client_credentials"]
    token_path: str
    """Below the base URL, e.g. ``/oauth/token``."""
    scope: str | None = None


class CatalogMap(_Strict):
    list: str = ""
    """Path of the product list in the operation's data."""
    items: str | None = None
    """Path, inside each list entry, of a nested product list (categories of products)."""
    sku: Ref
    name: Ref
    face_value: Ref | None = None
    """Default: the price (a supplier that does not say what a code is worth)."""
    price: Ref
    stock: Ref | None = None
    kind: Ref = FieldRef(value="card")


class BalanceMap(_Strict):
    amount: Ref
    currency: Ref | None = None


class OrderMap(_Strict):
    """Where an order's fields are in a place or look-up answer (or a callback)."""

    client_order_id: Ref | None = None
    """Where the answer carries the merchant's (request) id, if it does."""
    supplier_order_id: Ref | None = None
    sku: Ref | None = None
    quantity: Ref | None = None
    state: Ref | None = None
    state_when_absent: CanonicalState | None = None
    """The state of an answer without one (a synchronous trade's answer: ``success``)."""
    amount: Ref | None = None
    unit_price: Ref | None = None
    created_at: Ref | None = None
    updated_at: Ref | None = None
    failure_reason: Ref | None = None


class CodesMap(_Strict):
    """Where the codes are: a ``list`` of objects, or ``text`` lines split by ``line``."""

    list: str | None = None
    serial: str = "serial"
    pin: str = "pin"
    expires_at: str | None = None
    face_value: str | None = None
    text: str | None = None
    """Path of codes joined by ``separator`` (the synchronous trade style)."""
    separator: str = "\n"
    line: str = r"^(?P<serial>\S+)\s+(?P<pin>\S+)$"
    """Regular expression with groups ``serial`` and ``pin`` for one text line."""

    @model_validator(mode="after")
    def _one(self) -> Self:
        if (self.list is None) == (self.text is None):
            raise ValueError("write exactly one of list: (objects) or text: (joined lines)")
        if self.text is not None:
            try:
                groups = re.compile(self.line).groupindex
            except re.error as exc:
                raise LocatedValueError(f"not a regular expression: {exc}", ("line",)) \
                    from exc
            if not {"serial", "pin"} <= set(groups):
                raise LocatedValueError("needs the groups (?P<serial>...) and (?P<pin>...)",
                                        ("line",))
        return self


class CallbackMap(_Strict):
    """The supplier's callback: how it is encoded, signed, read and acknowledged."""

    param: str = "callback_url"
    """The request parameter that carries the callback URL (added to place_order)."""
    encoding: Literal["form", "json"] = "form"
    sign_field: str = "sign"
    sign_parts: tuple[str, ...]
    """Templates concatenated and MD5-hashed: ``{api_key}``, ``{secret}``, ``{<field>}``."""
    order: OrderMap
    ack_body: str = "success"
    """What the supplier expects back (the receiver answers 200)."""


class Idempotency(_Strict):
    """What a repeated request id does, and how an order can be asked about."""

    replay: IdempotencyReplay
    """``original``: a repeat returns the original order; ``error``: a repeat is an error
    (``duplicate_request``) that tells nothing else; ``accepted``: "duplicate" means the
    order was accepted, ask later; ``none``: there is no key, a repeat buys again."""
    lookup: Lookup
    """``client_order_id``: ``get_order`` asks by the merchant's id; ``supplier_order_id``:
    only by the supplier's own number, learnt from a readable place answer."""


class RequestIdRule(_Strict):
    """The supplier's rules for the merchant's id; a longer or odder client order id is
    replaced by ``prefix`` + a hash of it (the same id every time, so a resume asks for
    the same order)."""

    max_length: Annotated[int, Field(ge=8, le=64)] = 64
    pattern: str = r"^[A-Za-z0-9_-]+$"
    prefix: str = "T"


class Dialect(_Strict):
    """A supplier dialect: everything :class:`DialectDriver` needs to speak it."""

    name: str = Field(pattern=_NAME)
    title: str
    modelled_on: str
    """The real-world API this dialect follows."""
    description: str = ""
    not_expressed: tuple[str, ...] = ()
    """What the real API does that this file cannot say (documented, not silent)."""
    method: Literal["GET", "POST"] = "POST"
    encoding: Literal["form", "json", "query"] = "json"
    headers: dict[str, str] = {}
    """Sent with every request, e.g. ``Accept-Language: en`` to fix the message language."""
    time_format: str = "%Y-%m-%d %H:%M:%S"
    """``strftime`` format, or ``rfc3339``, ``epoch_s``, ``epoch_ms``."""
    timezone: str = "Asia/Shanghai"
    money: Literal["string", "number", "either"] = "either"
    currency: str = Field(default="CNY", pattern=r"^[A-Z]{3}$")
    signer: Signer
    decryptor: Decryptor | None = None
    authenticator: Authenticator | None = None
    common_params: dict[str, ParamValue] = {}
    envelope: Envelope
    errors: tuple[ErrorRule, ...] = ()
    states: dict[str | int, CanonicalState]
    idempotency: Idempotency
    request_id: RequestIdRule = RequestIdRule()
    operations: Operations
    products: CatalogMap
    balance: BalanceMap
    order: OrderMap
    codes: CodesMap | None = None
    callback: CallbackMap | None = None
    failed_amount_zero: bool = True
    """A failed order took nothing (the supplier returns the money): amount 0."""

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}; write e.g. Asia/Shanghai") from exc
        return value

    @model_validator(mode="after")
    def _templates(self) -> Self:
        for op_name in Operations.model_fields:
            op: Operation = getattr(self.operations, op_name)
            for key, value in {**self.common_params, **op.params,
                               **op.direct_params}.items():
                for var in _vars(value):
                    if var not in REQUEST_VARS:
                        raise LocatedValueError(
                            f"unknown template variable {{{var}}}; write one of: "
                            + ", ".join(sorted(REQUEST_VARS)),
                            ("operations", op_name, "params", key))
            for index, part in enumerate(op.sign_parts):
                for var in _vars(part):
                    if var not in REQUEST_VARS | {"secret"}:
                        raise LocatedValueError(f"unknown template variable {{{var}}}",
                                                ("operations", op_name, "sign_parts", index))
        return self

    @property
    def state_map(self) -> dict[str, OrderState]:
        return {str(k): OrderState(v) for k, v in self.states.items()}


def _vars(value: Any) -> list[str]:
    if isinstance(value, str):
        return _TEMPLATE_VAR.findall(value)
    if isinstance(value, dict):
        return [v for item in value.values() for v in _vars(item)]
    return []


class DialectError(ConfigError):
    """A dialect file is invalid; the message names the file, line and key."""

    schema_command = "trialbench schema --kind dialect"


def load_dialect(path: Path) -> Dialect:
    """Read and validate a dialect file; :class:`DialectError` names file:line: key."""
    return load_model(path, Dialect, error=DialectError)


def dialect_json_schema() -> str:
    """The JSON Schema of a dialect file."""
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema",
              **Dialect.model_json_schema()}
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


# ---------------------------------------------------------------------------- reading answers


class _Bad(ValueError):
    """An answer that cannot be read (a protocol error on that request)."""


_MONEY_TEXT = re.compile(r"[0-9]{1,20}(\.[0-9]{1,10})?")


def read_money(value: Any, mode: str) -> Decimal:
    """Money as the dialect sends it: a decimal string, a JSON number, or either; finite,
    non-negative, at most :data:`harness.protocol.MAX_MONEY`."""
    if isinstance(value, str) and mode != "number":
        if not _MONEY_TEXT.fullmatch(value):
            raise _Bad(f"money must be a plain decimal, got {value[:40]!r}")
        amount = Decimal(value)
    elif isinstance(value, Decimal | int) and not isinstance(value, bool) and mode != "string":
        amount = Decimal(value)
        if not amount.is_finite() or amount.as_tuple().exponent < -10:  # type: ignore[operator]
            raise _Bad(f"money must be finite with at most 10 places, got {str(value)[:40]}")
    else:
        raise _Bad(f"money must be a {'number or string' if mode == 'either' else mode}, "
                   f"got {type(value).__name__}")
    if amount < 0 or amount > protocol.MAX_MONEY:
        raise _Bad(f"money must be between 0 and {protocol.MAX_MONEY}, got {str(value)[:40]}")
    return amount


def read_int(value: Any, what: str, low: int, high: int) -> int:
    """A count as a number or a digit string (``"199"``), within bounds."""
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,15}", value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(f"{what} must be a whole number, got {type(value).__name__}")
    if not low <= value <= high:
        raise _Bad(f"{what} must be between {low} and {high}, got {value}")
    return value


def read_text(value: Any, what: str, max_len: int = MAX_ANSWER_TEXT) -> str:
    """A string field (numbers are accepted as their text: ids are often numbers)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise _Bad(f"{what} must be a string, got {type(value).__name__}")
    if len(value) > max_len:
        raise _Bad(f"{what} longer than {max_len} characters")
    try:
        value.encode()
    except UnicodeEncodeError as exc:
        raise _Bad(f"{what} is not valid Unicode") from exc
    return value


_MISSING = object()


def dig(data: Any, path: str) -> Any:
    """The value at a dotted ``path`` (``a.b@json.c``); :data:`_MISSING` if absent."""
    if not path:
        return data
    for segment in path.split("."):
        decode = segment.endswith("@json")
        name = segment.removesuffix("@json")
        if name:
            if isinstance(data, dict):
                data = data.get(name, _MISSING)
            elif isinstance(data, list) and name.isdigit() and int(name) < len(data):
                data = data[int(name)]
            else:
                return _MISSING
        if data is _MISSING:
            return _MISSING
        if decode:
            if not isinstance(data, str) or len(data) > 1_048_576:
                raise _Bad(f"{name or 'data'} must be a JSON string")
            data = _loads(data.encode())
    return data


def _loads(body: bytes) -> Any:
    try:
        return json.loads(body, parse_float=Decimal)
    except RecursionError as exc:
        raise _Bad("answer nested too deeply") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        text = body[:200].lstrip().lower()
        if text.startswith((b"<!doctype", b"<html", b"<")):
            raise _Bad("an HTML page, not a JSON answer") from exc
        raise _Bad(f"not JSON: {exc}"[:200]) from exc


def _ref(data: Any, ref: FieldRef | None) -> Any:
    if ref is None:
        return _MISSING
    if ref.path is None:
        return ref.value
    value = dig(data, ref.path)
    if ref.map is not None and value is not _MISSING and value is not None:
        key = str(value)
        if key not in ref.map:
            raise _Bad(f"{ref.path}: unknown value {key[:40]!r}")
        return ref.map[key]
    return value


def _required(data: Any, ref: FieldRef | None, what: str) -> Any:
    value = _ref(data, ref)
    if value is _MISSING or value is None:
        raise _Bad(f"{what} is missing from the answer")
    return value


# ---------------------------------------------------------------------------- the driver


def fit_request_id(client_order_id: str, rule: RequestIdRule) -> str:
    """The client order id as the supplier can take it: itself when it fits, else
    ``prefix`` + hex of its SHA-256 (deterministic: the same order, the same id)."""
    if len(client_order_id) <= rule.max_length and re.fullmatch(rule.pattern, client_order_id):
        return client_order_id
    digest = hashlib.sha256(client_order_id.encode()).hexdigest()
    return (rule.prefix + digest)[:rule.max_length]


@dataclass
class _Context:
    """What the driver remembers of one order: the request, the supplier's number, and the
    last view (so an unchanged answer keeps its time and is not logged as news)."""

    request: OrderRequest
    supplier_order_id: str | None = None
    seen: tuple[Any, ...] | None = None
    seen_at: datetime | None = None


@dataclass
class DialectDriver:
    """Speaks a :class:`Dialect` to one supplier at ``base_url``. No I/O."""

    dialect: Dialect
    base_url: str
    credentials: Credentials
    clock: Any = field(default=time.time)
    _orders: dict[str, _Context] = field(default_factory=dict)
    _by_request_id: dict[str, str] = field(default_factory=dict)
    _face_values: dict[str, Decimal] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        self.name = self.dialect.name
        self._zone = ZoneInfo(self.dialect.timezone)
        self._states = self.dialect.state_map
        if self.dialect.decryptor is not None:
            self._decrypt = DECRYPTORS[self.dialect.decryptor.name](
                self.dialect.decryptor.encoding)
        auth = self.dialect.authenticator
        self.authenticator = None if auth is None else OAuth2ClientCredentials(
            self.base_url + auth.token_path, self.credentials.api_key,
            self.credentials.secret, scope=auth.scope)
        """The OAuth2 token cache, when the dialect names an authenticator: an executor
        sends :meth:`OAuth2ClientCredentials.token_request` while ``needs_token(now)`` and
        gives the answer to ``accept``; every request then carries the bearer token."""

    # -- declarations the lifecycle reads
    @property
    def idempotency(self) -> Idempotency:
        return self.dialect.idempotency

    @property
    def supports_refunds(self) -> bool:
        return False

    @property
    def callback_ack(self) -> bytes:
        return self.dialect.callback.ack_body.encode() if self.dialect.callback else b""

    # -- building requests
    def _now_text(self, moment: float) -> str:
        fmt = self.dialect.time_format
        if fmt == "epoch_s":
            return str(int(moment))
        if fmt == "epoch_ms":
            return str(int(moment * 1000))
        local = datetime.fromtimestamp(moment, self._zone)
        return protocol.format_time(local) if fmt == "rfc3339" else local.strftime(fmt)

    def _vars(self, order: OrderRequest | None = None, supplier_order_id: str | None = None,
              client_order_id: str | None = None) -> dict[str, Any]:
        now = self.clock()
        cid = order.client_order_id if order is not None else client_order_id
        values: dict[str, Any] = {"api_key": self.credentials.api_key, "now": self._now_text(now),
                                  "now_s": int(now), "now_ms": int(now * 1000),
                                  "supplier_order_id": supplier_order_id,
                                  "client_order_id": cid, "request_id": None, "sku": None,
                                  "quantity": None, "account": None, "callback_url": None}
        if cid is not None:
            values["request_id"] = self.request_id(cid)
        if order is not None:
            values.update(sku=order.sku, quantity=order.quantity, account=order.account,
                          callback_url=order.callback_url if self.dialect.callback else None)
        return values

    def request_id(self, client_order_id: str) -> str:
        rid = fit_request_id(client_order_id, self.dialect.request_id)
        self._by_request_id[rid] = client_order_id
        return rid

    def _render(self, value: ParamValue, values: Mapping[str, Any]) -> Any:
        if isinstance(value, dict):
            inner = {k: self._render(v, values) for k, v in value.items()}
            return json.dumps({k: v for k, v in inner.items() if v is not None},
                              separators=(",", ":"), ensure_ascii=False)
        if not isinstance(value, str):
            return value
        whole = _TEMPLATE_VAR.fullmatch(value)
        if whole:
            return values.get(whole.group(1))
        return _TEMPLATE_VAR.sub(lambda m: _text(values.get(m.group(1))), value)

    def _request(self, op: Operation, values: dict[str, Any], *, read_only: bool = True,
                 extra: Mapping[str, Any] | None = None) -> HttpRequest:
        d = self.dialect
        params: dict[str, Any] = {}
        for key, template in {**d.common_params, **op.params, **(extra or {})}.items():
            rendered = self._render(template, values)
            if rendered is not None:
                params[key] = rendered
        encoding = op.encoding or d.encoding
        if encoding != "json":
            params = {k: _text(v) for k, v in params.items()}
        signer = d.signer
        if op.sign_parts or signer.name != "md5_concat":  # md5_concat without parts: unsigned
            parts = [self._render(p, {**values, "secret": self.credentials.secret})
                     for p in op.sign_parts]
            signature = SIGNERS[signer.name](SignInput(
                params, self.credentials.secret, [_text(p) for p in parts], (signer.param,)))
            params[signer.param] = signature.upper() if signer.upper else signature
        method = op.method or d.method
        url = self.base_url + op.path
        headers = dict(d.headers)
        if self.authenticator is not None:
            headers.update(self.authenticator.headers())
        body = b""
        if encoding == "query" or method == "GET":
            url += "?" + urlencode(params)
        elif encoding == "form":
            body = urlencode(params).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        else:
            body = json.dumps(params, separators=(",", ":"), ensure_ascii=False).encode()
            headers["Content-Type"] = "application/json"
        return HttpRequest(method, url, headers, body, read_only)

    def catalog(self) -> HttpRequest:
        return self._request(self.dialect.operations.catalog, self._vars())

    def balance(self) -> HttpRequest:
        return self._request(self.dialect.operations.balance, self._vars())

    def place_order(self, order: OrderRequest) -> HttpRequest:
        context = self._orders.get(order.client_order_id)
        if context is None:
            self._orders[order.client_order_id] = _Context(order)
        op = self.dialect.operations.place_order
        extra: dict[str, ParamValue] = dict(op.direct_params) if order.account else {}
        callback = self.dialect.callback
        if callback is not None and order.callback_url:
            extra[callback.param] = "{callback_url}"
        return self._request(op, self._vars(order), read_only=False, extra=extra)

    def get_order(self, client_order_id: str) -> HttpRequest:
        """Ask about an order: by the merchant's id, or by the supplier's number where the
        dialect looks up only by that (an order whose number was never learnt is asked
        with an empty number, which the supplier answers "no such order")."""
        context = self._orders.get(client_order_id)
        supplier_id = context.supplier_order_id if context is not None else None
        order = context.request if context is not None else None
        values = self._vars(order, supplier_id or "", client_order_id)
        return self._request(self.dialect.operations.get_order, values)

    def request_refund(self, client_order_id: str, reason: str,
                       serials: list[str] | None = None, note: str | None = None
                       ) -> HttpRequest:
        raise NotImplementedError(f"the {self.name} dialect has no refund operation")

    def get_refund(self, client_order_id: str) -> HttpRequest:
        raise NotImplementedError(f"the {self.name} dialect has no refund operation")

    def parse_refund(self, response: HttpResponse) -> Result[Refund]:
        return Failure("not_supported", 0, f"the {self.name} dialect has no refunds")

    # -- reading answers
    def _data(self, response: HttpResponse, op: Operation) -> Any:
        """The operation's data, or a :class:`Failure` for anything but success."""
        if response.status == 0:
            return Failure(response.transport_error or "no_answer", 0, "no answer")
        if response.transport_error is not None:
            return Failure(response.transport_error, response.status, "body not read whole")
        try:
            answer = _loads(response.body)
        except _Bad as exc:
            if not 200 <= response.status < 300:
                return Failure(f"http_{response.status}", response.status, str(exc))
            return Failure("bad_response", response.status, str(exc))
        env = self.dialect.envelope
        if not 200 <= response.status < 300:
            failure = self._error(answer, response.status)
            return Failure(f"http_{response.status}", response.status, failure.message) \
                if failure.kind == UNRECOGNISED else failure
        if not isinstance(answer, dict):
            return Failure("bad_response", response.status, "the answer is not an object")
        flag = dig(answer, env.success_path)
        if flag is _MISSING or _text(flag) not in {str(v) for v in env.success_values}:
            return self._error(answer, response.status)
        if env.sign_path is not None and env.signed_path is not None \
                and not self._answer_signed(answer, env.sign_path, env.signed_path):
            return Failure("bad_response", response.status, "the answer's sign does not match")
        data = dig(dig(answer, env.data_path), op.data)
        if data is _MISSING:
            return Failure("bad_response", response.status, "no data in a success answer")
        return data

    def _answer_signed(self, answer: Any, sign_path: str, signed_path: str) -> bool:
        """Whether the answer's own signature covers ``signed_path`` with the secret."""
        given, text = dig(answer, sign_path), dig(answer, signed_path)
        if not isinstance(given, str) or not isinstance(text, str):
            return False
        secret = self.credentials.secret
        name = self.dialect.signer.name
        if name == "md5_sorted_chars":
            expected = md5_hex("".join(sorted(text)) + secret)
        elif name == "md5_sorted_query":
            expected = md5_hex(f"{text}&key={secret}")
        elif name == "hmac_sha256":
            expected = hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()
        else:
            expected = md5_hex(text + secret)
        return hmac.compare_digest(expected, given.lower())

    def _error(self, answer: Any, status: int) -> Failure:
        env = self.dialect.envelope
        code = dig(answer, env.code_path) if env.code_path and isinstance(answer, dict) \
            else _MISSING
        message = dig(answer, env.message_path) if env.message_path \
            and isinstance(answer, dict) else _MISSING
        code_text = "" if code is _MISSING else _text(code)[:40]
        message_text = "" if message is _MISSING or not isinstance(message, str) \
            else message[:200]
        for rule in self.dialect.errors:
            if (code_text and code_text in {str(c) for c in rule.codes}) or any(
                    m in message_text for m in rule.messages):
                shown = f"{code_text} {message_text}".strip()
                retry = 1.0 if rule.means in ("rate_limited", "server_busy") else None
                return Failure(rule.means, ERROR_KINDS[rule.means], shown, retry)
        return Failure(UNRECOGNISED, 502, f"{code_text} {message_text}".strip()
                       or "an error answer without code or message")

    def _read(self, response: HttpResponse, op: Operation, build: Any) -> Any:
        data = self._data(response, op)
        if isinstance(data, Failure):
            return data
        try:
            return build(data)
        except RecursionError:
            return Failure("bad_response", response.status, "answer nested too deeply")
        except (_Bad, DecryptError, ValueError, KeyError, TypeError, InvalidOperation,
                OverflowError) as exc:
            return Failure("bad_response", response.status,
                           f"{type(exc).__name__}: {exc}"[:200])

    def parse_catalog(self, response: HttpResponse) -> Result[list[Product]]:
        return self._read(response, self.dialect.operations.catalog, self._products)  # type: ignore[no-any-return]

    def _products(self, data: Any) -> list[Product]:
        spec = self.dialect.products
        entries = dig(data, spec.list)
        if not isinstance(entries, list):
            raise _Bad("the product list is not a list")
        if spec.items is not None:
            nested: list[Any] = []
            for entry in entries:
                inner = dig(entry, spec.items)
                if not isinstance(inner, list):
                    raise _Bad(f"{spec.items} is not a list")
                nested.extend(inner)
            entries = nested
        if len(entries) > MAX_PRODUCTS:
            raise _Bad(f"more than {MAX_PRODUCTS} products")
        products = []
        money = self.dialect.money
        for entry in entries:
            price = read_money(_required(entry, spec.price, "price"), money)
            face = _ref(entry, spec.face_value)
            stock = _ref(entry, spec.stock)
            kind = _ref(entry, spec.kind)
            if kind not in ("card", "direct"):
                raise _Bad(f"kind must map to card or direct, got {str(kind)[:20]!r}")
            product = Product(
                sku=read_text(_required(entry, spec.sku, "sku"), "sku"),
                name=read_text(_required(entry, spec.name, "name"), "name"),
                kind=kind,
                face_value=price if face is _MISSING or face is None
                else read_money(face, money),
                currency=self.dialect.currency, price=price,
                stock=None if stock is _MISSING or stock is None
                else read_int(stock, "stock", 0, 10**12),
                code_pattern=None)
            products.append(product)
        self._face_values.update({p.sku: p.face_value for p in products})
        return products

    def parse_balance(self, response: HttpResponse) -> Result[Balance]:
        spec = self.dialect.balance

        def build(data: Any) -> Balance:
            currency = _ref(data, spec.currency)
            return Balance(read_money(_required(data, spec.amount, "balance"),
                                      self.dialect.money),
                           self.dialect.currency if currency in (_MISSING, None)
                           else read_text(currency, "currency", 16))
        return self._read(response, self.dialect.operations.balance, build)  # type: ignore[no-any-return]

    def parse_order(self, response: HttpResponse) -> Result[Order]:
        """An order answer read without knowing which order it answers (the answer must
        then name it); :meth:`parse_order_for` is the better reading."""
        return self.parse_order_for(None, response)

    def parse_order_for(self, client_order_id: str | None,
                        response: HttpResponse) -> Result[Order]:
        """The answer to a place or look-up request about ``client_order_id``."""
        data = self._data(response, self.dialect.operations.get_order)
        if isinstance(data, Failure):
            return data
        try:
            return self._order(data, self.dialect.order, client_order_id)
        except RecursionError:
            return Failure("bad_response", response.status, "answer nested too deeply")
        except (_Bad, DecryptError, ValueError, KeyError, TypeError, InvalidOperation,
                OverflowError) as exc:
            return Failure("bad_response", response.status,
                           f"{type(exc).__name__}: {exc}"[:200])

    def _time(self, value: Any, what: str) -> datetime:
        fmt = self.dialect.time_format
        if fmt in ("epoch_s", "epoch_ms"):
            seconds = read_int(value, what, 0, 10**13)
            return datetime.fromtimestamp(seconds / (1000 if fmt == "epoch_ms" else 1), UTC)
        text = read_text(value, what, 64)
        if fmt == "rfc3339":
            return protocol.parse_time(text)
        try:
            local = datetime.strptime(text, fmt)
        except ValueError as exc:
            raise _Bad(f"{what} {text[:40]!r} is not in the format {fmt}") from exc
        return local.replace(tzinfo=self._zone).astimezone(UTC)

    def _order(self, data: Any, spec: OrderMap, client_order_id: str | None, *,
               from_callback: bool = False) -> Order:
        if not isinstance(data, dict):
            raise _Bad("the order is not an object")
        named = _ref(data, spec.client_order_id)
        cid = client_order_id
        if named is not _MISSING and named is not None:
            rid = read_text(named, "client order id", 128)
            named_cid = self._by_request_id.get(rid, rid)
            if cid is not None and named_cid != cid:
                raise _Bad("the answer is about another order")
            cid = named_cid
        if cid is None:
            raise _Bad("the answer does not say which order it is about")
        context = self._orders.get(cid)
        request = context.request if context is not None else None
        raw_state = _ref(data, spec.state)
        if raw_state is _MISSING or raw_state is None:
            if spec.state_when_absent is None:
                raise _Bad("state is missing from the answer")
            state = OrderState(spec.state_when_absent)
        else:
            key = _text(raw_state)[:40]
            if key not in self._states:
                raise _Bad(f"unknown state {key!r}")
            state = self._states[key]
        supplier_id_raw = _ref(data, spec.supplier_order_id)
        supplier_id = "" if supplier_id_raw in (_MISSING, None) \
            else read_text(supplier_id_raw, "supplier order id", 128)
        if supplier_id and context is not None:
            context.supplier_order_id = supplier_id
        sku_raw = _ref(data, spec.sku)
        sku = read_text(sku_raw, "sku") if sku_raw not in (_MISSING, None) \
            else (request.sku if request is not None else "")
        codes = () if from_callback else self._codes(data, sku)
        quantity_raw = _ref(data, spec.quantity)
        quantity = read_int(quantity_raw, "quantity", 1, MAX_CODES) \
            if quantity_raw not in (_MISSING, None) \
            else (request.quantity if request is not None else max(1, len(codes)))
        if len(codes) > quantity:
            raise _Bad(f"{len(codes)} codes for a quantity of {quantity}")
        if state is OrderState.SUCCESS and 0 < len(codes) < quantity:
            state = OrderState.PARTIAL  # a success with fewer codes than bought
        money = self.dialect.money
        amount_raw, unit_raw = _ref(data, spec.amount), _ref(data, spec.unit_price)
        amount = None if amount_raw in (_MISSING, None) else read_money(amount_raw, money)
        unit = None if unit_raw in (_MISSING, None) else read_money(unit_raw, money)
        if unit is None:
            unit = (amount / quantity).quantize(Decimal("0.0001")) if amount is not None \
                else Decimal(0)
        if amount is None:
            amount = unit * quantity
        if state is OrderState.FAILED and self.dialect.failed_amount_zero:
            amount = Decimal(0)
        now = datetime.fromtimestamp(self.clock(), UTC)
        created_raw, updated_raw = _ref(data, spec.created_at), _ref(data, spec.updated_at)
        created = self._time(created_raw, "created_at") \
            if created_raw not in (_MISSING, None, "") else None
        updated = self._time(updated_raw, "updated_at") \
            if updated_raw not in (_MISSING, None, "") else None
        view = (state, len(codes), amount)
        if updated is None:  # no time in the answer: the time the view changed, as seen
            if context is not None and context.seen == view and context.seen_at is not None:
                updated = context.seen_at
            else:
                updated = now
        elif context is not None and context.seen_at is not None and context.seen != view \
                and updated <= context.seen_at:
            # a changed view stamped before one the driver had to stamp itself is still newer
            updated = context.seen_at + timedelta(milliseconds=1)
        if context is not None and not from_callback:
            context.seen, context.seen_at = view, updated
        elif context is not None:  # a later look-up that changed is newer than this news
            context.seen_at = updated if context.seen_at is None \
                else max(context.seen_at, updated)
        if context is not None and state.is_final and not from_callback:
            # a final view is the last the lifecycle asks for: forget the order, so a long
            # burst does not keep every order it ever placed
            self._orders.pop(cid, None)
            self._by_request_id.pop(fit_request_id(cid, self.dialect.request_id), None)
        reason_raw = _ref(data, spec.failure_reason)
        return Order(client_order_id=cid, supplier_order_id=supplier_id, sku=sku,
                     quantity=quantity, state=state, unit_price=unit, amount=amount,
                     created_at=created or updated, updated_at=updated,
                     delivered_at=updated if state.delivered else None, codes=codes,
                     failure_reason=None if state is not OrderState.FAILED
                     or reason_raw in (_MISSING, None) else read_text(reason_raw, "reason"))

    def _codes(self, data: Any, sku: str) -> tuple[Code, ...]:
        spec = self.dialect.codes
        if spec is None:
            return ()
        face = self._face_values.get(sku, Decimal(0))
        decrypt = self.dialect.decryptor
        encrypted = set(decrypt.fields) if decrypt is not None else set()

        def field_value(raw: Any, name: str) -> str:
            text = read_text(raw, name)
            return self._decrypt(text, self.credentials.secret) if name in encrypted else text

        if spec.text is not None:
            raw = dig(data, spec.text)
            if raw is _MISSING or raw is None or raw == "":
                return ()
            text = read_text(raw, "codes", MAX_ANSWER_TEXT * MAX_CODES)
            lines = [line for line in text.split(spec.separator) if line.strip()]
            if len(lines) > MAX_CODES:
                raise _Bad(f"more than {MAX_CODES} codes")
            pattern = re.compile(spec.line)
            codes = []
            for line in lines:
                match = pattern.fullmatch(line.strip())
                if match is None:
                    raise _Bad("a code line does not match the dialect's line pattern")
                codes.append(Code(field_value(match["serial"], "serial"),
                                  field_value(match["pin"], "pin"), face, None))
            return tuple(codes)
        assert spec.list is not None
        entries = dig(data, spec.list)
        if entries is _MISSING or entries is None:
            return ()
        if not isinstance(entries, list) or len(entries) > MAX_CODES:
            raise _Bad(f"codes must be a list of at most {MAX_CODES}")
        out = []
        for entry in entries:
            if not isinstance(entry, dict):
                raise _Bad("a code is not an object")
            expires = dig(entry, spec.expires_at) if spec.expires_at else _MISSING
            claimed = dig(entry, spec.face_value) if spec.face_value else _MISSING
            out.append(Code(
                serial=field_value(dig(entry, spec.serial), "serial"),
                pin=field_value(dig(entry, spec.pin), "pin"),
                face_value=face if claimed in (_MISSING, None)
                else read_money(claimed, self.dialect.money),
                expires_at=None if expires in (_MISSING, None, "")
                else self._time(expires, "expires_at")))
        return tuple(out)

    # -- callbacks
    def verify_callback(self, method: str, path: str, headers: Mapping[str, str],
                        body: bytes) -> Result[CallbackEvent]:
        spec = self.dialect.callback
        if spec is None:
            return Failure("forged_callback", 401, f"the {self.name} dialect sends no callbacks")
        try:
            if spec.encoding == "form":
                if len(body) > 65536:
                    raise _Bad("callback body too large")
                fields: dict[str, Any] = dict(parse_qsl(body.decode(), keep_blank_values=True,
                                                        max_num_fields=100))
                query = urlsplit(path).query
                if not fields and query:
                    fields = dict(parse_qsl(query, keep_blank_values=True, max_num_fields=100))
            else:
                loaded = _loads(body)
                if not isinstance(loaded, dict):
                    raise _Bad("the callback is not an object")
                fields = loaded
        except (_Bad, UnicodeDecodeError, ValueError) as exc:
            return Failure("bad_callback", 400, str(exc)[:200])
        values = {**{k: _text(v) for k, v in fields.items()},
                  "api_key": self.credentials.api_key, "secret": self.credentials.secret}
        expected = hashlib.md5("".join(
            _TEMPLATE_VAR.sub(lambda m: values.get(m.group(1), ""), part)
            for part in spec.sign_parts).encode(), usedforsecurity=False).hexdigest()
        given = fields.get(spec.sign_field)
        if not isinstance(given, str) or not hmac.compare_digest(expected, given.lower()):
            return Failure("forged_callback", 401, "bad callback signature")
        try:
            order = self._order(fields, spec.order, None, from_callback=True)
        except (_Bad, ValueError, KeyError, TypeError, InvalidOperation) as exc:
            return Failure("bad_callback", 400, f"{type(exc).__name__}: {exc}"[:200])
        if order.state.is_final:
            # the callback tells the state, not the codes or the amount: the order is news
            # to fetch, never a final view with no codes and nothing charged
            order = _replace_state(order, OrderState.PROCESSING)
        return CallbackEvent("order.updated", order, complete=False)


def _replace_state(order: Order, state: OrderState) -> Order:
    from dataclasses import replace

    return replace(order, state=state, delivered_at=None)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


# ---------------------------------------------------------------------------- the registry

SHIPPED = Path(__file__).resolve().parent / "dialects"
"""The dialects that ship with trialbench, one YAML file each."""
ENTRY_POINT_GROUP = "trialbench.drivers"


@dataclass(frozen=True, slots=True)
class InstalledDriver:
    """A driver a scenario may name: the reference, a shipped dialect, or a plugin."""

    name: str
    source: str
    """``builtin``, the dialect file, or the entry point (``module:attr``)."""
    title: str
    modelled_on: str = ""


def shipped_dialects() -> dict[str, Path]:
    """The shipped dialect files by name."""
    return {p.stem: p for p in sorted(SHIPPED.glob("*.yaml"))}


def _plugins() -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def installed_drivers() -> list[InstalledDriver]:
    """Every driver a scenario may name, the reference first."""
    out = [InstalledDriver("reference", "builtin",
                           "the reference protocol (shared/spec/supplier-protocol.md)",
                           "trialbench's own protocol")]
    for name, path in shipped_dialects().items():
        try:
            dialect = load_dialect(path)
            out.append(InstalledDriver(name, str(path), dialect.title, dialect.modelled_on))
        except DialectError as exc:
            out.append(InstalledDriver(name, str(path), f"BROKEN: {exc}"))
    for name, entry in _plugins().items():
        out.append(InstalledDriver(name, f"{entry.value} (plugin)", "plugin"))
    return out


def known_driver(name: str) -> str | None:
    """Why ``name`` is not a driver a scenario may use, or None if it is."""
    if name == "reference" or name in shipped_dialects():
        return None
    if name.endswith((".yaml", ".yml")):
        try:
            load_dialect(Path(name))
        except DialectError as exc:
            return str(exc)
        return None
    if name in _plugins():
        return None
    names = ["reference", *shipped_dialects(), *_plugins()]
    return (f"unknown driver {name!r}; write one of: {', '.join(names)}, or the path of a "
            "dialect file (.yaml); `trialbench dialects` lists them")


def build_dialect_driver(name: str, base_url: str, credentials: Credentials) -> Any:
    """The driver for a shipped dialect, a dialect file, or a plugin (the reference is
    :func:`harness.drivers.reference.build_driver`'s own)."""
    shipped = shipped_dialects()
    if name in shipped:
        return DialectDriver(load_dialect(shipped[name]), base_url, credentials)
    if name.endswith((".yaml", ".yml")):
        return DialectDriver(load_dialect(Path(name)), base_url, credentials)
    plugins = _plugins()
    if name in plugins:
        factory = plugins[name].load()
        return factory(base_url, credentials)
    raise ValueError(known_driver(name) or f"unknown driver {name!r}")


__all__ = ["DUPLICATE_REQUEST", "ENTRY_POINT_GROUP", "ERROR_KINDS", "Dialect", "DialectDriver",
           "DialectError", "Idempotency", "InstalledDriver", "build_dialect_driver",
           "dialect_json_schema", "fit_request_id", "installed_drivers", "known_driver",
           "load_dialect", "read_money", "shipped_dialects"]
