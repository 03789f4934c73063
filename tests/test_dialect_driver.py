"""The declarative dialect driver: file errors, requests, hostile answers, callbacks, and
the lifecycle's use of each idempotency mode, with scripted answers and no network."""

from __future__ import annotations

import hashlib
import json
import random
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest

from harness.drivers.base import Credentials, Failure, HttpResponse, OrderRequest, OrderState
from harness.drivers.dialect import (
    Dialect,
    DialectDriver,
    DialectError,
    Idempotency,
    dialect_json_schema,
    fit_request_id,
    load_dialect,
    shipped_dialects,
)
from harness.drivers.signers import aes_ecb_encrypt, md5_hex, md5_sorted_chars, md5_sorted_query
from harness.run.budget import Budget, RetryBudget
from harness.run.lifecycle import PURPOSES, Rules, Send, Steps, SupplierSide
from harness.scenario import ProductConfig

SHIPPED = shipped_dialects()
T0 = 1_800_000_000.0
GATEWAY_SECRET = "0123456789abcdef0123456789abcdef"
PRODUCT = ProductConfig(sku="card-10", face_value=Decimal("10.00"), sale_price=Decimal("10.00"))
RULES = Rules(deadline_s=5, follow_s=10, unknown_window_s=4, poll=True, poll_initial_s=0.2,
              poll_max_s=1.0, poll_factor=2.0, max_reposts=2, max_resolve_gets=3,
              first_resolve_after_s=0.25)


def driver(name: str, *, key: str = "1000", secret: str = "TESTAPPKEY0123456789abcdefABCDEF",
           **idempotency: str) -> DialectDriver:
    dialect = load_dialect(SHIPPED[name])
    if idempotency:
        dialect = dialect.model_copy(update={"idempotency": Idempotency(**idempotency)})
    return DialectDriver(dialect, f"http://127.0.0.1:9/suppliers/{name}", Credentials(key, secret),
                         clock=lambda: T0)


def ok(payload: Any, status: int = 200) -> HttpResponse:
    return HttpResponse(status, {}, json.dumps(payload).encode())


def gateway_ok(result: Any, *, secret: str = GATEWAY_SECRET) -> HttpResponse:
    """A gateway success answer, signed over its result string as the platform signs it."""
    text = json.dumps(result)
    return ok({"code": 0, "message": "ok", "result": text,
               "sign": md5_hex("".join(sorted(text)) + secret)})


def trade_ok(secret: str = "CARD-0001 1111", status: Any = None) -> HttpResponse:
    data: dict[str, Any] = {"tradeNo": "261126000000000001", "amount": 9.5, "secret": secret,
                            "stock": "199"}
    if status is not None:
        data["status"] = status
    return ok({"code": 200, "msg": "success", "data": data})


def trade_error(message: str) -> HttpResponse:
    return ok({"code": 0, "msg": message})


HTML = HttpResponse(200, {}, b"<!DOCTYPE html><html><body>SQLSTATE</body></html>")
NO_ANSWER = HttpResponse(0, {}, b"", transport_error="timeout")


# ---------------------------------------------------------------------------- the files


def test_shipped_dialects_load_and_say_what_they_are_modelled_on() -> None:
    """The three shipped dialects are valid files naming their real-world model and what
    their YAML cannot express; the schema is JSON."""
    assert set(SHIPPED) == {"gateway", "concat_md5", "sync_trade"}
    for path in SHIPPED.values():
        dialect = load_dialect(path)
        assert dialect.modelled_on and dialect.not_expressed
    assert json.loads(dialect_json_schema())["title"] == "Dialect"


