"""Dialect adapters: the simulated suppliers speaking the dialects of the field.

A supplier whose profile says ``dialect: gateway`` (or ``concat_md5``, ``sync_trade``) is
served at the same ``/suppliers/<name>`` base path through an adapter in front of the
same :class:`~harness.simulator.engine.Supplier`: the adapter checks the dialect's
signature, turns the request into the engine's operation, and the engine's answer into
the dialect's. So every fault a profile plants (latency, failures, unknown outcomes,
not-found windows, bad codes, overselling, hidden fees, rate limits, capacity, callback
faults) works through every dialect.

Written by hand from ``shared/spec/dialects.md``, apart from the YAML files the harness's
:class:`~harness.drivers.dialect.DialectDriver` reads: a test that the two agree checks
both. Where the real API does not say how it shows a fault, the adapter's choice is
noted on the adapter (e.g. a synchronous trade's unknown outcome is an HTML page with 200).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode
from zoneinfo import ZoneInfo

from harness.drivers.signers import (
    aes_ecb_encrypt,
    md5_hex,
    md5_sorted_chars,
    md5_sorted_query,
)
from harness.protocol import format_money
from harness.simulator.engine import Order, Reply, Supplier, dumps

_SHANGHAI = ZoneInfo("Asia/Shanghai")
_JSON_TYPE = (b"content-type", b"application/json")
_HTML_TYPE = (b"content-type", b"text/html; charset=utf-8")
SYNC_HOLD_S = 2.0
"""Longest a synchronous trade waits for the engine to finish the order before it answers
with the order still pending (``status`` 0): shorter than a client's request timeout, so
a slow channel shows as a slow delivery, not as a lost answer."""


def _local(epoch: float | None) -> str:
    if epoch is None:
        return ""
    return datetime.fromtimestamp(epoch, _SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")


def _engine_error(reply: Reply) -> tuple[int, str]:
    """The status and error code of an engine reply (``""`` for success)."""
    status, body, _ = reply
    if status < 300:
        return status, ""
    try:
        return status, str(json.loads(body)["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return status, "internal_error"


def _place_body(rid: str, sku: str, quantity: int, account: str | None,
                callback_url: str | None) -> bytes:
    return dumps({"client_order_id": rid, "sku": sku, "quantity": quantity,
                  "account": account, "callback_url": callback_url})


class Adapter:
    """One dialect's server side."""

    name = ""

    async def handle(self, supplier: Supplier, method: str, path: str, query: bytes,
                     headers: Mapping[bytes, bytes], body: bytes) -> Reply:
        raise NotImplementedError

    def callback(self, supplier: Supplier, body: bytes) -> tuple[bytes, dict[str, str]] | None:
        """The dialect's callback for an engine callback body; None: none is sent."""
        return None


# ---------------------------------------------------------------------------- gateway


GATEWAY_STATES = {"submitted": "untreated", "processing": "processing", "success": "success",
                  "partial": "success", "failed": "failed", "refunded": "success"}
_GATEWAY_ERRORS = {"bad_signature": 1001, "unknown_merchant": 1002, "invalid_request": 1003,
                   "rate_limited": 1010, "server_busy": 1011, "unknown_product": 2001,
                   "out_of_stock": 2002, "insufficient_balance": 2003,
                   "duplicate_request": 2004, "not_found": 2005}
_ENGINE_TO_KIND = {"invalid_request": "invalid_request", "unknown_sku": "unknown_product",
                   "out_of_stock": "out_of_stock", "insufficient_balance": "insufficient_balance",
                   "duplicate_order": "duplicate_request", "overloaded": "server_busy",
                   "order_not_found": "not_found", "rate_limited": "rate_limited"}


