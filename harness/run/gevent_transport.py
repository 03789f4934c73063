"""The burst executor's I/O: geventhttpclient (the client under Locust's FastHttpSession),
a precise waker for scheduled starts, and the loop that drives a lifecycle.

Imports gevent: only the burst modules import this.

:class:`GeventTransport` sends a driver's request with the trial's headers, never follows
a redirect, keeps no cookie, ends each request within a total deadline, caps its body,
and never raises for the network: no answer is status 0 with ``transport_error`` set.
Locust's request statistics see each request only when given its ``events.request`` (its
web UI); trialbench keeps its own. :func:`drive` runs one lifecycle generator
(:mod:`harness.run.lifecycle`) in the calling greenlet.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import ssl
import time
from typing import Any, TypeVar

import gevent
import gevent.event
import gevent.monkey
import geventhttpclient.client
from geventhttpclient.client import HTTPClient
from geventhttpclient.response import HTTPParseError, HTTPSocketPoolResponse

from harness.drivers.base import NOT_SENT, HttpRequest, HttpResponse
from harness.run.async_transport import (
    MAX_BODY_BYTES,
    READ_CHUNK,
    BodyError,
    CappedBody,
    Target,
    request_headers,
    set_quickack,
    target,
)
from harness.run.lifecycle import Send, Steps

T = TypeVar("T")


class _QuickAckSocket:
    """A socket that leaves delayed-ACK mode each time it sends a request (see
    ``set_quickack``), so the answer's first segment is acknowledged at once. Once per
    request, not per read: each quick ACK costs the load generator CPU."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock

    def sendall(self, *args: Any) -> None:
        self._sock.sendall(*args)
        set_quickack(self._sock)

    def fileno(self) -> int:
        return int(self._sock.fileno())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


_QUICK_POOLS: dict[type, type] = {}


def _quick_pool_class(base: type) -> type:
    """``base`` (a geventhttpclient connection pool class) wrapping each new socket in
    :class:`_QuickAckSocket`, so trials and bursts measure a supplier's latency alike."""
    if base not in _QUICK_POOLS:
        def _create_socket(self: Any) -> Any:
            return _QuickAckSocket(base._create_socket(self))  # type: ignore[attr-defined]
        _QUICK_POOLS[base] = type(f"QuickAck{base.__name__}", (base,),
                                  {"_create_socket": _create_socket})
    return _QUICK_POOLS[base]


MAX_HEADER_BYTES = 64 * 1024
"""The most bytes of status line and headers an answer may have, as httpx (h11) allows
about 100 KB: geventhttpclient itself has no limit, and 50 MB of headers were read."""


class _HeaderCappedResponse(HTTPSocketPoolResponse):
    """geventhttpclient's pooled response, refusing headers over :data:`MAX_HEADER_BYTES`
    (bytes fed before the headers are complete; a parse error, so status 0)."""

    _header_bytes = 0

    def feed(self, data: str | bytes) -> None:
        if not self.headers_complete:
            self._header_bytes += len(data)
            if self._header_bytes > MAX_HEADER_BYTES + HTTPSocketPoolResponse.DEFAULT_BLOCK_SIZE:
                raise HTTPParseError(f"headers over {MAX_HEADER_BYTES} bytes")
        super().feed(data)


# geventhttpclient makes every response from this module global: only burst processes
# import this module, and every client in them should refuse endless headers.
geventhttpclient.client.HTTPSocketPoolResponse = _HeaderCappedResponse  # type: ignore[attr-defined]


_BEFORE_SENDING = (ConnectionRefusedError, socket.gaierror, ssl.SSLCertVerificationError)
"""Errors only a new connection's connect, name lookup or TLS handshake raise: no byte of
the request had left, so it bought nothing (``not_sent``, as the trial transport says)."""


class _Failed(Exception):
    """What Locust's statistics record as a failed request."""


