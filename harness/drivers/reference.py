"""The ``reference`` dialect: ``shared/spec/supplier-protocol.md``, complete.

Also the issuer client (``ReferenceIssuer``), since the issuer belongs to the same spec.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

from harness import protocol
from harness.drivers.base import (
    Balance,
    CallbackEvent,
    Code,
    Credentials,
    Driver,
    Failure,
    HttpRequest,
    HttpResponse,
    IssuerVerdict,
    Order,
    OrderRequest,
    OrderState,
    Product,
    Refund,
    Result,
)

T = TypeVar("T")
_JSON = {"Content-Type": "application/json"}
_ERROR_CODE = re.compile(r"[a-z0-9_]{1,64}")


def _dumps(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def failure_from(response: HttpResponse) -> Failure:
    """Describe a non-success response as a :class:`Failure` with a stable ``kind``."""
    if response.status == 0:
        return Failure(response.transport_error or "no_answer", 0, "no answer")
    code, message = "", ""
    try:
        err = json.loads(response.body)["error"]
        if isinstance(err["code"], str) and _ERROR_CODE.fullmatch(err["code"]):
            code = err["code"]
        message = str(err.get("message", ""))[:200]
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        pass
    retry_after: float | None = None
    raw = response.headers.get("retry-after") or response.headers.get("Retry-After")
    if raw is not None:
        try:
            retry_after = min(max(0.0, float(raw)), 300.0)
        except ValueError:
            retry_after = None
        if retry_after is not None and retry_after != retry_after:  # NaN
            retry_after = None
    kind = f"http_{response.status}" + (f"_{code}" if code else "")
    return Failure(kind, response.status, message, retry_after)


def _parse(response: HttpResponse, ok: tuple[int, ...], build: Callable[[Any], T]) -> Result[T]:
    if response.status not in ok:
        return failure_from(response)
    if response.transport_error is not None:  # the status came, the body did not, whole
        return Failure(response.transport_error, response.status, "body not read whole")
    try:
        return build(json.loads(response.body))
    except RecursionError:
        return Failure("bad_response", response.status, "answer nested too deeply")
    except (ValueError, KeyError, TypeError) as exc:
        return Failure("bad_response", response.status, f"{type(exc).__name__}: {exc}"[:200])


# Strict field readers: every field has the type the spec gives it, within sane bounds,
# or the whole answer is a protocol error (``ValueError``), never a crash further on.

MAX_TEXT = 1000
"""Longest string field accepted (ids, names, serials, reasons)."""
MAX_CODES = 100
"""Most codes one order may carry: the protocol's largest quantity."""
MAX_PRODUCTS = 10_000
MAX_PATTERN = 500
_UNBOUNDED = re.compile(r"[*+]|\{\d*,\}")
_OUTER = re.compile(r"[*+]|\{\d*(,\d*)?\}")


def _risky_groups(pattern: str) -> bool:
    """Whether a repeated group holds a repetition (or, repeated without bound, an
    alternation): ``(a+)+``, ``(a|aa)*``, ``(x*){9}``. Their backtracking can be
    exponential in the serial's length, and Python's ``re`` has no timeout. A heuristic:
    ``(?:[A-Z]{4}-){3}`` passes."""
    opened: list[int] = []
    escaped = False
    for index, char in enumerate(pattern):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "(":
            opened.append(index)
        elif char == ")" and opened:
            body = pattern[opened.pop() + 1:index]
            outer = _OUTER.match(pattern, index + 1)
            if outer is None:
                continue
            unbounded = outer.group() in "*+" or outer.group().endswith(",}")
            if _UNBOUNDED.search(body) or (unbounded and ("|" in body or "{" in body)):
                return True
    return False


def _obj(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"{what} must be an object, got {type(value).__name__}")
    return value


def _str(raw: Mapping[str, Any], key: str, *, optional: bool = False,
         max_len: int = MAX_TEXT) -> Any:
    value = raw[key] if not optional else raw.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{key} must be a string, got {type(value).__name__}")
    if len(value) > max_len:
        raise ValueError(f"{key} longer than {max_len} characters")
    try:
        value.encode()
    except UnicodeEncodeError as exc:  # a lone surrogate ("\ud800") would fail later
        raise ValueError(f"{key} is not valid Unicode") from exc
    return value


def _int(raw: Mapping[str, Any], key: str, low: int, high: int, *,
         optional: bool = False) -> Any:
    value = raw[key] if not optional else raw.get(key)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{key} must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{key} must be between {low} and {high}, got {value}")
    return value