class GatewayAdapter(Adapter):
    """Fulu v2 style: one URL, ``method``, ``biz_content`` JSON string, sorted-chars MD5,
    ``result`` a JSON string, codes AES-256-ECB with the secret (32 bytes), base64.
    An unknown outcome is an HTTP 500 (the platform's own gateway error)."""

    name = "gateway"

    def _answer(self, supplier: Supplier, result: Any) -> Reply:
        text = json.dumps(result, separators=(",", ":"), ensure_ascii=False)
        return 200, dumps({"code": 0, "message": "成功", "result": text,
                           "sign": md5_hex("".join(sorted(text)) + supplier.profile.secret)}), \
            [_JSON_TYPE]

    def _error(self, kind: str, message: str = "") -> Reply:
        return 200, dumps({"code": _GATEWAY_ERRORS[kind], "message": message or kind,
                           "result": "", "sign": ""}), [_JSON_TYPE]

    def _order(self, supplier: Supplier, order: Order, *, with_cards: bool) -> dict[str, Any]:
        state = GATEWAY_STATES[order.state]
        result: dict[str, Any] = {
            "order_id": order.order_id, "customer_order_no": order.client_order_id,
            "product_id": order.product.sku, "product_name": order.product.name,
            "buy_num": order.quantity, "order_type": 1 if order.product.kind == "card" else 2,
            "order_price": format_money(order.amount), "order_state": state,
            "create_time": _local(order.created_at),
            "finish_time": _local(order.updated_at) if order.state not in
            ("submitted", "processing") else "",
            "charge_account": order.account or ""}
        if with_cards and state == "success" and order.codes:
            secret = supplier.profile.secret
            result["cards"] = [{"card_number": aes_ecb_encrypt(c.serial, secret),
                                "card_pwd": aes_ecb_encrypt(c.pin, secret),
                                "card_deadline": _local(c.expires_at), "card_type": 0}
                               for c in order.codes]
        return result

    async def handle(self, supplier: Supplier, method: str, path: str, query: bytes,
                     headers: Mapping[bytes, bytes], body: bytes) -> Reply:
        if method != "POST" or path:
            return self._error("invalid_request", "POST JSON to the gateway URL")
        try:
            params = json.loads(body)
            if not isinstance(params, dict):
                raise ValueError
            biz = json.loads(params.get("biz_content") or "{}")
            if not isinstance(biz, dict):
                raise ValueError
        except (ValueError, TypeError):
            return self._error("invalid_request", "body and biz_content must be JSON objects")
        if params.get("app_key") != supplier.profile.api_key:
            supplier.counters.unauthorized_401 += 1
            return self._error("unknown_merchant", "app_key 不存在")
        given = params.get("sign")
        if not isinstance(given, str) or not hmac.compare_digest(
                md5_sorted_chars(params, supplier.profile.secret), given.lower()):
            supplier.counters.unauthorized_401 += 1
            return self._error("bad_signature", "签名错误")
        operation = params.get("method")
        if operation == "fulu.goods.list.get":
            return self._answer(supplier, [
                {"product_id": p.sku, "product_name": p.name,
                 "product_type": "卡密" if p.kind == "card" else "直充",
                 "face_value": format_money(p.face_value),
                 "purchase_price": format_money(p.price),
                 "stock_status": "enough" if supplier.stock[p.sku] is None else
                 ("out" if supplier.stock[p.sku] == 0 else
                  "low" if (supplier.stock[p.sku] or 0) < 10 else "enough")}
                for p in supplier.profile.products])
        if operation == "fulu.user.info.get":
            return self._answer(supplier, {"name": supplier.name,
                                           "balance": format_money(supplier.balance)})
        if operation in ("fulu.order.card.add", "fulu.order.direct.add"):
            product = supplier.products.get(str(biz.get("product_id", "")))
            if product is not None and (product.kind == "direct") != (
                    operation == "fulu.order.direct.add"):
                return self._error("invalid_request", f"{operation} is not for this product")
            rid = biz.get("customer_order_no")
            if not isinstance(rid, str):
                return self._error("invalid_request", "customer_order_no is required")
            if rid in supplier.orders:
                return self._error("duplicate_request", "订单号重复")
            quantity = biz.get("buy_num")
            reply, order = supplier.place_order(_place_body(
                rid, str(biz.get("product_id", "")), quantity if isinstance(quantity, int)
                else -1, biz.get("charge_account") or None, None))
            status, code = _engine_error(reply)
            if status >= 500 and code == "internal_error":
                return 500, b"Internal Server Error", [_HTML_TYPE]
            if code:
                return self._error(_ENGINE_TO_KIND.get(code, "invalid_request"), code)
            assert order is not None
            placed = self._order(supplier, order, with_cards=False)
            placed["order_state"] = "untreated" if order.state != "failed" else "failed"
            return self._answer(supplier, placed)
        if operation == "fulu.order.info.get":
            rid = biz.get("customer_order_no")
            order = supplier.visible(rid) if isinstance(rid, str) else None
            if order is None:
                return self._error("not_found", "订单不存在")
            return self._answer(supplier, self._order(supplier, order, with_cards=True))
        return self._error("invalid_request", f"unknown method {str(operation)[:40]!r}")