class GeventTransport:
    """Keep-alive HTTP/1.1 for bursts: one geventhttpclient ``HTTPClient`` (its connection
    pool of ``concurrency`` sockets) per host.

    Why not Locust's ``FastHttpSession``, which wraps the same client: it skips the
    certificate check of https suppliers by default (``insecure=True``), where trials
    check it, and it sends its own headers. Here requests carry the trial transport's
    headers (httpx's defaults) and https suppliers are verified (certifi's bundle, or
    ``tls``), so a supplier is asked the same way in both modes. (Its layers were not
    what a worker's CPU goes to: 2.60-2.71 against 2.62-2.69 ms per order at 350/s, three
    alternating runs each of ``bench/burst_capacity.py --runs tb1 --at 350``.)

    Each request ends within ``timeout_s`` (a ``gevent.Timeout`` over connecting, sending,
    waiting and reading the body), its body is capped at ``max_body_bytes``, redirects are
    never followed and no cookie is kept. A POST is never retried on a new connection
    (geventhttpclient retries only idempotent methods after a broken send). An answer
    whose body did not come whole keeps its status with ``transport_error`` set and an
    empty body, and a refused connect or an untrusted certificate is ``not_sent``, as in
    the trial's transport. ``request_event`` (Locust's
    ``events.request``) gets each request for Locust's statistics; None: no statistics."""

    def __init__(self, timeout_s: float, concurrency: int = 1, *,
                 max_body_bytes: int = MAX_BODY_BYTES, request_event: Any = None,
                 tls: ssl.SSLContext | None = None) -> None:
        if max_body_bytes <= 0:
            raise ValueError(f"max_body_bytes must be positive, got {max_body_bytes}")
        self.timeout_s = timeout_s
        self.concurrency = concurrency
        self.max_body_bytes = max_body_bytes
        self.request_event = request_event
        self._tls = tls
        self._clients: dict[tuple[str, str, int], HTTPClient] = {}

    def _client(self, url: Target) -> HTTPClient:
        key = (url.scheme, url.host, url.port)
        client = self._clients.get(key)
        if client is None:
            tls = self._tls
            client = HTTPClient(
                key[1], key[2], ssl=key[0] == "https",
                ssl_context_factory=(lambda *_a, **_k: tls) if tls is not None else None,
                concurrency=self.concurrency, connection_timeout=self.timeout_s,
                network_timeout=self.timeout_s, block_size=READ_CHUNK)
            pool = client._connection_pool
            pool.__class__ = _quick_pool_class(type(pool))
            self._clients[key] = client
        return client

    def send(self, request: HttpRequest, name: str, *, timeout_s: float | None = None,
             max_body_bytes: int | None = None) -> HttpResponse:
        """One attempt, named ``name`` in Locust's statistics; never raises for the
        network or for what the supplier sends."""
        limit_s = timeout_s if timeout_s is not None else self.timeout_s
        cap = max_body_bytes if max_body_bytes is not None else self.max_body_bytes
        started_at, start = time.time(), time.perf_counter()

        def elapsed_ms() -> float:
            return (time.perf_counter() - start) * 1000

        def timed_out() -> bool:
            return elapsed_ms() >= limit_s * 1000 * 0.99

        deadline = gevent.Timeout(limit_s)
        deadline.start()
        try:
            try:
                url = target(request.url)
                content = request.body or b""
                client = self._client(url)
                reply = client.request(
                    request.method, url.raw_path.decode("ascii"), body=content,
                    headers={name.decode("latin-1"): value.decode("latin-1")
                             for name, value in request_headers(url, request, content)})
            except gevent.Timeout as fired:
                if fired is not deadline:
                    raise
                return self._record(request, name, started_at,
                                    HttpResponse(0, {}, b"", elapsed_ms(), "timeout"))
            except Exception as exc:  # refused, reset, unparsable: no answer, as data
                kind = "timeout" if timed_out() \
                    else f"{NOT_SENT}:ConnectError" if isinstance(exc, _BEFORE_SENDING) \
                    else f"connect_error:{type(exc).__name__}"
                return self._record(request, name, started_at,
                                    HttpResponse(0, {}, b"", elapsed_ms(), kind))
            status, headers = int(reply.status_code or 0), {}
            problem: str | None = None
            try:
                headers = _headers(reply.items())
                body = _read_body(reply, cap, headers)
            except gevent.Timeout as fired:
                if fired is not deadline:
                    raise
                body, problem = b"", "timeout"
            except BodyError as exc:
                body, problem = b"", exc.kind
            except Exception as exc:  # cut off mid-body, unparsable framing, ...
                body, problem = b"", "timeout" if timed_out() \
                    else f"body_error:{type(exc).__name__}"
            finally:
                reply.release()  # back to the pool if read whole, else the connection closes
            return self._record(request, name, started_at, HttpResponse(
                status, headers, body, elapsed_ms(), problem, time.time()))
        finally:
            deadline.cancel()

    def _record(self, request: HttpRequest, name: str, started_at: float,
                answer: HttpResponse) -> HttpResponse:
        """Hand the request to Locust's statistics, if they are kept; the answer."""
        if self.request_event is not None:
            ok = 200 <= answer.status < 300 and answer.transport_error is None
            self.request_event.fire(
                request_type=request.method, name=name, response_time=answer.elapsed_ms,
                response_length=len(answer.body), response=None, context={},
                exception=None if ok else _Failed(
                    answer.transport_error or f"HTTP {answer.status}"),
                start_time=started_at, url=request.url)
        return answer

    def close(self) -> None:
        for client in self._clients.values():
            with contextlib.suppress(Exception):
                client.close()
        self._clients.clear()


def _headers(items: Any) -> dict[str, str]:
    """Names lower-cased, a repeated header's values joined with ``, `` (as the trial's
    transport gives them)."""
    out: dict[str, str] = {}
    for name, value in items:
        key, text = str(name).lower(), str(value)
        out[key] = f"{out[key]}, {text}" if key in out else text
    return out