@pytest.mark.parametrize(("old", "new", "key", "says"), [
    ("signer: {name: md5_sorted_query, param: sign}", "signer: {name: md5_sorted, param: sign}",
     "signer.name", "unknown signer 'md5_sorted'"),
    ('request_no: "{request_id}"}', 'request_no: "{order_no}"}',
     "operations.place_order.params.request_no", "unknown template variable {order_no}"),
    ("  lookup: supplier_order_id", "  lookup: trade_no", "idempotency.lookup", "Input should be"),
    ("money: either", "monies: either", "monies", "unknown key"),
])
def test_a_broken_dialect_file_gets_one_located_line(tmp_path: Path, old: str, new: str,
                                                     key: str, says: str) -> None:
    """Dialect errors name the file, the line and the key, like scenario errors."""
    text = SHIPPED["sync_trade"].read_text()
    assert old in text
    path = tmp_path / "mine.yaml"
    path.write_text(text.replace(old, new))
    with pytest.raises(DialectError) as caught:
        load_dialect(path)
    message = str(caught.value)
    line = next(i for i, row in enumerate(path.read_text().splitlines(), 1) if new.strip() in row
                or new.split(":")[0].strip() in row)
    assert message.startswith(f"{path}:") and f": {key}: " in message and says in message
    assert "\n" not in message and line > 0


def test_request_ids_fit_the_suppliers_rules() -> None:
    """A client order id too long or with odd characters becomes prefix + its hash: the same
    every time (a resume asks for the same order), within the length limit."""
    dialect = load_dialect(SHIPPED["sync_trade"])
    long_id = "tb1a2b3c4d-trade-0001"
    fitted = fit_request_id(long_id, dialect.request_id)
    assert len(fitted) == 19 and fitted.isalnum() and fitted == fit_request_id(long_id,
                                                                              dialect.request_id)
    assert fitted == "T" + hashlib.sha256(long_id.encode()).hexdigest()[:18]
    assert fit_request_id("ABC123", dialect.request_id) == "ABC123"


# ---------------------------------------------------------------------------- requests


def test_sync_trade_requests_are_signed_forms() -> None:
    """Form POST, sorted-query MD5 over what is sent, request_no within 19 characters,
    Accept-Language fixed."""
    d = driver("sync_trade")
    request = d.place_order(OrderRequest("tb1a2b3c4d-trade-0001", "TESTCODE0001", 1))
    fields = dict(parse_qsl(request.body.decode()))
    assert request.method == "POST" and not request.read_only
    assert request.headers["Accept-Language"] == "en"
    assert len(fields["request_no"]) <= 19 and fields["shared_code"] == "TESTCODE0001"
    assert fields["sign"] == md5_sorted_query(fields, "TESTAPPKEY0123456789abcdefABCDEF")


def test_gateway_requests_carry_biz_content_as_a_json_string() -> None:
    """One URL, method in the body, biz_content a JSON string, the sorted-chars sign."""
    d = driver("gateway", key="app", secret=GATEWAY_SECRET)
    request = d.place_order(OrderRequest("o-1", "sku-1", 2))
    body = json.loads(request.body)
    assert request.url == "http://127.0.0.1:9/suppliers/gateway"
    assert body["method"] == "fulu.order.card.add"
    assert json.loads(body["biz_content"]) == {"product_id": "sku-1", "buy_num": 2,
                                               "customer_order_no": "o-1"}
    assert body["timestamp"] == "2027-01-15 16:00:00"  # T0 in Asia/Shanghai
    assert body["sign"] == md5_sorted_chars(body, GATEWAY_SECRET)


def test_concat_md5_signs_each_operation_over_its_own_fields() -> None:
    """md5(OpenID + key + cardid + cardnum + orderid) on a GET query; the look-up unsigned."""
    d = driver("concat_md5", key="APPKEY", secret="OPENID")
    request = d.place_order(OrderRequest("tb1a2b3c4d-concat-0001", "card-10", 1,
                                         callback_url="http://cb.example/callbacks/c"))
    query = dict(parse_qsl(urlsplit(request.url).query))
    assert request.method == "GET" and query["notify_url"] == "http://cb.example/callbacks/c"
    assert query["sign"] == md5_hex("OPENID" + "APPKEY" + "card-10" + "1" + query["orderid"])
    assert 8 <= len(query["orderid"]) <= 32 and query["orderid"].isalnum()