# ---------------------------------------------------------------------------- concat_md5


JUHE_STATES = {"submitted": "0", "processing": "0", "success": "1", "partial": "1",
               "failed": "9", "refunded": "9"}
_JUHE_ERRORS = {"bad_signature": 208503, "rate_limited": 10012, "server_busy": 10014,
                "unknown_product": 208504, "insufficient_balance": 208505,
                "out_of_stock": 208506, "duplicate_request": 208507, "not_found": 208508,
                "invalid_request": 208509, "unknown_merchant": 10001}


class ConcatMd5Adapter(Adapter):
    """Juhe style: GET query per operation, ``md5(OpenID + key + fields...)``, replies
    ``{reason, result, error_code}``, states 0/1/9, a form callback on final states only
    with ``sign = md5(appkey + sporder_id + orderid)``. The profile's ``api_key`` is the
    AppKey (``key``), its ``secret`` the OpenID. An unknown outcome is a 502 HTML page
    (the proxy in front of the API)."""

    name = "concat_md5"

    def _answer(self, result: Any) -> Reply:
        return 200, dumps({"reason": "成功", "result": result, "error_code": 0}), [_JSON_TYPE]

    def _error(self, kind: str, reason: str = "") -> Reply:
        return 200, dumps({"reason": reason or kind, "result": None,
                           "error_code": _JUHE_ERRORS[kind]}), [_JSON_TYPE]

    def _order(self, order: Order, *, with_cards: bool) -> dict[str, Any]:
        result: dict[str, Any] = {
            "uorderid": order.client_order_id, "sporder_id": order.order_id,
            "cardid": order.product.sku, "cardname": order.product.name,
            "cardnum": str(order.quantity), "ordercash": format_money(order.amount),
            "game_state": JUHE_STATES[order.state]}
        if with_cards and result["game_state"] == "1":
            result["cards"] = [{"cardno": c.serial, "cardpws": c.pin,
                                "expiretime": _local(c.expires_at)} for c in order.codes]
        return result

    async def handle(self, supplier: Supplier, method: str, path: str, query: bytes,
                     headers: Mapping[bytes, bytes], body: bytes) -> Reply:
        try:
            fields = dict(parse_qsl(query.decode(), keep_blank_values=True, max_num_fields=50))
        except (UnicodeDecodeError, ValueError):
            return self._error("invalid_request", "错误的请求参数")
        profile = supplier.profile
        if fields.get("key") != profile.api_key:
            supplier.counters.unauthorized_401 += 1
            return self._error("unknown_merchant", "错误的请求KEY")

        def signed(*parts: str) -> bool:
            given = fields.get("sign", "")
            if hmac.compare_digest(md5_hex("".join(parts)), given.lower()):
                return True
            supplier.counters.unauthorized_401 += 1
            return False

        op = path.removeprefix("/ofpay/card/")
        if op == "cardlist":
            return self._answer([{"cardid": p.sku, "cardname": p.name,
                                  "pervalue": format_money(p.face_value),
                                  "inprice": format_money(p.price)}
                                 for p in profile.products])
        if op == "yue":
            if not signed(profile.secret, profile.api_key, fields.get("timestamp", "")):
                return self._error("bad_signature", "校验值sign错误")
            return self._answer({"money": format_money(supplier.balance)})
        if op == "onlineorder":
            sku, num, rid = (fields.get("cardid", ""), fields.get("cardnum", ""),
                             fields.get("orderid", ""))
            if not signed(profile.secret, profile.api_key, sku, num, rid):
                return self._error("bad_signature", "校验值sign错误")
            if not (8 <= len(rid) <= 32 and rid.isalnum() and rid.isascii()):
                return self._error("invalid_request", "订单号格式错误")
            if rid in supplier.orders:
                return self._error("duplicate_request", "订单号重复")
            reply, order = supplier.place_order(_place_body(
                rid, sku, int(num) if num.isdigit() else -1, None,
                fields.get("notify_url") or None))
            status, code = _engine_error(reply)
            if status >= 500 and code == "internal_error":
                return 502, b"<html><body><h1>502 Bad Gateway</h1></body></html>", [_HTML_TYPE]
            if code:
                return self._error(_ENGINE_TO_KIND.get(code, "invalid_request"), code)
            assert order is not None
            return self._answer(self._order(order, with_cards=False) | {"game_state": "0"}
                                if order.state != "failed" else self._order(order,
                                                                            with_cards=False))
        if op == "ordersta":
            order = supplier.visible(fields.get("orderid", ""))
            if order is None:
                return self._error("not_found", "订单不存在")
            return self._answer(self._order(order, with_cards=True))
        return self._error("invalid_request", "接口不存在")

    def callback(self, supplier: Supplier, body: bytes) -> tuple[bytes, dict[str, str]] | None:
        event = json.loads(body)
        order = event["order"]
        sta = JUHE_STATES[order["state"]]
        if event["event"] != "order.updated" or sta == "0":
            return None  # Juhe calls back final states only
        sporder, rid = order["order_id"], order["client_order_id"]
        form = {"sporder_id": sporder, "orderid": rid, "sta": sta,
                "sign": md5_hex(supplier.profile.api_key + sporder + rid)}
        return urlencode(form).encode(), {"content-type": "application/x-www-form-urlencoded"}


