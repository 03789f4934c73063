"""The simulator against the reference protocol, clause by clause (loopback only)."""

from __future__ import annotations

import re
import time
from decimal import Decimal
from typing import Any

import httpx
import pytest

from harness.protocol import now_ms, parse_time, signed_headers
from harness.simulator.process import SimulatorProcess

TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
MONEY_RE = re.compile(r"^-?\d+\.\d\d$")


def test_products_and_balance_shapes(client: Any) -> None:
    """GET products and balance answer the documented fields, money as 2-place strings."""
    good = client("good")
    products = good.request("GET", "/v1/products").json()["products"]
    by_sku = {p["sku"]: p for p in products}
    card = by_sku["card-10"]
    assert set(card) == {"sku", "name", "kind", "face_value", "currency", "price", "stock",
                         "code_pattern"}
    assert card["face_value"] == "10.00" and card["price"] == "9.50" and card["stock"] is None
    assert re.match(card["code_pattern"], "GOOD-1234-5678-9012")
    assert by_sku["topup-50"]["kind"] == "direct" and by_sku["topup-50"]["code_pattern"] is None
    assert by_sku["over"]["stock"] == 5  # 2 real + 3 oversold
    balance = good.request("GET", "/v1/balance").json()
    assert balance == {"balance": "100000.00", "currency": "CNY"}


def test_signature_accepted_with_query(client: Any) -> None:
    """The signed path includes the query string exactly as sent."""
    good = client("good")
    assert good.request("GET", "/v1/products?lang=en").status_code == 200
    full = good.base_path + "/v1/products"
    signed_without_query = signed_headers(good.api_key, good.secret, "GET", full, b"")
    assert good.http.get(full + "?lang=en", headers=signed_without_query).status_code == 401


def test_signature_covers_body(client: Any) -> None:
    """A body changed after signing is 401."""
    good = client("good")
    full = good.base_path + "/v1/orders"
    signed = signed_headers(good.api_key, good.secret, "POST", full, b'{"a":1}')
    body = b'{"client_order_id":"sb-1","sku":"card-10","quantity":1}'
    assert good.http.post(full, content=body, headers=signed).status_code == 401


@pytest.mark.parametrize("case", ["wrong_secret", "unknown_key", "stale", "future", "missing"])
def test_bad_auth_is_401(client: Any, case: str) -> None:
    """Wrong signature, unknown key, timestamp beyond 300 s, or no headers: 401 unauthorized."""
    good = client("good")
    if case == "wrong_secret":
        response = good.request("GET", "/v1/balance", secret="nope")
    elif case == "unknown_key":
        response = good.request("GET", "/v1/balance", api_key="who")
    elif case == "stale":
        response = good.request("GET", "/v1/balance", timestamp_ms=now_ms() - 301_000)
    elif case == "future":
        response = good.request("GET", "/v1/balance", timestamp_ms=now_ms() + 301_000)
    else:
        response = good.http.get(good.base_path + "/v1/balance")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


def test_timestamp_inside_window_accepted(client: Any) -> None:
    """A timestamp 290 s old is still inside the window."""
    assert client("good").request("GET", "/v1/balance",
                                  timestamp_ms=now_ms() - 290_000).status_code == 200


def test_other_suppliers_key_is_401(client: Any) -> None:
    """A key valid at one supplier is unknown at another."""
    poor = client("poor")
    response = poor.request("GET", "/v1/balance", api_key="good-key", secret="good-secret")
    assert response.status_code == 401


