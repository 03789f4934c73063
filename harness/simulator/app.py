"""The simulator's raw ASGI application: routing by path split, no framework.

    /suppliers/<name>/v1/...   the reference protocol, one profile per supplier
    /suppliers/<name>[/...]    or the supplier's dialect (profile ``dialect:``), through an
                               adapter in front of the same engine (simulator/dialects.py)
    /issuer/v1/codes/...       the issuer (X-Api-Key only)
    /_sim/truth, /_sim/reset   ground truth and reset (no auth; never read while measuring)
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

from harness.simulator.dialects import ADAPTERS, rate_limited_reply
from harness.simulator.engine import Reply, Simulation, Supplier, dumps, error

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_JSON = (b"content-type", b"application/json")


class SimulatorApp:
    """ASGI app serving every supplier of a :class:`Simulation` plus the issuer."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        kind = scope["type"]
        if kind == "http":
            body = await _read_body(receive)
            status, payload, headers = await self.handle(scope, body)
            typed = any(name == b"content-type" for name, _ in headers)
            await send({"type": "http.response.start", "status": status,
                        "headers": [*([] if typed else [_JSON]),
                                    (b"content-length", str(len(payload)).encode()),
                                    *headers]})
            await send({"type": "http.response.body", "body": payload})
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.sim.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def handle(self, scope: Scope, body: bytes) -> Reply:
        """Route one request and produce its reply."""
        path: str = scope["path"]
        parts = path.split("/")
        top = parts[1] if len(parts) > 1 else ""
        if top == "suppliers" and len(parts) >= 3:
            supplier = self.sim.suppliers.get(parts[2])
            if supplier is None:
                return error(404, "not_found", f"no supplier {parts[2]!r}")
            if len(parts) == 3 and supplier.profile.dialect == "reference":
                return error(404, "not_found", "no such endpoint")
            if supplier.profile.dialect != "reference":
                reply = await self._dialect(supplier, scope, parts[3:], body)
            else:
                reply = self._supplier(supplier, scope, parts[3:], body)
            delay_s = supplier.response_delay_s()
            if delay_s > 0:
                await asyncio.sleep(delay_s)
            return reply
        if top == "issuer":
            return self._issuer(scope, parts[2:], body)
        if top == "_sim":
            return self._control(scope["method"], parts[2:], body)
        return error(404, "not_found", "no such endpoint")

    def _supplier(self, supplier: Supplier, scope: Scope, rest: list[str], body: bytes) -> Reply:
        limited = supplier.rate_limited()
        if limited is not None:
            return limited
        method: str = scope["method"]
        api_key = timestamp = signature = None
        for name, value in scope["headers"]:
            if name == b"x-api-key":
                api_key = value.decode("latin-1")
            elif name == b"x-timestamp":
                timestamp = value.decode("latin-1")
            elif name == b"x-signature":
                signature = value.decode("latin-1")
        raw_path = scope.get("raw_path")
        signed_path = raw_path.decode("latin-1") if raw_path else scope["path"]
        query: bytes = scope.get("query_string", b"")
        if query:
            signed_path += "?" + query.decode("latin-1")
        if not supplier.authorized(method, signed_path, body, api_key, timestamp, signature):
            return error(401, "unauthorized", "missing or unknown key, bad signature, "
                         "or timestamp outside the 300 s window")
        n = len(rest)
        if rest[0] != "v1" or n < 2:
            return error(404, "not_found", "no such endpoint")
        resource = rest[1]
        if resource == "orders":
            if n == 2:
                if method == "POST":
                    return supplier.place_order(body)[0]
                return _not_allowed("POST")
            if n == 3 and rest[2]:
                return supplier.get_order(rest[2]) if method == "GET" else _not_allowed("GET")
            if n == 4 and rest[3] == "refund":
                if method == "POST":
                    return supplier.request_refund(rest[2], body)
                if method == "GET":
                    return supplier.get_refund(rest[2])
                return _not_allowed("GET, POST")
        elif n == 2 and resource == "products":
            return supplier.get_products() if method == "GET" else _not_allowed("GET")
        elif n == 2 and resource == "balance":
            return supplier.get_balance() if method == "GET" else _not_allowed("GET")
        return error(404, "not_found", "no such endpoint")

    async def _dialect(self, supplier: Supplier, scope: Scope, rest: list[str],
                       body: bytes) -> Reply:
        """A supplier speaking a dialect of the field (:mod:`harness.simulator.dialects`)."""
        dialect = supplier.profile.dialect
        if supplier.rate_limited() is not None:
            return rate_limited_reply(dialect)
        path = "/" + "/".join(rest) if any(rest) else ""
        headers = {name.lower(): value for name, value in scope["headers"]}
        return await ADAPTERS[dialect].handle(supplier, scope["method"], path,
                                              scope.get("query_string", b""), headers, body)

    def _issuer(self, scope: Scope, rest: list[str], body: bytes) -> Reply:
        issuer = self.sim.issuer
        api_key = None
        for name, value in scope["headers"]:
            if name == b"x-api-key":
                api_key = value.decode("latin-1")
        method = scope["method"]
        if len(rest) < 3 or rest[0] != "v1" or rest[1] != "codes" or not rest[2]:
            return error(404, "not_found", "no such endpoint")
        if len(rest) == 4 and rest[3] == "redeem":
            if method != "POST":
                return _not_allowed("POST")
            return issuer.redeem(api_key, rest[2], body)
        if len(rest) == 3:
            if method != "GET":
                return _not_allowed("GET")
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            pins = query.get("pin")
            return issuer.check(api_key, rest[2], pins[0] if pins else None)
        return error(404, "not_found", "no such endpoint")

    def _control(self, method: str, rest: list[str], body: bytes) -> Reply:
        if rest == ["truth"] and method == "GET":
            return 200, dumps(self.sim.truth()), []
        if rest == ["reset"] and method == "POST":
            seed = None
            if body.strip():
                try:
                    payload = json.loads(body)
                except ValueError:
                    return error(400, "invalid_request", "body is not valid JSON")
                raw = payload.get("seed") if isinstance(payload, dict) else None
                if raw is not None and (isinstance(raw, bool) or not isinstance(raw, int)):
                    return error(400, "invalid_request", "seed must be an integer or null")
                seed = raw
            self.sim.reset(seed)
            return 200, dumps({"seed": self.sim.seed}), []
        return error(404, "not_found", "control endpoints: GET /_sim/truth, POST /_sim/reset")


def _not_allowed(allow: str) -> Reply:
    return error(405, "method_not_allowed", f"allowed: {allow}",
                 [(b"allow", allow.encode())])


async def _read_body(receive: Receive) -> bytes:
    message = await receive()
    body: bytes = message.get("body", b"")
    while message.get("more_body"):
        message = await receive()
        body += message.get("body", b"")
    return body
