"""The trial executor's I/O: keep-alive HTTP/1.1 (h11 over asyncio streams), and the
loop that drives a lifecycle.

:class:`AsyncTransport` never raises for what a supplier does: a timeout or a refused
connection comes back as an :class:`HttpResponse` with status 0 and ``transport_error``
set, so it becomes data in the event log. Redirects are never followed; each request has
a total deadline and a body cap (:class:`CappedBody`, shared with the burst transport).

:func:`drive` runs one lifecycle generator (:mod:`harness.run.lifecycle`): it sends each
:class:`~harness.run.lifecycle.Send` and sleeps through each
:class:`~harness.run.lifecycle.Wait`, waking early on news when asked to.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import select
import socket
import ssl
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

import certifi
import h11
import httpx

from harness.drivers.base import NOT_SENT, HttpRequest, HttpResponse
from harness.run.lifecycle import Send, Steps

T = TypeVar("T")

TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", None)
"""Linux only; elsewhere the delayed-ACK stall (below) is not corrected."""


def set_quickack(sock: object) -> None:
    """Ask the kernel to acknowledge at once what arrives next on ``sock``.

    Latency is the supplier's, the same in both modes: some servers write the headers and
    the body of an answer in two sends without TCP_NODELAY, and Nagle then holds the body
    until the client acknowledges the headers. A keep-alive client whose kernel delays its
    ACKs (Linux does on a busy connection; not on one that sat idle) waits about 40 ms for
    every such answer, so the figure would depend on how the harness paces its own
    requests. Quick ACKs make every answer arrive as the supplier sent it; see
    ``bench/LATENCY_PARITY.md``. Not sticky: set again after each read.
    """
    if TCP_QUICKACK is not None:
        with contextlib.suppress(OSError, AttributeError, ValueError, TypeError):
            sock.setsockopt(socket.IPPROTO_TCP, TCP_QUICKACK, 1)  # type: ignore[attr-defined]


MAX_BODY_BYTES = 1 << 20
"""The default body cap of one answer (1 MiB), decoded; a scenario may set another."""

NO_COMPRESSION = {"Accept-Encoding": "identity"}
"""Both transports ask for plain bodies, so a body's size on the wire is its size."""