@pytest.mark.parametrize("body", [
    {"client_order_id": "", "sku": "card-10", "quantity": 1},
    {"client_order_id": "has space", "sku": "card-10", "quantity": 1},
    {"client_order_id": "x" * 65, "sku": "card-10", "quantity": 1},
    {"client_order_id": "ok-1", "sku": "card-10", "quantity": 0},
    {"client_order_id": "ok-1", "sku": "card-10", "quantity": 101},
    {"client_order_id": "ok-1", "sku": "card-10", "quantity": "1"},
    {"client_order_id": "ok-1", "sku": "card-10", "quantity": True},
    {"client_order_id": "ok-1", "sku": "card-10", "quantity": 1, "account": "u1"},
    {"client_order_id": "ok-1", "sku": "topup-50", "quantity": 1, "account": None},
    {"client_order_id": "ok-1", "sku": "card-10", "quantity": 1, "callback_url": 5},
    {"client_order_id": "ok-1", "quantity": 1},
    ["not", "an", "object"],
])
def test_invalid_order_is_400(client: Any, body: Any) -> None:
    """Every field rule of POST /v1/orders is enforced with 400 invalid_request."""
    response = client("good").request("POST", "/v1/orders", body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"


def test_malformed_json_is_400(client: Any) -> None:
    """A body that is not JSON is 400 invalid_request."""
    response = client("good").request("POST", "/v1/orders", raw=b"{not json")
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_request"


def test_max_id_and_quantity_accepted(client: Any) -> None:
    """The rule's edges are valid: a 64-character id and quantity 100."""
    response = client("good").order("A_z-9" * 12 + "abcd", quantity=100)
    assert response.status_code == 201


def test_order_error_codes(client: Any) -> None:
    """unknown_sku 404, out_of_stock 409, insufficient_balance 402, order_not_found 404."""
    good, poor = client("good"), client("poor")
    r = good.order("e-1", sku="nope")
    assert (r.status_code, r.json()["error"]["code"]) == (404, "unknown_sku")
    r = good.order("e-2", sku="few", quantity=4)
    assert (r.status_code, r.json()["error"]["code"]) == (409, "out_of_stock")
    assert good.order("e-3", sku="few", quantity=3).status_code == 201
    r = good.order("e-4", sku="few", quantity=1)
    assert (r.status_code, r.json()["error"]["code"]) == (409, "out_of_stock")
    assert poor.order("e-5", quantity=2).status_code == 201  # 19.00 of 20.00
    r = poor.order("e-6", quantity=1)
    assert (r.status_code, r.json()["error"]["code"]) == (402, "insufficient_balance")
    r = good.request("GET", "/v1/orders/never-placed")
    assert (r.status_code, r.json()["error"]["code"]) == (404, "order_not_found")


def test_replay_returns_original_and_charges_nothing(client: Any) -> None:
    """Same client_order_id and body: 200 with the original order, nothing charged again."""
    good = client("good")
    first = good.order("rp-1", quantity=2)
    assert first.status_code == 201
    balance = good.balance()
    order = good.wait_final("rp-1")
    again = good.order("rp-1", quantity=2)
    assert again.status_code == 200
    assert again.json()["order"] == order
    assert good.balance() == balance == "99981.00"


def test_replay_with_different_body_is_409(client: Any) -> None:
    """Same client_order_id with another body: 409 duplicate_order."""
    good = client("good")
    assert good.order("dup-1", quantity=1).status_code == 201
    r = good.order("dup-1", quantity=2)
    assert (r.status_code, r.json()["error"]["code"]) == (409, "duplicate_order")


def test_order_fields_and_state_machine(client: Any) -> None:
    """An order moves submitted → processing → success with the documented fields."""
    good = client("good")
    seen: list[str] = []
    for i in range(8):  # half are synchronous; find an asynchronous one
        created = good.order(f"sm-{i}", quantity=2).json()["order"]
        if created["state"] == "submitted":
            break
    coid = created["client_order_id"]
    assert created["codes"] == [] and created["delivered_at"] is None
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        state = good.request("GET", f"/v1/orders/{coid}").json()["order"]["state"]
        if not seen or seen[-1] != state:
            seen.append(state)
        if state == "success":
            break
        time.sleep(0.002)
    assert seen[-1] == "success"
    assert set(seen) <= {"submitted", "processing", "success"}
    assert seen.index("success") == len(seen) - 1
    order = good.wait_final(coid)
    assert set(order) == {"client_order_id", "order_id", "sku", "quantity", "account",
                          "unit_price", "amount", "state", "created_at", "updated_at",
                          "delivered_at", "codes", "failure_reason", "refund"}
    assert order["amount"] == "19.00" and order["unit_price"] == "9.50"
    for key in ("created_at", "updated_at", "delivered_at"):
        assert TIME_RE.match(order[key])
    assert parse_time(order["updated_at"]) >= parse_time(order["created_at"])
    assert len(order["codes"]) == 2
    for code in order["codes"]:
        assert set(code) == {"serial", "pin", "face_value", "expires_at"}
        assert re.match(r"^GOOD-[0-9]{4}-[0-9]{4}-[0-9]{4}$", code["serial"])


def test_direct_order_has_no_codes(client: Any) -> None:
    """A direct top-up needs an account and delivers no codes."""
    good = client("good")
    assert good.order("d-1", sku="topup-50", account="138-0000-0000").status_code == 201
    order = good.wait_final("d-1")
    assert order["state"] == "success" and order["codes"] == []
    assert order["account"] == "138-0000-0000" and order["delivered_at"] is not None


def test_oversold_order_is_delivered_partially(client: Any) -> None:
    """Beyond real stock the order is accepted, then partial; amount covers only delivered."""
    good = client("good")
    assert good.order("ov-1", sku="over", quantity=4).status_code == 201
    order = good.wait_final("ov-1")
    assert order["state"] == "partial" and len(order["codes"]) == 2
    assert order["amount"] == "8.00"


def test_refund_instant_whole_order(client: Any) -> None:
    """A whole-order refund completes, credits the balance and makes the order refunded."""
    good = client("good")
    good.order("rf-1", quantity=2)
    good.wait_final("rf-1")
    assert good.balance() == "99981.00"
    r = good.request("POST", "/v1/orders/rf-1/refund",
                     {"reason": "unused", "serials": None, "note": "test"})
    assert r.status_code == 202
    refund = r.json()["refund"]
    assert set(refund) == {"refund_id", "state", "amount", "reason", "requested_at",
                           "resolved_at"}
    assert refund["amount"] == "19.00" and refund["reason"] == "unused"
    got = good.request("GET", "/v1/orders/rf-1/refund").json()["refund"]
    assert got["state"] == "completed" and TIME_RE.match(got["resolved_at"])
    order = good.request("GET", "/v1/orders/rf-1").json()["order"]
    assert order["state"] == "refunded" and order["amount"] == "0.00"
    assert good.balance() == "100000.00"


def test_refund_of_some_serials(client: Any) -> None:
    """Refunding some serials returns their price; the order keeps its state."""
    good = client("good")
    good.order("rs-1", quantity=3)
    order = good.wait_final("rs-1")
    serial = order["codes"][0]["serial"]
    r = good.request("POST", "/v1/orders/rs-1/refund",
                     {"reason": "invalid_code", "serials": [serial], "note": None})
    assert r.status_code == 202 and r.json()["refund"]["amount"] == "9.50"
    order = good.request("GET", "/v1/orders/rs-1").json()["order"]
    assert order["state"] == "success" and order["amount"] == "19.00"
    bad = good.request("POST", "/v1/orders/rs-1/refund",
                       {"reason": "other", "serials": None, "note": None})
    assert (bad.status_code, bad.json()["error"]["code"]) == (409, "refund_exists")


def test_refund_errors(client: Any) -> None:
    """Refund 404 order_not_found, 404 no_refund, 400 bad reason or serials."""
    good = client("good")
    body = {"reason": "unused", "serials": None, "note": None}
    r = good.request("POST", "/v1/orders/none/refund", body)
    assert (r.status_code, r.json()["error"]["code"]) == (404, "order_not_found")
    good.order("re-1")
    good.wait_final("re-1")
    r = good.request("GET", "/v1/orders/re-1/refund")
    assert (r.status_code, r.json()["error"]["code"]) == (404, "no_refund")
    r = good.request("POST", "/v1/orders/re-1/refund", {**body, "reason": "because"})
    assert r.status_code == 400
    r = good.request("POST", "/v1/orders/re-1/refund", {**body, "serials": ["NOT-MINE"]})
    assert r.status_code == 400


def test_refund_not_allowed_before_delivery(client: Any) -> None:
    """A refund on an order that is not delivered is 409 refund_not_allowed."""
    tiny = client("tiny")  # 2 s delivery: still in flight
    assert tiny.order("nd-1").status_code == 201
    r = tiny.request("POST", "/v1/orders/nd-1/refund",
                     {"reason": "not_delivered", "serials": None, "note": None})
    assert (r.status_code, r.json()["error"]["code"]) == (409, "refund_not_allowed")


def test_rate_limit_answers_429_with_retry_after(client: Any) -> None:
    """Beyond the token bucket, requests get 429 rate_limited with Retry-After seconds."""
    limited = client("limited")
    statuses = [limited.request("GET", "/v1/balance") for _ in range(12)]
    codes = [r.status_code for r in statuses]
    assert codes[:5] == [200] * 5 and 429 in codes
    rejected = next(r for r in statuses if r.status_code == 429)
    assert rejected.json()["error"]["code"] == "rate_limited"
    assert int(rejected.headers["retry-after"]) >= 1


@pytest.mark.serial  # times the simulator's slowdown: run alone
def test_capacity_answers_503_and_slows(client: Any, sim: SimulatorProcess) -> None:
    """Beyond max orders in flight POST answers 503; responses slow as orders pile up."""
    tiny = client("tiny")
    started = time.monotonic()
    first = tiny.order("cap-0")
    first_s = time.monotonic() - started
    results = [tiny.order(f"cap-{i}") for i in range(1, 8)]
    codes = [first.status_code] + [r.status_code for r in results]
    assert codes[:5] == [201] * 5 and codes[5:] == [503] * 3
    assert results[-1].json()["error"]["code"] == "overloaded"
    started = time.monotonic()
    tiny.request("GET", "/v1/balance")
    assert time.monotonic() - started > first_s + 0.03  # 5 in flight, 10 ms each
    assert sim.truth()["suppliers"]["tiny"]["rejected_503"] == 3


def test_issuer_check_and_redeem(client: Any, sim: SimulatorProcess) -> None:
    """Issuer: check is non-consuming; redeem 200, then 409; wrong pin or serial 404; key 401."""
    good = client("good")
    good.order("is-1")
    code = good.wait_final("is-1")["codes"][0]
    with httpx.Client(base_url=sim.issuer_url, trust_env=False,
                      headers={"X-Api-Key": "test-issuer-key"}) as issuer:
        path = f"/v1/codes/{code['serial']}"
        for _ in range(2):
            r = issuer.get(path, params={"pin": code["pin"]})
            assert r.status_code == 200
            assert r.json() == {"serial": code["serial"], "status": "active",
                                "face_value": "10.00", "expires_at": code["expires_at"]}
        assert issuer.get(path, params={"pin": "0"}).status_code == 404
        assert issuer.get("/v1/codes/NOPE-0000", params={"pin": "1"}).json()["error"][
            "code"] == "not_found"
        assert issuer.post(path + "/redeem", json={"pin": "0"}).status_code == 404
        r = issuer.post(path + "/redeem", json={"pin": code["pin"]})
        assert r.status_code == 200
        assert r.json() == {"status": "redeemed", "face_value": "10.00"}
        r = issuer.post(path + "/redeem", json={"pin": code["pin"]})
        assert (r.status_code, r.json()["error"]["code"]) == (409, "already_redeemed")
        assert issuer.get(path, params={"pin": code["pin"]}).json()["status"] == "redeemed"
        r = issuer.get(path, params={"pin": code["pin"]}, headers={"X-Api-Key": "bad"})
        assert r.status_code == 401


def test_issuer_expired_is_410(client: Any, sim: SimulatorProcess) -> None:
    """A code past its expiry reads expired and redeeming it is 410 expired."""
    stale = client("stale")
    code = stale.order("ex-1").json()["order"]["codes"][0]
    time.sleep(0.3)
    with httpx.Client(base_url=sim.issuer_url, trust_env=False,
                      headers={"X-Api-Key": "test-issuer-key"}) as issuer:
        path = f"/v1/codes/{code['serial']}"
        assert issuer.get(path, params={"pin": code["pin"]}).json()["status"] == "expired"
        r = issuer.post(path + "/redeem", json={"pin": code["pin"]})
        assert (r.status_code, r.json()["error"]["code"]) == (410, "expired")


def test_unknown_paths_and_suppliers_are_404(client: Any, sim: SimulatorProcess) -> None:
    """Unknown suppliers and endpoints answer 404 in the error envelope."""
    with httpx.Client(base_url=sim.url, trust_env=False) as http:
        r = http.get("/suppliers/ghost/v1/products")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        assert http.get("/elsewhere").status_code == 404
    assert client("good").request("GET", "/v1/nothing").status_code == 404


def test_truth_and_reset(client: Any, sim: SimulatorProcess) -> None:
    """Truth reports orders and money; reset restores the initial state."""
    good = client("good")
    good.order("tr-1", quantity=2)
    good.order("tr-2")
    good.wait_final("tr-1")
    good.wait_final("tr-2")
    truth = sim.truth()["suppliers"]["good"]
    assert truth["orders_created"] == 2
    assert truth["client_order_ids"] == ["tr-1", "tr-2"]
    assert truth["orders_by_state"] == {"success": 2}
    assert truth["money_charged"] == "28.50" and truth["balance"] == "99971.50"
    assert truth["codes_issued"]["valid"] == 3
    sim.reset()
    truth = sim.truth()["suppliers"]["good"]
    assert truth["orders_created"] == 0 and truth["balance"] == "100000.00"
    assert good.request("GET", "/v1/orders/tr-1").status_code == 404


def test_money_reconciles(client: Any, sim: SimulatorProcess) -> None:
    """initial − balance = money kept + hidden fees, after failures, partials and refunds."""
    faulty = client("faulty")
    for i in range(40):
        faulty.order(f"mr-{i}", quantity=2)
    for i in range(40):
        order = faulty.wait_final(f"mr-{i}")
        if order["state"] in ("success", "partial") and i % 2:
            faulty.request("POST", f"/v1/orders/mr-{i}/refund",
                           {"reason": "unused", "serials": None, "note": None})
    time.sleep(0.4)
    t = sim.truth()["suppliers"]["faulty"]
    spent = Decimal(t["initial_balance"]) - Decimal(t["balance"])
    assert spent == Decimal(t["money_charged"]) + Decimal(t["hidden_fees_taken"])
    assert Decimal(t["hidden_fees_taken"]) == Decimal("0.25") * 40
    shown = Decimal(t["orders_amount_shown"])
    assert shown == Decimal(t["money_charged"]) - Decimal(t["refunds"]["phantom_amount"])
