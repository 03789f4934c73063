"""The trial executor's I/O: httpx's async connection pool (httpcore), and the loop that
drives a lifecycle.

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
import socket
import time
import zlib
from typing import TypeVar

import httpcore
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


class AsyncTransport:
    """One pool of keep-alive connections for a whole trial: httpx's own (httpcore's
    ``AsyncConnectionPool``, its HTTP/1.1 parser and sockets), without httpx's client
    layer on top.

    The client layer (URL merging, cookies, auth and redirect flows, event hooks, its
    ``Response``) cost about 2 ms of CPU per request on this 2-core machine, 5.4 against
    3.1 ms for the pool alone and 0.9 for a bare ``http.client`` (``bench/latency_50ms.py``):
    time the harness added to every latency it measured. The URL is still parsed by
    ``httpx.URL`` and the headers are httpx's defaults, so suppliers see the same request.

    Each request has a total deadline of ``timeout_s`` (connecting, sending, waiting and
    reading the whole body: a body trickled a byte at a time cannot hold it longer) and a
    body cap of ``max_body_bytes``. Redirects are never followed (the pool has no
    redirect logic), no proxy is taken from the environment (it reads none). An answer
    whose headers came but whose body did not, whole, keeps its status with
    ``transport_error`` set (``timeout``, ``body_too_large``, ``bad_encoding``,
    ``body_error:<name>``) and an empty body: the lifecycle treats it as unreadable (a
    write's outcome is unknown)."""

    def __init__(self, timeout_s: float, max_connections: int = 200, *,
                 max_body_bytes: int = MAX_BODY_BYTES) -> None:
        if max_body_bytes <= 0:
            raise ValueError(f"max_body_bytes must be positive, got {max_body_bytes}")
        self._timeout_s = timeout_s
        self._max_body_bytes = max_body_bytes
        self._extensions = {"timeout": {"connect": timeout_s, "read": timeout_s,
                                        "write": timeout_s, "pool": timeout_s}}
        self._pool = httpcore.AsyncConnectionPool(
            max_connections=max_connections, max_keepalive_connections=max_connections,
            keepalive_expiry=KEEPALIVE_EXPIRY_S, http1=True, http2=False, retries=0)

    async def send(self, request: HttpRequest) -> HttpResponse:
        """One attempt; status 0 when there was no answer. Never raises for the network or
        for what the supplier sends."""
        start = time.perf_counter()
        status, headers = 0, httpx.Headers()

        def done(body: bytes = b"", error: str | None = None) -> HttpResponse:
            return HttpResponse(status, headers, body, (time.perf_counter() - start) * 1000,
                                error)

        try:
            async with asyncio.timeout(self._timeout_s):
                url = httpx.URL(request.url)
                content = request.body or b""
                async with self._pool.stream(
                        request.method, httpcore.URL(scheme=url.raw_scheme, host=url.raw_host,
                                                     port=url.port, target=url.raw_path),
                        headers=_request_headers(url, request, content), content=content,
                        extensions=self._extensions) as reply:
                    status, headers = reply.status, httpx.Headers(reply.headers)
                    stream = reply.extensions.get("network_stream")
                    if stream is not None:  # ACK at once: a body sent apart is not held
                        set_quickack(stream.get_extra_info("socket"))
                    body = CappedBody(self._max_body_bytes, headers.get("content-encoding"))
                    body.expect(headers.get("content-length"))
                    async for chunk in reply.aiter_stream():
                        body.feed(chunk)
        except (TimeoutError, httpcore.TimeoutException):
            return done(error="timeout")
        except BodyError as exc:
            return done(error=exc.kind)
        except httpcore.ConnectError as exc:  # connect/TLS failed: no byte of it was sent
            return done(error=f"{NOT_SENT}:{type(exc).__name__}")
        except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol,
                httpcore.ProxyError) as exc:
            kind = "connect_error" if status == 0 else "body_error"
            return done(error=f"{kind}:{type(exc).__name__}")
        except Exception as exc:  # a transport bug must be data, not a dead trial
            return done(error=f"transport_error:{type(exc).__name__}")
        return done(body.body())

    async def aclose(self) -> None:
        await self._pool.aclose()


KEEPALIVE_EXPIRY_S = 5.0
"""An idle connection is closed after this long (httpx's default)."""

_DEFAULT_HEADERS = (("Accept", "*/*"), ("Accept-Encoding", "identity"),
                    ("Connection", "keep-alive"),
                    ("User-Agent", f"python-httpx/{httpx.__version__}"))
"""httpx's default headers, with :data:`NO_COMPRESSION`'s ``Accept-Encoding``."""


def _request_headers(url: httpx.URL, request: HttpRequest, content: bytes
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
