"""The ``reference`` dialect: ``shared/spec/supplier-protocol.md``, complete.

Also the issuer client (``ReferenceIssuer``), since the issuer belongs to the same spec.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

from harness import protocol
from harness.drivers.base import (
    Balance,
    CallbackEvent,
    Code,
    Credentials,
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


def _dumps(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def failure_from(response: HttpResponse) -> Failure:
    """Describe a non-success response as a :class:`Failure` with a stable ``kind``."""
    if response.status == 0:
        return Failure(response.transport_error or "no_answer", 0, "no answer")
    code, message = "", ""
    try:
        err = json.loads(response.body)["error"]
        code, message = str(err["code"]), str(err.get("message", ""))
    except (ValueError, KeyError, TypeError):
        pass
    retry_after: float | None = None
    raw = response.headers.get("retry-after") or response.headers.get("Retry-After")
    if raw is not None:
        try:
            retry_after = max(0.0, float(raw))
        except ValueError:
            retry_after = None
    kind = f"http_{response.status}" + (f"_{code}" if code else "")
    return Failure(kind, response.status, message, retry_after)


def _parse(response: HttpResponse, ok: tuple[int, ...], build: Callable[[Any], T]) -> Result[T]:
    if response.status not in ok:
        return failure_from(response)
    try:
        return build(json.loads(response.body))
    except (ValueError, KeyError, TypeError) as exc:
        return Failure("bad_response", response.status, f"{type(exc).__name__}: {exc}")


def _opt_time(value: Any) -> Any:
    return None if value is None else protocol.parse_time(value)


def parse_code(raw: Mapping[str, Any]) -> Code:
    return Code(serial=str(raw["serial"]), pin=str(raw["pin"]),
                face_value=protocol.parse_money(raw["face_value"]),
                expires_at=_opt_time(raw.get("expires_at")))


def parse_refund_body(raw: Mapping[str, Any]) -> Refund:
    return Refund(refund_id=str(raw["refund_id"]), state=str(raw["state"]),
                  amount=protocol.parse_money(raw["amount"]), reason=str(raw["reason"]),
                  requested_at=protocol.parse_time(raw["requested_at"]),
                  resolved_at=_opt_time(raw.get("resolved_at")))


def parse_order_body(raw: Mapping[str, Any]) -> Order:
    state = OrderState(raw["state"])
    if state is OrderState.UNKNOWN:
        raise ValueError("'unknown' is not a protocol state")
    refund = raw.get("refund")
    return Order(
        client_order_id=str(raw["client_order_id"]),
        supplier_order_id=str(raw["order_id"]),
        sku=str(raw["sku"]),
        quantity=int(raw["quantity"]),
        state=state,
        unit_price=protocol.parse_money(raw["unit_price"]),
        amount=protocol.parse_money(raw["amount"]),
        created_at=protocol.parse_time(raw["created_at"]),
        updated_at=protocol.parse_time(raw["updated_at"]),
        delivered_at=_opt_time(raw.get("delivered_at")),
        codes=tuple(parse_code(c) for c in raw.get("codes") or ()),
        failure_reason=raw.get("failure_reason"),
        refund=None if refund is None else parse_refund_body(refund),
    )


def _parse_product(raw: Mapping[str, Any]) -> Product:
    stock = raw.get("stock")
    return Product(sku=str(raw["sku"]), name=str(raw["name"]), kind=str(raw["kind"]),
                   face_value=protocol.parse_money(raw["face_value"]),
                   currency=str(raw["currency"]), price=protocol.parse_money(raw["price"]),
                   stock=None if stock is None else int(stock),
                   code_pattern=raw.get("code_pattern"))


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
        return _parse(response, (200,), lambda d: [_parse_product(p) for p in d["products"]])

    def balance(self) -> HttpRequest:
        return self._request("GET", "/v1/balance")

    def parse_balance(self, response: HttpResponse) -> Result[Balance]:
        return _parse(response, (200,), lambda d: Balance(protocol.parse_money(d["balance"]),
                                                          str(d["currency"])))

    # orders
    def place_order(self, order: OrderRequest) -> HttpRequest:
        payload = {"client_order_id": order.client_order_id, "sku": order.sku,
                   "quantity": order.quantity, "account": order.account,
                   "callback_url": order.callback_url}
        return self._request("POST", "/v1/orders", payload, read_only=False)

    def get_order(self, client_order_id: str) -> HttpRequest:
        return self._request("GET", f"/v1/orders/{quote(client_order_id, safe='')}")

    def parse_order(self, response: HttpResponse) -> Result[Order]:
        return _parse(response, (200, 201), lambda d: parse_order_body(d["order"]))

    # refunds
    def request_refund(self, client_order_id: str, reason: str,
                       serials: list[str] | None = None, note: str | None = None) -> HttpRequest:
        payload = {"reason": reason, "serials": serials, "note": note}
        return self._request("POST", f"/v1/orders/{quote(client_order_id, safe='')}/refund",
                             payload, read_only=False)

    def get_refund(self, client_order_id: str) -> HttpRequest:
        return self._request("GET", f"/v1/orders/{quote(client_order_id, safe='')}/refund")

    def parse_refund(self, response: HttpResponse) -> Result[Refund]:
        return _parse(response, (200, 202), lambda d: parse_refund_body(d["refund"]))

    # callbacks
    def verify_callback(self, method: str, path: str, headers: Mapping[str, str],
                        body: bytes) -> Result[CallbackEvent]:
        lower = {k.lower(): v for k, v in headers.items()}
        if not protocol.verify(self._credentials.secret, method, path,
                               lower.get("x-timestamp"), body, lower.get("x-signature")):
            return Failure("forged_callback", 401, "bad or stale callback signature")
        try:
            raw = json.loads(body)
            return CallbackEvent(event=str(raw["event"]), order=parse_order_body(raw["order"]))
        except (ValueError, KeyError, TypeError) as exc:
            return Failure("bad_callback", 400, f"{type(exc).__name__}: {exc}")


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
        return _parse(response, (200,), lambda d: IssuerVerdict(
            str(d["status"]), protocol.parse_money(d["face_value"]),
            _opt_time(d.get("expires_at"))))

    def redeem(self, serial: str, pin: str) -> HttpRequest:
        return HttpRequest("POST", f"{self.base_url}/v1/codes/{quote(serial, safe='')}/redeem",
                           {**self._headers, **_JSON}, _dumps({"pin": pin}), read_only=False)

    def parse_redeem(self, response: HttpResponse) -> Result[IssuerVerdict]:
        """``redeemed`` on success; ``already_redeemed``, ``expired``, ``not_found`` otherwise."""
        outcomes = {409: "already_redeemed", 410: "expired", 404: "not_found"}
        if response.status in outcomes:
            return IssuerVerdict(outcomes[response.status])
        return _parse(response, (200,), lambda d: IssuerVerdict(
            str(d["status"]), protocol.parse_money(d["face_value"])))


def build_driver(driver: str, base_url: str, credentials: Credentials) -> ReferenceDriver:
    """The driver registered under ``driver``."""
    if driver != "reference":
        raise ValueError(f"unknown driver {driver!r}; known: reference")
    return ReferenceDriver(base_url, credentials)


__all__ = ["ReferenceDriver", "ReferenceIssuer", "build_driver", "failure_from"]