def _read_body(reply: Any, cap: int, headers: dict[str, str]) -> bytes:
    """The body of ``reply`` (a pooled response), read chunk by chunk up to ``cap``."""
    body = CappedBody(cap, headers.get("content-encoding"))
    body.expect(headers.get("content-length"))
    while True:
        chunk = reply.read(READ_CHUNK)
        if not chunk:
            return body.body()
        body.feed(chunk)


class PreciseWaker:
    """Wakes greenlets at a wall-clock time to about 0.1 ms, where ``gevent.sleep`` is a
    millisecond late.

    gevent's libev loop waits in ``epoll_wait``, whose timeout is whole milliseconds,
    rounded up: ``gevent.sleep`` woke 0.87 ms late at the median and 1.9 ms at p99 on this
    machine. A burst measures every latency from the order's intended start, so that
    lateness was in every figure. Here a greenlet sleeps with gevent until
    :data:`COARSE_S` before its time; then one native thread (an unpatched lock's timed
    wait: microseconds) wakes the hub through a libev async watcher when the earliest
    time is due. The thread only sleeps and signals; the hub sets the events. Without an
    async watcher it falls back to ``gevent.sleep``."""

    COARSE_S = 0.003

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, gevent.event.Event]] = []
        self._due: list[gevent.event.Event] = []
        self._order = itertools.count()
        self._closed = False
        self._watcher: Any = None
        allocate = gevent.monkey.get_original("_thread", "allocate_lock")
        self._guard = allocate()  # the heap and the due list, between the hub and the thread
        self._wake = allocate()  # released to cut the thread's wait short (an earlier time)
        self._wake.acquire()
        with contextlib.suppress(Exception):
            watcher = gevent.get_hub().loop.async_(ref=False)
            watcher.start(self._set_due)
            start_thread = gevent.monkey.get_original("_thread", "start_new_thread")
            start_thread(self._run, ())
            self._watcher = watcher

    def sleep_until(self, at: float) -> None:
        """Return once ``time.time() >= at`` (at once if it is past); never earlier."""
        delay = at - time.time()
        if self._watcher is None or self._closed:
            if delay > 0:
                gevent.sleep(delay)
            return
        if delay > self.COARSE_S:
            gevent.sleep(delay - self.COARSE_S)
        if time.time() >= at:
            return
        event = gevent.event.Event()
        with self._guard:
            queued = not self._closed
            if queued:
                heapq.heappush(self._heap, (at, next(self._order), event))
                first = self._heap[0][2] is event
        if queued:
            self._watcher.ref = True  # someone waits: the hub must not think none can wake it
            if first:
                self._interrupt()
            event.wait()
        rest = at - time.time()  # closed meanwhile (or before): gevent's own sleep
        if rest > 0:
            gevent.sleep(rest)

    def close(self) -> None:
        """End the thread; whoever still waits finishes with ``gevent.sleep``."""
        with self._guard:
            self._closed = True
        self._interrupt()

    def _interrupt(self) -> None:
        with contextlib.suppress(RuntimeError):  # already released: the thread will see it
            self._wake.release()

    def _run(self) -> None:  # the native thread
        while True:
            with self._guard:
                if self._closed:
                    self._due.extend(entry[2] for entry in self._heap)
                    self._heap.clear()
                now = time.time()
                while self._heap and self._heap[0][0] <= now:
                    self._due.append(heapq.heappop(self._heap)[2])
                due = bool(self._due)
                wait = self._heap[0][0] - now if self._heap else -1
                closed = self._closed
            if due:
                with contextlib.suppress(Exception):  # the hub is gone: nothing to wake
                    self._watcher.send()
            if closed:
                return
            self._wake.acquire(timeout=wait)

    def _set_due(self) -> None:  # in the hub
        with self._guard:
            due, self._due = self._due, []
            idle = not self._heap
        if idle:
            self._watcher.ref = False  # nobody waits: the hub may end without it
        for event in due:
            event.set()


def drive(transport: GeventTransport, steps: Steps[T], *, label: str,
          news: gevent.event.Event | None = None, first: HttpResponse | None = None) -> T:
    """Run ``steps`` to its end in this greenlet; its return value.

    ``first`` is the answer to the step already taken (a burst slot sends an order's first
    POST itself, then hands the rest of the order here). A ``Wait(news=True)`` ends early
    when ``news`` is set (the lifecycle's ``wake``)."""
    try:
        step = steps.send(first) if first is not None else next(steps)
        while True:
            if isinstance(step, Send):
                step = steps.send(transport.send(step.request, f"{label} {step.purpose}"))
                continue
            delay = step.until - time.time()
            if step.news and news is not None:
                news.clear()
                if delay > 0:
                    news.wait(delay)
            elif delay > 0:
                gevent.sleep(delay)
            step = steps.send(None)
    except StopIteration as stop:
        result: T = stop.value
        return result