class BodyError(Exception):
    """A body that cannot be taken whole: ``kind`` is ``body_too_large`` or
    ``bad_encoding``."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


class CappedBody:
    """Collects a body chunk by chunk and refuses it past ``cap`` bytes, decoded.

    A supplier that compresses anyway (gzip or deflate) is decoded with the output
    bounded too, so a small compressed bomb cannot grow past the cap in memory."""

    def __init__(self, cap: int, encoding: str | None = None) -> None:
        self._cap = cap
        self._size = 0
        self._parts: list[bytes] = []
        name = (encoding or "identity").strip().lower()
        if name in ("", "identity"):
            self._zlib = None
        elif name in ("gzip", "x-gzip"):
            self._zlib = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif name == "deflate":
            self._zlib = zlib.decompressobj()
        else:
            raise BodyError("bad_encoding")

    def expect(self, length: str | None) -> None:
        """Refuse at once a body whose declared length is already over the cap."""
        if self._zlib is None and length is not None and length.strip().isdigit() \
                and int(length) > self._cap:
            raise BodyError("body_too_large")

    def feed(self, chunk: bytes) -> None:
        if self._zlib is not None:
            try:
                chunk = self._zlib.decompress(chunk, self._cap - self._size + 1)
            except zlib.error as exc:
                raise BodyError("bad_encoding") from exc
            if self._zlib.unconsumed_tail:
                raise BodyError("body_too_large")
        self._size += len(chunk)
        if self._size > self._cap:
            raise BodyError("body_too_large")
        self._parts.append(chunk)

    def body(self) -> bytes:
        return b"".join(self._parts)


class _Connection:
    """One keep-alive HTTP/1.1 connection: asyncio's streams and an h11 state machine."""

    __slots__ = ("h11", "idle_since", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEADER_BYTES)
        self.idle_since = 0.0

    def reusable(self, now: float) -> bool:
        """Idle, not expired, and the server has neither closed it nor sent anything
        unasked (which would otherwise be read as the next request's answer)."""
        if now - self.idle_since >= KEEPALIVE_EXPIRY_S or self.reader.at_eof() \
                or self.writer.is_closing() or len(getattr(self.reader, "_buffer", b"")):
            return False
        sock = self.writer.get_extra_info("socket")
        try:  # a close or bytes the loop has not read yet (as httpcore checks its sockets)
            readable, _, _ = select.select([sock.fileno()], [], [], 0)
        except (OSError, ValueError, AttributeError):
            return False
        return not readable

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class AsyncTransport:
    """Keep-alive HTTP/1.1 for a whole trial: h11 (httpx's own parser, under httpcore)
    over asyncio's streams, with httpx's URL parsing and default headers, so suppliers see
    the request httpx would send.

    Why not httpx's pool: on this 2-core machine httpcore's ``AsyncConnectionPool`` (with
    anyio's locks, cancel scopes and checkpoints on every read and write) cost 2.66 ms of
    CPU per request against 0.57 for asyncio's own streams, and that CPU is time the
    harness added to every latency it measured (``bench/latency_50ms.py``). httpx's client
    layer on top had cost another 2 ms before it was dropped.

    Each request has a total deadline of ``timeout_s`` (connecting, sending, waiting and
    reading the whole body: a body trickled a byte at a time cannot hold it longer), a
    header cap of :data:`MAX_HEADER_BYTES` and a body cap of ``max_body_bytes``. Redirects
    are never followed, no proxy is taken from the environment, no cookie is kept. At most
    ``max_connections`` requests are in flight; an idle connection is reused only while it
    is fresh and quiet (:meth:`_Connection.reusable`). An answer whose headers came but
    whose body did not, whole, keeps its status with ``transport_error`` set
    (``timeout``, ``body_too_large``, ``bad_encoding``, ``body_error:<name>``) and an
    empty body: the lifecycle treats it as unreadable (a write's outcome is unknown). Only
    a failed connect (TCP or TLS) is ``not_sent:ConnectError``: no byte had left."""

    def __init__(self, timeout_s: float, max_connections: int = 200, *,
                 max_body_bytes: int = MAX_BODY_BYTES, tls: ssl.SSLContext | None = None
                 ) -> None:
        """``tls``: how https suppliers are verified (default: certifi's CA bundle, as
        httpx verifies them)."""
        if max_body_bytes <= 0:
            raise ValueError(f"max_body_bytes must be positive, got {max_body_bytes}")
        self._timeout_s = timeout_s
        self._max_body_bytes = max_body_bytes
        self._max_connections = max_connections
        self._slots: asyncio.Semaphore | None = None
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._busy: set[_Connection] = set()
        self._tls = tls

    async def send(self, request: HttpRequest) -> HttpResponse:
        """One attempt; status 0 when there was no answer. Never raises for the network or
        for what the supplier sends."""
        start = time.perf_counter()
        status: int = 0
        headers: dict[str, str] = {}

        def done(body: bytes = b"", error: str | None = None) -> HttpResponse:
            return HttpResponse(status, headers, body, (time.perf_counter() - start) * 1000,
                                error, time.time() if status else None)

        if self._slots is None:
            self._slots = asyncio.Semaphore(self._max_connections)
        conn: _Connection | None = None
        phase = "connect"
        try:
            async with asyncio.timeout(self._timeout_s), self._slots:
                url = target(request.url)
                content = request.body or b""
                key = (url.scheme, url.host, url.port)
                conn = self._take_idle(key)
                if conn is None:
                    conn = await self._connect(key)
                self._busy.add(conn)
                phase = "write"
                wire = conn.h11
                data = wire.send(h11.Request(method=request.method.encode("ascii"),
                                             target=url.raw_path,
                                             headers=request_headers(url, request, content)))
                if content:
                    data += wire.send(h11.Data(data=content))
                data += wire.send(h11.EndOfMessage())
                conn.writer.write(data)
                await conn.writer.drain()
                phase = "read"
                body: CappedBody | None = None
                while True:
                    event = wire.next_event()
                    if event is h11.NEED_DATA:
                        chunk = await conn.reader.read(READ_CHUNK)
                        set_quickack(conn.writer.get_extra_info("socket"))
                        wire.receive_data(chunk)
                    elif isinstance(event, h11.Response):
                        status, headers = event.status_code, _response_headers(event.headers)
                        phase = "body"
                        body = CappedBody(self._max_body_bytes, headers.get("content-encoding"))
                        body.expect(headers.get("content-length"))
                    elif isinstance(event, h11.Data):
                        assert body is not None
                        body.feed(bytes(event.data))
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    elif isinstance(event, h11.ConnectionClosed):  # closed before an answer
                        raise h11.RemoteProtocolError("server closed before answering")
                    # InformationalResponse (1xx): wait for the real one
                assert body is not None
                self._release(key, conn)
                conn = None
                return done(body.body())
        except TimeoutError:
            return done(error="timeout")
        except BodyError as exc:
            return done(error=exc.kind)
        except (OSError, h11.RemoteProtocolError, asyncio.IncompleteReadError) as exc:
            if phase == "connect":  # TCP or TLS failed: no byte of the request was sent
                return done(error=f"{NOT_SENT}:ConnectError")
            name = "RemoteProtocolError" if isinstance(exc, h11.RemoteProtocolError) \
                else {"write": "WriteError"}.get(phase, "ReadError")
            kind = "connect_error" if status == 0 else "body_error"
            return done(error=f"{kind}:{name}")
        except Exception as exc:  # a transport bug must be data, not a dead trial
            return done(error=f"transport_error:{type(exc).__name__}")
        finally:
            if conn is not None:  # not released whole: never reused
                self._busy.discard(conn)
                conn.close()

    def _take_idle(self, key: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.reusable(now):
                return conn
            conn.close()
        return None

    async def _connect(self, key: tuple[str, str, int]) -> _Connection:
        scheme, host, port = key
        tls: ssl.SSLContext | None = None
        if scheme == "https":
            if self._tls is None:
                self._tls = ssl.create_default_context(cafile=certifi.where())
            tls = self._tls
        reader, writer = await asyncio.open_connection(
            host, port, ssl=tls, limit=READ_CHUNK)
        return _Connection(reader, writer)

    def _release(self, key: tuple[str, str, int], conn: _Connection) -> None:
        """Back to the idle list if both sides may go on, else closed."""
        self._busy.discard(conn)
        wire = conn.h11
        if wire.our_state is h11.DONE and wire.their_state is h11.DONE \
                and not wire.trailing_data[0]:  # bytes past the answer: not ours to read
            wire.start_next_cycle()
            conn.idle_since = time.monotonic()
            self._idle.setdefault(key, []).append(conn)
        else:
            conn.close()

    async def aclose(self) -> None:
        conns = [c for idle in self._idle.values() for c in idle] + list(self._busy)
        self._idle.clear()
        self._busy.clear()
        for conn in conns:
            conn.close()
        for conn in conns:
            with contextlib.suppress(Exception):
                await conn.writer.wait_closed()


KEEPALIVE_EXPIRY_S = 5.0
"""An idle connection is closed after this long (httpx's default)."""

MAX_HEADER_BYTES = 100 * 1024
"""The most bytes of status line and headers an answer may have (httpcore's h11 limit)."""

READ_CHUNK = 64 * 1024

DEFAULT_PORTS = {"http": 80, "https": 443}

_DEFAULT_HEADERS = (("Accept", "*/*"), ("Accept-Encoding", "identity"),
                    ("Connection", "keep-alive"),
                    ("User-Agent", f"python-httpx/{httpx.__version__}"))
"""httpx's default headers, with :data:`NO_COMPRESSION`'s ``Accept-Encoding``."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where a request goes, as httpx parses its URL (``host``: ASCII, IDNA-encoded;
    ``port``: explicit or the scheme's)."""

    scheme: str
    host: str
    port: int
    netloc: bytes
    raw_path: bytes


@functools.lru_cache(maxsize=4096)
def target(url: str) -> Target:
    """``url`` parsed by httpx, once per distinct URL (every POST of a supplier shares one,
    an order's polls theirs): httpx's parser was 7% of a burst worker's CPU. Raises for a
    URL httpx refuses or a scheme other than http and https."""
    parsed = httpx.URL(url)
    return Target(parsed.scheme, parsed.raw_host.decode("ascii"),
                  parsed.port or DEFAULT_PORTS[parsed.scheme], parsed.netloc, parsed.raw_path)


def request_headers(url: Target, request: HttpRequest, content: bytes
                     ) -> list[tuple[bytes, bytes]]:
    """The headers httpx would send: ``Host``, its defaults, the request's own (which win,
    case-insensitively) and ``Content-Length`` for a body or a POST, PUT or PATCH."""
    own = {name.lower() for name in request.headers}
    out = [] if "host" in own else [(b"Host", url.netloc)]
    out += [(name.encode(), value.encode()) for name, value in _DEFAULT_HEADERS
            if name.lower() not in own]
    out += [(name.encode("ascii"), value.encode("ascii"))  # as httpx: ASCII or an error
            for name, value in request.headers.items()]
    if "content-length" not in own and "transfer-encoding" not in own and (
            content or request.method.upper() in ("POST", "PUT", "PATCH")):
        out.append((b"Content-Length", str(len(content)).encode()))
    return out


def _response_headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """Names lower-cased, as the burst transport gives them; a repeated header's values
    joined with ``, `` (as ``httpx.Headers.get`` does). Latin-1, as HTTP/1.1 allows."""
    out: dict[str, str] = {}
    for name, value in raw:
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        out[key] = f"{out[key]}, {text}" if key in out else text
    return out


async def drive(transport: AsyncTransport, steps: Steps[T], *,
                news: asyncio.Event | None = None) -> T:
    """Run ``steps`` to its end with ``transport``; its return value.

    A ``Wait(news=True)`` ends early when ``news`` is set (the lifecycle's ``wake``)."""
    try:
        step = next(steps)
        while True:
            if isinstance(step, Send):
                step = steps.send(await transport.send(step.request))
                continue
            delay = step.until - time.time()
            if step.news and news is not None:
                news.clear()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(news.wait(), delay)
            elif delay > 0:
                await asyncio.sleep(delay)
            step = steps.send(None)
    except StopIteration as stop:
        result: T = stop.value
        return result