# ---------------------------------------------------------------------------- sync_trade


class SyncTradeAdapter(Adapter):
    """acg-faka style: form POSTs, sorted-query MD5 with ``&key=``, every answer HTTP 200,
    errors by message only (English for ``Accept-Language: en`` where observed), codes in
    the trade answer as ``SERIAL PIN`` lines. Choices where the shop does not say: an
    unknown outcome is an HTML error page with 200; a trade the engine fails is answered
    with ``status`` 2 and no codes; one not finished within :data:`SYNC_HOLD_S` with
    ``status`` 0 (the query then gives the codes)."""

    name = "sync_trade"

    def _answer(self, data: Any) -> Reply:
        return 200, dumps({"code": 200, "msg": "success", "data": data}), [_JSON_TYPE]

    def _error(self, message: str) -> Reply:
        return 200, dumps({"code": 0, "msg": message}), [_JSON_TYPE]

    def _trade_numbers(self, supplier: Supplier) -> dict[str, str]:
        numbers: dict[str, str] = supplier.dialect_state.setdefault("trade_numbers", {})
        return numbers

    def _trade(self, supplier: Supplier, order: Order) -> dict[str, Any]:
        status = {"success": 1, "partial": 1, "refunded": 1, "failed": 2}.get(order.state, 0)
        secret = "\n".join(f"{c.serial} {c.pin}" for c in order.codes) if status == 1 else ""
        stock = supplier.stock[order.product.sku]
        trade_no = supplier.dialect_state.setdefault("trade_no_of", {}).get(
            order.client_order_id, "")
        return {"tradeNo": trade_no, "amount": float(order.amount), "secret": secret,
                "stock": str(stock if stock is not None else 999999), "status": status}

    async def handle(self, supplier: Supplier, method: str, path: str, query: bytes,
                     headers: Mapping[bytes, bytes], body: bytes) -> Reply:
        content_type = headers.get(b"content-type", b"").decode("latin-1")
        if method != "POST" or "application/x-www-form-urlencoded" not in content_type:
            return self._error("商户ID不存在")
        try:
            fields = dict(parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=50))
        except (UnicodeDecodeError, ValueError):
            return self._error("商户ID不存在")
        english = headers.get(b"accept-language", b"").startswith(b"en")
        profile = supplier.profile
        if fields.get("app_id") != profile.api_key:
            supplier.counters.unauthorized_401 += 1
            return self._error("商户ID不存在")
        if not hmac.compare_digest(md5_sorted_query(fields, profile.secret),
                                   fields.get("sign", "").lower()):
            supplier.counters.unauthorized_401 += 1
            return self._error("密钥错误")
        if path == "/shared/authentication/connect":
            return self._answer({"shopName": supplier.name, "balance": float(supplier.balance)})
        if path == "/shared/commodity/items":
            return self._answer([{"id": 1, "name": "Cards", "children": [
                {"code": p.sku, "name": p.name, "price": float(p.face_value),
                 "user_price": float(p.price),
                 "stock": 999999 if supplier.stock[p.sku] is None else
                 max(0, supplier.stock[p.sku] or 0) + supplier.oversell_left[p.sku]}
                for p in profile.products]}])
        if path == "/shared/commodity/query":
            coid = self._trade_numbers(supplier).get(fields.get("tradeNo", ""))
            order = supplier.visible(coid) if coid is not None else None
            if order is None:
                return self._error("订单不存在")
            return self._answer(self._trade(supplier, order))
        if path == "/shared/commodity/trade":
            return await self._buy(supplier, fields, english)
        return 200, b"<!DOCTYPE html><html><body>page not found</body></html>", [_HTML_TYPE]

    async def _buy(self, supplier: Supplier, fields: dict[str, str], english: bool) -> Reply:
        sku, num, rid = (fields.get("shared_code", ""), fields.get("num", ""),
                         fields.get("request_no", ""))
        if not num.isdigit() or int(num) < 1:
            return self._error("至少购买1个")
        product = supplier.products.get(sku)
        if product is None:
            return self._error("商品不存在")
        if len(rid) > 19:
            return 200, b"<!DOCTYPE html><html><body>SQLSTATE[22001]: String data, " \
                b"right truncated</body></html>", [_HTML_TYPE]
        quantity = int(num)
        real = supplier.stock[sku]
        if real is not None and quantity > real + supplier.oversell_left[sku]:
            return self._error("Insufficient stock" if english else "库存不足")
        if not rid:  # no key: every request buys
            rid = "N" + hashlib.sha256(f"{time.time_ns()}".encode()).hexdigest()[:18]
        elif rid in supplier.orders:
            return self._error("The request ID already exists")
        reply, order = supplier.place_order(_place_body(rid, sku, quantity, None, None))
        status, code = _engine_error(reply)
        if status >= 500 and code == "internal_error":
            return 200, b"<!DOCTYPE html><html><body>System error</body></html>", [_HTML_TYPE]
        if code:
            message = {"out_of_stock": "Insufficient stock" if english else "库存不足",
                       "insufficient_balance": "余额不足", "unknown_sku": "商品不存在",
                       "overloaded": "系统繁忙", "rate_limited": "系统繁忙"}.get(code, code)
            return self._error(message)
        assert order is not None
        seq = len(self._trade_numbers(supplier)) + 1
        trade_no = datetime.fromtimestamp(order.created_at, _SHANGHAI).strftime("%y%m%d%H%M") \
            + f"{seq:08d}"
        self._trade_numbers(supplier)[trade_no] = rid
        supplier.dialect_state.setdefault("trade_no_of", {})[rid] = trade_no
        until = time.monotonic() + SYNC_HOLD_S
        while order.state in ("submitted", "processing") and time.monotonic() < until:
            await asyncio.sleep(0.005)
        return self._answer(self._trade(supplier, order))


ADAPTERS: dict[str, Adapter] = {a.name: a for a in (GatewayAdapter(), ConcatMd5Adapter(),
                                                     SyncTradeAdapter())}
"""The dialects the simulator speaks besides the reference protocol."""


def rate_limited_reply(dialect: str) -> Reply:
    """A 429 of the engine, as the dialect says "too many requests"."""
    if dialect == "gateway":
        return GatewayAdapter()._error("rate_limited", "请求过于频繁")
    if dialect == "concat_md5":
        return ConcatMd5Adapter()._error("rate_limited", "请求超过次数限制")
    return SyncTradeAdapter()._error("系统繁忙")


__all__ = ["ADAPTERS", "Adapter", "rate_limited_reply"]