def _list(value: Any, what: str, max_len: int) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError(f"{what} must be a list, got {type(value).__name__}")
    if len(value) > max_len:
        raise ValueError(f"{what} has more than {max_len} entries")
    return value


def _opt_time(value: Any) -> Any:
    return None if value is None else protocol.parse_time(value)


def _pattern(value: Any) -> str | None:
    """A supplier's ``code_pattern``: a string that compiles, short, and without nested
    quantifiers (``(a+)+``), whose backtracking could hang the harness on a long serial."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_PATTERN:
        raise ValueError("code_pattern must be a short string")
    if _risky_groups(value):
        raise ValueError("code_pattern repeats a repetition (catastrophic backtracking)")
    try:
        re.compile(value)
    except (re.error, RecursionError, OverflowError) as exc:
        raise ValueError(f"code_pattern does not compile: {exc}") from exc
    return value


def parse_code(raw: Any) -> Code:
    raw = _obj(raw, "code")
    return Code(serial=_str(raw, "serial"), pin=_str(raw, "pin"),
                face_value=protocol.parse_money(raw["face_value"]),
                expires_at=_opt_time(raw.get("expires_at")))


def parse_refund_body(raw: Any) -> Refund:
    raw = _obj(raw, "refund")
    state = _str(raw, "state")
    if state not in protocol.REFUND_STATES:
        raise ValueError(f"unknown refund state {state[:40]!r}")
    return Refund(refund_id=_str(raw, "refund_id"), state=state,
                  amount=protocol.parse_money(raw["amount"]), reason=_str(raw, "reason"),
                  requested_at=protocol.parse_time(raw["requested_at"]),
                  resolved_at=_opt_time(raw.get("resolved_at")))


def parse_order_body(raw: Any) -> Order:
    raw = _obj(raw, "order")
    state_text = _str(raw, "state")
    if state_text not in protocol.ORDER_STATES:
        raise ValueError(f"unknown order state {state_text[:40]!r}")
    state = OrderState(state_text)
    quantity = _int(raw, "quantity", 1, MAX_CODES)
    codes = [] if raw.get("codes") is None else _list(raw["codes"], "codes", quantity)
    refund = raw.get("refund")
    return Order(
        client_order_id=_str(raw, "client_order_id"),
        supplier_order_id=_str(raw, "order_id"),
        sku=_str(raw, "sku"),
        quantity=quantity,
        state=state,
        unit_price=protocol.parse_money(raw["unit_price"]),
        amount=protocol.parse_money(raw["amount"]),
        created_at=protocol.parse_time(raw["created_at"]),
        updated_at=protocol.parse_time(raw["updated_at"]),
        delivered_at=_opt_time(raw.get("delivered_at")),
        codes=tuple(parse_code(c) for c in codes),
        failure_reason=_str(raw, "failure_reason", optional=True),
        refund=None if refund is None else parse_refund_body(refund),
    )


def _parse_product(raw: Any) -> Product:
    raw = _obj(raw, "product")
    return Product(sku=_str(raw, "sku"), name=_str(raw, "name"), kind=_str(raw, "kind"),
                   face_value=protocol.parse_money(raw["face_value"]),
                   currency=_str(raw, "currency", max_len=16),
                   price=protocol.parse_money(raw["price"]),
                   stock=_int(raw, "stock", 0, 10**12, optional=True),
                   code_pattern=_pattern(raw.get("code_pattern")))


def _products(data: Any) -> list[Product]:
    return [_parse_product(p) for p in _list(_obj(data, "answer")["products"], "products",
                                              MAX_PRODUCTS)]


def _balance(data: Any) -> Balance:
    data = _obj(data, "answer")
    return Balance(protocol.parse_money(data["balance"]), _str(data, "currency", max_len=16))


class ReferenceDriver:
    """Speaks the reference protocol to one supplier at ``base_url``."""

    name = "reference"

    def __init__(self, base_url: str, credentials: Credentials) -> None:
        self.base_url = base_url.rstrip("/")
        self._base_path = urlsplit(self.base_url).path
        self._credentials = credentials

    def _request(self, method: str, path: str, payload: Mapping[str, Any] | None = None,
                 *, read_only: bool = True) -> HttpRequest:
        body = b"" if payload is None else _dumps(payload)
        full_path = self._base_path + path
        headers = protocol.signed_headers(self._credentials.api_key, self._credentials.secret,
                                          method, full_path, body)
        if payload is not None:
            headers.update(_JSON)
        return HttpRequest(method, self.base_url + path, headers, body, read_only)

    # catalog and balance
    def catalog(self) -> HttpRequest:
        return self._request("GET", "/v1/products")

    def parse_catalog(self, response: HttpResponse) -> Result[list[Product]]:
        return _parse(response, (200,), _products)

    def balance(self) -> HttpRequest:
        return self._request("GET", "/v1/balance")

    def parse_balance(self, response: HttpResponse) -> Result[Balance]:
        return _parse(response, (200,), _balance)

    # orders
    def place_order(self, order: OrderRequest) -> HttpRequest:
        payload = {"client_order_id": order.client_order_id, "sku": order.sku,
                   "quantity": order.quantity, "account": order.account,
                   "callback_url": order.callback_url}
        return self._request("POST", "/v1/orders", payload, read_only=False)

    def get_order(self, client_order_id: str) -> HttpRequest:
        return self._request("GET", f"/v1/orders/{quote(client_order_id, safe='')}")

    def parse_order(self, response: HttpResponse) -> Result[Order]:
        return _parse(response, (200, 201), lambda d: parse_order_body(_obj(d, "answer")["order"]))

    # refunds
    def request_refund(self, client_order_id: str, reason: str,
                       serials: list[str] | None = None, note: str | None = None) -> HttpRequest:
        payload = {"reason": reason, "serials": serials, "note": note}
        return self._request("POST", f"/v1/orders/{quote(client_order_id, safe='')}/refund",
                             payload, read_only=False)

    def get_refund(self, client_order_id: str) -> HttpRequest:
        return self._request("GET", f"/v1/orders/{quote(client_order_id, safe='')}/refund")

    def parse_refund(self, response: HttpResponse) -> Result[Refund]:
        return _parse(response, (200, 202),
                      lambda d: parse_refund_body(_obj(d, "answer")["refund"]))

    # callbacks
    def verify_callback(self, method: str, path: str, headers: Mapping[str, str],
                        body: bytes) -> Result[CallbackEvent]:
        lower = {k.lower(): v for k, v in headers.items()}
        if not protocol.verify(self._credentials.secret, method, path,
                               lower.get("x-timestamp"), body, lower.get("x-signature")):
            return Failure("forged_callback", 401, "bad or stale callback signature")
        try:
            raw = _obj(json.loads(body), "callback")
            return CallbackEvent(event=_str(raw, "event"), order=parse_order_body(raw["order"]))
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            return Failure("bad_callback", 400, f"{type(exc).__name__}: {exc}")


def _issuer_verdict(data: Any) -> IssuerVerdict:
    data = _obj(data, "answer")
    status = _str(data, "status")
    if status not in protocol.ISSUER_CODE_STATUSES:
        raise ValueError(f"unknown code status {status[:40]!r}")
    return IssuerVerdict(status, protocol.parse_money(data["face_value"]),
                         _opt_time(data.get("expires_at")))


class ReferenceIssuer:
    """The issuer of the reference protocol: a non-consuming check and a redeem."""

    def __init__(self, base_url: str, api_key: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"X-Api-Key": api_key}

    def check(self, serial: str, pin: str) -> HttpRequest:
        return HttpRequest("GET", f"{self.base_url}/v1/codes/{quote(serial, safe='')}"
                           f"?pin={quote(pin, safe='')}", self._headers)

    def parse_check(self, response: HttpResponse) -> Result[IssuerVerdict]:
        if response.status == 404:
            return IssuerVerdict("not_found")
        return _parse(response, (200,), _issuer_verdict)

    def redeem(self, serial: str, pin: str) -> HttpRequest:
        return HttpRequest("POST", f"{self.base_url}/v1/codes/{quote(serial, safe='')}/redeem",
                           {**self._headers, **_JSON}, _dumps({"pin": pin}), read_only=False)

    def parse_redeem(self, response: HttpResponse) -> Result[IssuerVerdict]:
        """``redeemed`` on success; ``already_redeemed``, ``expired``, ``not_found`` otherwise."""
        outcomes = {409: "already_redeemed", 410: "expired", 404: "not_found"}
        if response.status in outcomes:
            return IssuerVerdict(outcomes[response.status])
        return _parse(response, (200,), _issuer_verdict)


def build_driver(driver: str, base_url: str, credentials: Credentials) -> Driver:
    """The driver a scenario names: ``reference``, a shipped dialect (``gateway``,
    ``concat_md5``, ``sync_trade``), the path of a dialect file, or a plugin registered
    under the ``trialbench.drivers`` entry point (see :mod:`harness.drivers.dialect`)."""
    if driver == "reference":
        return ReferenceDriver(base_url, credentials)
    from harness.drivers.dialect import build_dialect_driver

    built: Driver = build_dialect_driver(driver, base_url, credentials)
    return built


__all__ = ["ReferenceDriver", "ReferenceIssuer", "build_driver", "failure_from"]
