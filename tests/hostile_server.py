"""A hostile supplier for tests: the reference protocol's paths, answered badly on purpose.

Each supplier path names one *mode*: ``<url>/suppliers/<mode>`` answers every request
(catalog, balance, orders, refunds) in that mode. The mode either corrupts a well-formed
answer field by field, or breaks the answer as a whole:

- field modes (a valid answer with some fields replaced, everywhere they occur):
  ``time_number`` (times as numbers), ``amount_list`` (money as a list), ``not_finite``
  (money as the bare JSON number ``1e999``), ``nan`` (``"NaN"``), ``absurd`` (money
  ``1e30`` as a plain decimal), ``negative`` (``"-5.00"``), ``bad_regex`` (a catalog
  ``code_pattern`` with catastrophic backtracking), ``surrogate`` (strings holding a
  lone UTF-16 surrogate, valid JSON that Python cannot encode);
- body modes: ``deep`` (100,000 levels of nested JSON), ``empty``, ``html``,
  ``truncated`` (half a JSON document, correctly framed), ``cut_off`` (Content-Length
  promises more than is sent before the connection closes: a 201 whose body cannot be
  read), ``oversized`` (50 MB, streamed from one small buffer, with Content-Length),
  ``oversized_chunked`` (the same, chunked: no length to refuse early), ``gzip_bomb``
  (100 KB of gzip that inflates to 100 MB, sent although nobody asked for gzip),
  ``huge_headers`` (50 MB of headers), ``trickle`` (the body at one byte a second),
  ``silent`` (reads the request, never answers);
- ``redirect`` / ``redirect302``: 307 / 302 to the same path on a second loopback server,
  the :class:`Trap`, which records whatever reaches it;
- ``ok``: a well-formed answer (the corrupted modes start from it).

Writes answer with their success status (201 for a new order, 202 for a refund), so every
body mode is also "a 2xx to a write whose body cannot be read". Requests are not
authenticated. Standard library only; binds 127.0.0.1 on free ports, daemon threads::

    with HostileServer() as server:
        base_url = f"{server.url}/suppliers/trickle"
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
import zlib
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast

FIELD_MODES: dict[str, dict[str, Any]] = {
    "time_number": dict.fromkeys(("created_at", "updated_at", "requested_at"), 1764000000),
    "amount_list": {key: ["9.50"] for key in ("amount", "price", "balance", "unit_price")},
    "not_finite": dict.fromkeys(("amount", "price", "balance", "unit_price"), "@1e999@"),
    "nan": dict.fromkeys(("amount", "price", "balance", "unit_price"), "NaN"),
    "absurd": dict.fromkeys(("amount", "price", "balance", "unit_price"),
                            "1" + "0" * 30 + ".00"),
    "negative": dict.fromkeys(("amount", "price", "balance", "unit_price"), "-5.00"),
    "bad_regex": {"code_pattern": "^(a+)+$"},
    "surrogate": {"serial": "\ud800", "sku": "\udfff", "currency": "\ud800"},
}
"""Field modes: field name → the value it takes wherever it occurs; ``@raw@`` is written
into the JSON text as it is (``1e999`` is valid JSON that parses to infinity)."""

BODY_MODES = ("deep", "empty", "html", "truncated", "cut_off", "oversized",
              "oversized_chunked", "gzip_bomb", "huge_headers", "trickle", "silent")
REDIRECT_MODES = ("redirect", "redirect302")
MODES = ("ok", *FIELD_MODES, *BODY_MODES, *REDIRECT_MODES)

OVERSIZED_BYTES = 50 * 1024 * 1024
TRICKLE_BYTES = 200
_CHUNK = b" " * (64 * 1024)
_PATH = re.compile(r"^/suppliers/(?P<mode>[A-Za-z0-9_]+)(?P<rest>/[^?]*)")


def _moment(offset_s: float = 0.0) -> str:
    now = time.time() + offset_s
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


def order_doc(cid: str, sku: str = "card-10") -> dict[str, Any]:
    """A well-formed delivered order (one code) for ``cid``."""
    at = _moment()
    return {"client_order_id": cid, "order_id": f"H-{cid}"[:64], "sku": sku, "quantity": 1,
            "account": None, "unit_price": "9.50", "amount": "9.50", "state": "success",
            "created_at": at, "updated_at": at, "delivered_at": at,
            "codes": [{"serial": f"HOST-{zlib.crc32(cid.encode()):012d}", "pin": "0000",
                       "face_value": "10.00", "expires_at": None}],
            "failure_reason": None, "refund": None}


def refund_doc() -> dict[str, Any]:
    at = _moment()
    return {"refund_id": "R-1", "state": "completed", "amount": "9.50", "reason": "unused",
            "requested_at": at, "resolved_at": at}


_BOMB: list[bytes] = []


def _gzip_bomb() -> bytes:
    """100 MB of zeros, gzipped (about 100 KB), made once, a megabyte at a time."""
    if not _BOMB:
        packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        zeros = bytes(1 << 20)
        _BOMB.append(b"".join(packer.compress(zeros) for _ in range(100)) + packer.flush())
    return _BOMB[0]


def _corrupt(value: Any, fields: dict[str, Any]) -> Any:
    if isinstance(value, dict):
        return {k: fields[k] if k in fields else _corrupt(v, fields) for k, v in value.items()}
    if isinstance(value, list):
        return [_corrupt(v, fields) for v in value]
    return value


def _render(doc: Any) -> bytes:
    return re.sub(r'"@([^@"]*)@"', r"\1", json.dumps(doc)).encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # a whole trial connects at once: no SYN may be dropped

    def __init__(self, handler: type[BaseHTTPRequestHandler], owner: Any) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.owner = owner


class _Hostile(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""

    @property
    def owner(self) -> HostileServer:
        return cast(HostileServer, cast(_Server, self.server).owner)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if 0 < length <= 1 << 20 else b""
        self.close_connection = True
        match = _PATH.match(self.path)
        if match is None:
            self._send(404, b'{"error": {"code": "not_found", "message": "no such path"}}')
            return
        mode, rest = match.group("mode"), match.group("rest")
        owner = self.owner
        with owner.lock:
            owner.hits[(mode, self.command, rest)] += 1
        status, doc = self._valid(rest, raw)
        if status >= 400 or mode == "ok":
            self._send(status, _render(doc))
        elif mode in FIELD_MODES:
            self._send(status, _render(_corrupt(doc, FIELD_MODES[mode])))
        elif mode in REDIRECT_MODES:
            location = f"{owner.trap.url}{self.path}"
            self._send(307 if mode == "redirect" else 302, b"", location=location)
        else:
            getattr(self, f"_mode_{mode}")(status, _render(doc))

    def _valid(self, rest: str, raw: bytes) -> tuple[int, Any]:
        """The well-formed answer to this request (status, document)."""
        parts = rest.strip("/").split("/")
        if rest == "/v1/products":
            return 200, {"products": [{
                "sku": "card-10", "name": "Card 10", "kind": "card", "face_value": "10.00",
                "currency": "CNY", "price": "9.50", "stock": None,
                "code_pattern": "^HOST-[0-9]{12}$"}]}
        if rest == "/v1/balance":
            return 200, {"balance": "1000.00", "currency": "CNY"}
        if rest == "/v1/orders" and self.command == "POST":
            try:
                body = json.loads(raw)
                cid, sku = str(body["client_order_id"]), str(body["sku"])
            except (ValueError, KeyError, TypeError):
                return 400, {"error": {"code": "invalid_request", "message": "bad body"}}
            return 201, {"order": order_doc(cid, sku)}
        if len(parts) == 3 and parts[:2] == ["v1", "orders"]:
            return 200, {"order": order_doc(parts[2])}
        if len(parts) == 4 and parts[:2] == ["v1", "orders"] and parts[3] == "refund":
            return (202 if self.command == "POST" else 200), {"refund": refund_doc()}
        return 404, {"error": {"code": "not_found", "message": "no such path"}}

    def _send(self, status: int, body: bytes, *, length: int | None = None,
              content_type: str = "application/json", location: str | None = None,
              chunked: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(len(body) if length is None else length))
        if location is not None:
            self.send_header("Location", location)
        self.send_header("Connection", "close")
        self.end_headers()
        if body:
            self.wfile.write(body)

    # body modes: each writes the whole answer
    def _mode_deep(self, status: int, body: bytes) -> None:
        depth = 100_000
        self._send(status, b'{"order": ' + b"[" * depth + b"]" * depth + b"}")

    def _mode_empty(self, status: int, body: bytes) -> None:
        self._send(status, b"")

    def _mode_html(self, status: int, body: bytes) -> None:
        self._send(status, b"<html><body><h1>502 Bad Gateway</h1></body></html>",
                   content_type="text/html")

    def _mode_truncated(self, status: int, body: bytes) -> None:
        self._send(status, body[: len(body) // 2])

    def _mode_cut_off(self, status: int, body: bytes) -> None:
        self._send(status, body[:20], length=len(body) + 1000)
        with contextlib.suppress(OSError):
            self.wfile.flush()
            self.connection.shutdown(2)

    def _mode_oversized(self, status: int, body: bytes) -> None:
        self._send(status, b'{"order": "', length=OVERSIZED_BYTES)
        self._stream(OVERSIZED_BYTES - 11)

    def _mode_oversized_chunked(self, status: int, body: bytes) -> None:
        self._send(status, b"", chunked=True)
        self._stream(OVERSIZED_BYTES, chunked=True)

    def _stream(self, total: int, *, chunked: bool = False) -> None:
        """Write ``total`` bytes of padding from one small buffer; stop when the peer goes."""
        sent = 0
        try:
            while sent < total and not self.owner.stopping.is_set():
                piece = _CHUNK[: total - sent]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                sent += len(piece)
                with self.owner.lock:
                    self.owner.streamed_bytes += len(piece)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass  # the client hung up: the point of the test

    def _mode_gzip_bomb(self, status: int, body: bytes) -> None:
        bomb = _gzip_bomb()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(bomb)))
        self.send_header("Connection", "close")
        self.end_headers()
        with contextlib.suppress(OSError):
            self.wfile.write(bomb)

    def _mode_huge_headers(self, status: int, body: bytes) -> None:
        line = b"X-Pad: " + b"a" * 8000 + b"\r\n"
        try:
            self.wfile.write(b"HTTP/1.1 %d OK\r\nContent-Type: application/json\r\n" % status)
            sent = 0
            while sent < OVERSIZED_BYTES and not self.owner.stopping.is_set():
                self.wfile.write(line)
                sent += len(line)
                with self.owner.lock:
                    self.owner.streamed_bytes += len(line)
            self.wfile.write(b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                             % (len(body), body))
        except OSError:
            pass

    def _mode_trickle(self, status: int, body: bytes) -> None:
        self._send(status, b"", length=TRICKLE_BYTES)
        padded = (body + b" " * TRICKLE_BYTES)[:TRICKLE_BYTES]
        try:
            for byte in padded:
                if self.owner.stopping.wait(1.0):
                    return
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
        except OSError:
            pass

    def _mode_silent(self, status: int, body: bytes) -> None:
        self.owner.stopping.wait(60)

    do_GET = _handle
    do_POST = _handle


class _Trap(BaseHTTPRequestHandler):
    """The redirect target: records every request that reaches it."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""

    def _handle(self) -> None:
        trap = cast(Trap, cast(_Server, self.server).owner)
        with trap.lock:
            trap.requests.append((self.command, self.path, dict(self.headers)))
        self.close_connection = True
        body = b'{"balance": "1.00", "currency": "CNY"}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    do_GET = _handle
    do_POST = _handle