# ---------------------------------------------------------------------------- answers


def test_gateway_answers_decrypt_codes_and_map_states() -> None:
    """result is a JSON string; cards decrypt with the secret; untreated is submitted."""
    d = driver("gateway", key="app", secret=GATEWAY_SECRET)
    d.place_order(OrderRequest("o-1", "card-10", 1))
    d.parse_catalog(gateway_ok([
        {"product_id": "card-10", "product_name": "C", "face_value": "10.00",
         "purchase_price": "9.50", "stock_status": "low", "product_type": "卡密"}]))
    card = {"card_number": aes_ecb_encrypt("CARD-1", GATEWAY_SECRET),
            "card_pwd": aes_ecb_encrypt("PIN-1", GATEWAY_SECRET),
            "card_deadline": "2027-12-31 23:59:59", "card_type": 0}
    result = {"order_id": "F1", "customer_order_no": "o-1", "product_id": "card-10",
              "buy_num": 1, "order_price": "9.50", "order_state": "success",
              "create_time": "2027-01-15 15:59:59", "finish_time": "2027-01-15 16:00:00",
              "cards": [card]}
    order = d.parse_order_for("o-1", gateway_ok(result))
    assert not isinstance(order, Failure)
    assert order.state is OrderState.SUCCESS and order.amount == Decimal("9.50")
    assert order.codes[0].serial == "CARD-1" and order.codes[0].pin == "PIN-1"
    assert order.codes[0].face_value == Decimal("10.00")
    assert order.updated_at.isoformat() == "2027-01-15T08:00:00+00:00"
    wrong_key = dict(result, cards=[dict(card, card_pwd=aes_ecb_encrypt("P", "x" * 32))])
    bad = d.parse_order_for("o-1", gateway_ok(wrong_key))
    assert isinstance(bad, Failure) and bad.kind == "bad_response"
    # an answer whose sign does not cover its result (tampered, or another secret) is refused
    forged = d.parse_order_for("o-1", gateway_ok(result, secret="y" * 32))
    assert isinstance(forged, Failure) and "sign" in forged.message


def test_sync_trade_codes_come_newline_joined_and_errors_by_message() -> None:
    """Three codes in one secret; each error message maps to its meaning and status."""
    d = driver("sync_trade")
    d.place_order(OrderRequest("o-3", "card-10", 3))
    order = d.parse_order_for("o-3", trade_ok("A-1 111\nA-2 222\nA-3 333"))
    assert not isinstance(order, Failure)
    assert [c.serial for c in order.codes] == ["A-1", "A-2", "A-3"]
    assert order.state is OrderState.SUCCESS and order.quantity == 3
    assert order.supplier_order_id == "261126000000000001"
    expected = {"库存不足": ("out_of_stock", 409), "Insufficient stock": ("out_of_stock", 409),
                "余额不足": ("insufficient_balance", 402), "密钥错误": ("bad_signature", 401),
                "The request ID already exists": ("duplicate_request", 409),
                "something new": ("unrecognised_error", 502)}
    for message, (kind, status) in expected.items():
        failure = d.parse_order_for("o-3", trade_error(message))
        assert isinstance(failure, Failure) and (failure.kind, failure.status) == (kind, status)
    # a trade still pending is looked up by the trade number learnt from its answer
    d.place_order(OrderRequest("o-4", "card-10", 1))
    pending = d.parse_order_for("o-4", trade_ok("", status=0))
    assert not isinstance(pending, Failure) and pending.state is OrderState.PROCESSING
    assert dict(parse_qsl(d.get_order("o-4").body.decode()))["tradeNo"] == "261126000000000001"