class _Base:
    handler: type[BaseHTTPRequestHandler]

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self._server: _Server | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("not running")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> Any:
        if self._server is None:
            self._server = _Server(self.handler, self)
            threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                             daemon=True, name=f"{type(self).__name__}").start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class Trap(_Base):
    """A second loopback server that records whatever a redirect brought to it."""

    handler = _Trap

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[tuple[str, str, dict[str, str]]] = []

    def __enter__(self) -> Trap:
        return cast(Trap, self.start())


class HostileServer(_Base):
    """The hostile supplier (see the module docstring) and its redirect :class:`Trap`."""

    handler = _Hostile

    def __init__(self) -> None:
        super().__init__()
        self.trap = Trap()
        self.hits: Counter[tuple[str, str, str]] = Counter()
        """(mode, method, path below the supplier) → requests received."""
        self.streamed_bytes = 0

    def start(self) -> HostileServer:
        self.trap.start()
        return cast(HostileServer, super().start())

    def stop(self) -> None:
        super().stop()
        self.trap.stop()

    def __enter__(self) -> HostileServer:
        return self.start()

    def supplier_url(self, mode: str) -> str:
        """The base URL of the supplier answering in ``mode``."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; known: {', '.join(MODES)}")
        return f"{self.url}/suppliers/{mode}"


__all__ = ["BODY_MODES", "FIELD_MODES", "MODES", "REDIRECT_MODES", "HostileServer", "Trap"]