HOSTILE = {
    "html with 200": HTML,
    "not an object": ok([1, 2]),
    "amount NaN": ok({"code": 200, "data": {"tradeNo": "1", "amount": "NaN", "secret": ""}}),
    "amount negative": ok({"code": 200, "data": {"tradeNo": "1", "amount": -1, "secret": ""}}),
    "amount huge": ok({"code": 200, "data": {"tradeNo": "1", "amount": 1e300, "secret": ""}}),
    "amount a list": ok({"code": 200, "data": {"tradeNo": "1", "amount": [], "secret": ""}}),
    "secret a number": ok({"code": 200, "data": {"tradeNo": "1", "amount": 1, "secret": 5}}),
    "too many codes": ok({"code": 200, "data": {"tradeNo": "1", "amount": 1,
                                                "secret": "A 1\n" * 101}}),
    "odd code line": ok({"code": 200, "data": {"tradeNo": "1", "amount": 1, "secret": "X"}}),
    "unknown state": ok({"code": 200, "data": {"tradeNo": "1", "amount": 1, "status": 7}}),
    "nested deeply": HttpResponse(200, {}, b"[" * 100_000 + b"]" * 100_000),
    "lone surrogate": HttpResponse(200, {}, b'{"code":200,"data":{"tradeNo":"\\ud800",'
                                            b'"amount":1,"secret":""}}'),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
@pytest.mark.parametrize("dialect", sorted(SHIPPED))
def test_hostile_answers_are_failures_never_exceptions(dialect: str, name: str) -> None:
    """Whatever comes back, every parser returns a Failure (or a value), never raises."""
    d = driver(dialect, secret=GATEWAY_SECRET)
    d.place_order(OrderRequest("o-1", "card-10", 1))
    response = HOSTILE[name]
    for parse in (d.parse_catalog, d.parse_balance, d.parse_order,
                  lambda r: d.parse_order_for("o-1", r)):
        result = parse(response)
        if dialect == "sync_trade" or name in ("html with 200", "nested deeply",
                                               "not an object"):
            assert isinstance(result, Failure), (parse, result)


# ---------------------------------------------------------------------------- callbacks


def test_concat_callbacks_are_verified_and_forgeries_refused() -> None:
    """A form callback with md5(appkey + sporder_id + orderid) is news about the order; a
    wrong sign, a missing one, or another dialect (no callbacks at all) is forged."""
    d = driver("concat_md5", key="APPKEY", secret="OPENID")
    rid = dict(parse_qsl(urlsplit(d.place_order(OrderRequest("tb-x-1", "c", 1)).url).query))[
        "orderid"]
    form = {"sporder_id": "J1", "orderid": rid, "sta": "1"}
    good = urlencode({**form, "sign": md5_hex("APPKEY" + "J1" + rid)}).encode()
    event = d.verify_callback("POST", "/callbacks/concat", {}, good)
    assert not isinstance(event, Failure)
    assert event.order.client_order_id == "tb-x-1"
    assert event.order.state is OrderState.PROCESSING  # news to look up, not a final view
    assert not event.complete
    for forged in (urlencode({**form, "sign": md5_hex("WRONG" + "J1" + rid)}).encode(),
                   urlencode(form).encode(), b"\xff\xfe"):
        failure = d.verify_callback("POST", "/callbacks/concat", {}, forged)
        assert isinstance(failure, Failure) and failure.kind in ("forged_callback",
                                                                 "bad_callback")
    for other in ("gateway", "sync_trade"):
        refused = driver(other, secret=GATEWAY_SECRET).verify_callback("POST", "/c", {}, good)
        assert isinstance(refused, Failure) and refused.kind == "forged_callback"


# ---------------------------------------------------------------------------- idempotency


class Log:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def write(self, type_: str, /, **fields: Any) -> None:
        self.events.append({"type": type_, **fields})


def run(d: DialectDriver, answers: list[tuple[str, HttpResponse]]) -> tuple[str, Log,
                                                                            list[Send]]:
    """Drive one order's lifecycle through ``d`` with scripted answers and a fake clock."""
    log = Log()
    now = [T0]
    side = SupplierSide(name="s", driver=d, rules=RULES, log=log, budget=Budget(Decimal(1000)),
                        retry=RetryBudget(0.4, 10), clock=lambda: now[0], mode="trial",
                        worker="trial", rng=random.Random(1))
    life = side.new_order("tb1a2b3c4d-s-0001", PRODUCT, T0)
    steps: Steps[str] = life.steps(check_codes=False)
    sent: list[Send] = []
    script = list(answers)
    try:
        step = next(steps)
        while True:
            if isinstance(step, Send):
                assert step.purpose in PURPOSES
                sent.append(step)
                purpose, response = script.pop(0)
                assert purpose == step.purpose, (purpose, step.purpose)
                now[0] += 0.01
                step = steps.send(response)
            else:
                now[0] = max(now[0], step.until)
                step = steps.send(None)
    except StopIteration as stop:
        assert not script, f"answers left over: {script}"
        return stop.value, log, sent


def final(log: Log) -> dict[str, Any]:
    (event,) = [e for e in log.events if e["type"] == "order_final"]
    return event


def request_nos(sent: list[Send]) -> list[str]:
    return [dict(parse_qsl(s.request.body.decode()))["request_no"] for s in sent
            if s.request.method == "POST"]


def test_replay_error_without_lookup_charged_codes_unobtainable() -> None:
    """A lost trade answer, then "The request ID already exists": the order exists but its
    codes cannot be had; recorded so (unknown, reservation kept), never bought again."""
    state, log, sent = run(driver("sync_trade"), [
        ("place", HTML), ("resolve", trade_error("The request ID already exists"))])
    assert state == "unknown" and final(log)["resolution"] == "charged_codes_unobtainable"
    nos = request_nos(sent)
    assert len(nos) == 2 and len(set(nos)) == 1  # the same request id, twice, never a new one


def test_replay_error_a_probe_that_buys_means_the_first_never_arrived() -> None:
    """No answer, then a success for the same request id: bought once, delivered."""
    state, _log, sent = run(driver("sync_trade"), [("place", NO_ANSWER),
                                                  ("resolve", trade_ok())])
    assert state == "success" and len(set(request_nos(sent))) == 1


def test_replay_error_cannot_tell_after_out_of_stock() -> None:
    """The repeat check runs after the stock check: out of stock tells nothing."""
    state, log, _ = run(driver("sync_trade"), [("place", HTML),
                                               ("resolve", trade_error("库存不足"))])
    assert state == "unknown" and final(log)["resolution"] == "unresolvable:out_of_stock"


def test_replay_original_refusal_proves_nothing_was_bought() -> None:
    """Where a replay returns the original, a refusal of the replay means no order."""
    d = driver("sync_trade", replay="original", lookup="supplier_order_id")
    state, log, _ = run(d, [("place", NO_ANSWER), ("resolve", trade_error("库存不足"))])
    assert state == "failed" and final(log)["resolution"] == "refused:out_of_stock"


def test_no_key_is_never_sent_again() -> None:
    """Without an idempotency key a re-send could buy twice: one POST, then unknown."""
    d = driver("sync_trade", replay="none", lookup="supplier_order_id")
    state, log, sent = run(d, [("place", HTML)])
    assert state == "unknown" and final(log)["resolution"] == "unresolvable_no_key"
    assert len(sent) == 1


def test_duplicate_means_accepted_then_asked_by_client_id() -> None:
    """The gateway's "duplicate" answer to a first POST: the id was taken, maybe by us, so
    it is asked about by the merchant's id (not refused, not re-bought)."""
    d = driver("gateway", key="app", secret=GATEWAY_SECRET)
    result = {"order_id": "F1", "customer_order_no": "tb1a2b3c4d-s-0001",
              "product_id": "card-10", "buy_num": 1, "order_price": "9.50",
              "order_state": "failed", "create_time": "2027-01-15 15:59:59",
              "finish_time": "2027-01-15 16:00:00"}
    state, _log, sent = run(d, [("place", ok({"code": 2004, "message": "duplicate"})),
                               ("resolve", gateway_ok(result))])
    assert state == "failed" and [s.purpose for s in sent] == ["place", "resolve"]
    assert json.loads(sent[1].request.body)["method"] == "fulu.order.info.get"


def test_dialect_model_is_frozen() -> None:
    """A loaded dialect cannot be changed by accident (model_copy makes a variant)."""
    dialect = load_dialect(SHIPPED["gateway"])
    with pytest.raises(Exception):  # noqa: B017 (pydantic's frozen-instance error)
        dialect.name = "x"  # type: ignore[misc]
    assert isinstance(dialect, Dialect)


def test_resume_through_a_dialect_that_looks_up_only_by_trade_number() -> None:
    """`trialbench resume` of an order sent before an interruption, in a new process (the
    driver knows nothing of it): the same request id is re-sent once, and "already exists"
    records it as charged, codes unobtainable; a dialect with look-up by id asks instead."""
    for name, answers, expected in (
            ("sync_trade", [("resolve", trade_error("The request ID already exists"))],
             ("unknown", "charged_codes_unobtainable")),
            ("sync_trade", [("resolve", trade_ok())], ("success", "reconciled"))):
        d = driver(name)
        log = Log()
        now = [T0 + 60]
        side = SupplierSide(name="s", driver=d, rules=RULES, log=log,
                            budget=Budget(Decimal(1000)), retry=RetryBudget(0.4, 10),
                            clock=lambda now=now: now[0],  # type: ignore[misc]
                            mode="trial", worker="trial", rng=random.Random(1))
        life = side.new_order("tb1a2b3c4d-s-0001", PRODUCT, T0)
        steps = life.resume(T0, may_place=True, check_codes=False)
        script = list(answers)
        try:
            step = next(steps)
            while True:
                if isinstance(step, Send):
                    assert step.request.method == "POST"
                    purpose, response = script.pop(0)
                    assert purpose == step.purpose
                    step = steps.send(response)
                else:
                    now[0] = max(now[0], step.until)
                    step = steps.send(None)
        except StopIteration as stop:
            state = stop.value
        assert (state, final(log)["resolution"]) == expected


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_forged_callbacks_are_answered_401_and_counted_in_every_dialect(name: str) -> None:
    """Through the lifecycle's callback entry: a forgery (a wrong sign, or any callback to a
    dialect that sends none) is answered 401, logged as forged and counted; a genuine Juhe
    callback about a known order is taken (as news)."""
    counted: list[str] = []
    log = Log()
    d = driver(name, key="APPKEY", secret=GATEWAY_SECRET)
    side = SupplierSide(name="s", driver=d, rules=RULES, log=log, budget=Budget(Decimal(10)),
                        retry=RetryBudget(0.4, 10), clock=lambda: T0, mode="trial",
                        worker="trial", tally=lambda _s, key, _v: counted.append(key))
    life = side.new_order("tb-cb-0001", PRODUCT, T0)
    rid = d.request_id(life.client_order_id)
    form = {"sporder_id": "J1", "orderid": rid, "sta": "1"}
    forged = urlencode({**form, "sign": md5_hex("WRONG" + "J1" + rid)}).encode()
    assert side.on_callback("POST", "/callbacks/s", {}, forged) == 401
    assert counted == ["forged_callbacks"]
    assert [e["verdict"] for e in log.events if e["type"] == "callback_received"] == ["forged"]
    genuine = urlencode({**form, "sign": md5_hex("APPKEY" + "J1" + rid)}).encode()
    assert side.on_callback("POST", "/callbacks/s", {}, genuine) == (
        200 if name == "concat_md5" else 401)


def test_a_dialect_with_oauth2_sends_the_cached_bearer_token() -> None:
    """A dialect naming the OAuth2 authenticator: the token request goes to its token path
    with the credentials as client id and secret; once accepted, every request carries
    the bearer token until it nearly expires."""
    from harness.drivers.dialect import Authenticator

    dialect = load_dialect(SHIPPED["sync_trade"]).model_copy(update={
        "authenticator": Authenticator(name="oauth2_client_credentials",
                                       token_path="/oauth/token")})
    d = DialectDriver(dialect, "http://127.0.0.1:9/s", Credentials("1000", "s3cret"),
                      clock=lambda: T0)
    auth = d.authenticator
    assert auth is not None and auth.needs_token(T0)
    assert auth.token_request().url == "http://127.0.0.1:9/s/oauth/token"
    assert "Authorization" not in d.balance().headers
    auth.accept(ok({"access_token": "tok", "expires_in": 3600}), now=T0)
    assert d.balance().headers["Authorization"] == "Bearer tok"
    assert not auth.needs_token(T0 + 3000) and auth.needs_token(T0 + 3580)


def test_the_shipped_dialect_schema_is_current() -> None:
    """harness/drivers/dialects/dialect.schema.json is what `trialbench dialects --schema`
    prints (regenerate it when the model changes)."""
    shipped = Path(SHIPPED["gateway"]).parent / "dialect.schema.json"
    assert shipped.read_text(encoding="utf-8") == dialect_json_schema(), \
        "regenerate: trialbench dialects --schema > " + str(shipped)


def _gateway_order(**changes: Any) -> dict[str, Any]:
    return {"order_id": "F1", "customer_order_no": "o-1", "product_id": "card-10",
            "buy_num": 1, "order_price": "9.50", "order_state": "processing",
            "create_time": "2027-01-15 15:59:59", "finish_time": "", **changes}


def _concat_order(**changes: Any) -> HttpResponse:
    result = {"uorderid": "o-1", "sporder_id": "J1", "cardid": "card-10", "cardnum": "1",
              "ordercash": "9.50", "game_state": "0", **changes}
    return ok({"reason": "ok", "result": result, "error_code": 0})


DIALECT_HOSTILE: dict[str, list[HttpResponse]] = {
    "gateway": [
        ok({"code": 0, "result": {"not": "a string"}, "sign": ""}),
        gateway_ok(_gateway_order(order_price="NaN")),
        gateway_ok(_gateway_order(order_price=-3)),
        gateway_ok(_gateway_order(order_state="shipped")),
        gateway_ok(_gateway_order(buy_num=True)),
        gateway_ok(_gateway_order(create_time="yesterday")),
        gateway_ok(_gateway_order(order_state="success", cards="CARD")),
        gateway_ok(_gateway_order(order_state="success", cards=[{"card_number": 5}])),
        gateway_ok(_gateway_order(customer_order_no="someone-else")),
        HttpResponse(200, {}, b"<html><body>502 Bad Gateway</body></html>"),
    ],
    "concat_md5": [
        _concat_order(ordercash="1e999"),
        _concat_order(ordercash=None, game_state=None),
        _concat_order(game_state="5"),
        _concat_order(cardnum="101"),
        _concat_order(game_state="1", cards=[{"cardno": "A", "cardpws": "1",
                                               "expiretime": "2027-02-30 00:00:00"}]),
        _concat_order(uorderid=["o-1"]),
        ok({"reason": "ok", "result": [], "error_code": 0}),
        HttpResponse(200, {}, b"\xff\xfe\x00"),
    ],
}


@pytest.mark.parametrize(("dialect", "index"), [(d, i) for d, answers in
                                                 DIALECT_HOSTILE.items()
                                                 for i in range(len(answers))])
def test_hostile_answers_in_each_dialects_own_envelope(dialect: str, index: int) -> None:
    """Wrong types, NaN or negative or huge money, unknown states, bad times, codes that
    are not a list, an answer about another order, HTML with 200: a bad_response (or
    another Failure), never an exception and never an order."""
    d = driver(dialect, key="app", secret=GATEWAY_SECRET)
    d.place_order(OrderRequest("o-1", "card-10", 1))
    result = d.parse_order_for("o-1", DIALECT_HOSTILE[dialect][index])
    assert isinstance(result, Failure), result
