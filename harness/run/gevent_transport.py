"""The burst executor's I/O: Locust's gevent client, and the loop that drives a lifecycle.

Imports Locust (gevent): only the burst modules import this.

:func:`send_request` sends a driver's request through a ``FastHttpSession`` (so Locust's
own statistics and web UI see it, named ``"<supplier> <purpose>"``), never follows a
redirect (:func:`harden`), ends each request within a total deadline, caps its body,
and never raises for the network: no answer is status 0 with ``transport_error`` set.
:func:`drive` runs one lifecycle generator (:mod:`harness.run.lifecycle`) in the calling
greenlet.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import time
from typing import Any, TypeVar, cast

import gevent
import gevent.event
import gevent.monkey
import geventhttpclient.client
from geventhttpclient.client import HTTPClientPool
from geventhttpclient.response import HTTPParseError, HTTPSocketPoolResponse
from locust.contrib.fasthttp import FastHttpSession

from harness.drivers.base import HttpRequest, HttpResponse
from harness.run.async_transport import (
    MAX_BODY_BYTES,
    NO_COMPRESSION,
    BodyError,
    CappedBody,
    set_quickack,
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
    if base not in _QUICK_POOLS:
        def _create_socket(self: Any) -> Any:
            return _QuickAckSocket(base._create_socket(self))  # type: ignore[attr-defined]
        _QUICK_POOLS[base] = type(f"QuickAck{base.__name__}", (base,),
                                  {"_create_socket": _create_socket})
    return _QUICK_POOLS[base]


class _QuickAckClientPool(HTTPClientPool):
    """geventhttpclient's client pool whose connection pools wrap each new socket."""

    def get_client(self, url: Any) -> Any:
        client = super().get_client(url)
        pool = getattr(client, "_connection_pool", None)
        if pool is not None and type(pool) not in _QUICK_POOLS.values():
            pool.__class__ = _quick_pool_class(type(pool))
        return client


def quick_ack(session: FastHttpSession) -> FastHttpSession:
    """Make ``session``'s sockets acknowledge at once, as the trial's transport does,
    so both modes measure the supplier's latency the same way.

    geventhttpclient has no public hook for its sockets: this swaps the session's client
    pool for one whose connection pools wrap each new socket (private attributes of
    geventhttpclient 2.x; if they change, the session is left as it is).
    """
    agent: Any = getattr(session, "client", None)
    pool = getattr(agent, "clientpool", None)
    if pool is not None and hasattr(pool, "client_args"):
        agent.clientpool = _QuickAckClientPool(**pool.client_args)
    return session


_ALL_STATUSES = frozenset(range(100, 1000))

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


def harden(session: FastHttpSession, *, max_body_bytes: int | None = None) -> FastHttpSession:
    """Make ``session`` safe for suppliers, once and for good: it never follows a redirect
    (not only per request: Locust's ``allow_redirects=False`` swaps a shared attribute
    for the time of one request, which concurrent greenlets race on), takes every status
    as an answer whose body this module reads itself (with its cap), and caps bodies at
    ``max_body_bytes`` (default: :data:`MAX_BODY_BYTES`, 1 MiB). It keeps no cookies, as
    the trial transport keeps none, so trials and bursts ask a supplier the same way (and
    the cookie jar's work, ~4% of a worker's CPU, leaves the hot path).

    :func:`send_request` hardens every session it is given; call this to set the cap."""
    agent: Any = session.client
    agent.max_redirects = 0
    agent.redirect_response_codes = frozenset()
    agent.valid_response_codes = _ALL_STATUSES
    agent.cookiejar = None
    if max_body_bytes is not None:
        if max_body_bytes <= 0:
            raise ValueError(f"max_body_bytes must be positive, got {max_body_bytes}")
        session.trialbench_max_body_bytes = max_body_bytes  # type: ignore[attr-defined]
    session.trialbench_hardened = True  # type: ignore[attr-defined]
    return session


def _network_timeout(session: FastHttpSession) -> float | None:
    """The session's own network timeout (the plan's ``request_timeout_s``)."""
    pool: Any = getattr(getattr(session, "client", None), "clientpool", None)
    args = getattr(pool, "client_args", None) or {}
    value = args.get("network_timeout")
    return float(value) if value else None


def _read_body(reply: Any, cap: int, headers: dict[str, str]) -> bytes:
    """The body of ``reply`` (a streamed response), read chunk by chunk up to ``cap``."""
    stream: Any = getattr(reply, "_response", None)
    body = CappedBody(cap, headers.get("content-encoding"))
    if stream is None:
        return b""
    try:
        body.expect(headers.get("content-length"))
        while True:
            chunk = stream.read(READ_CHUNK)
            if not chunk:
                return body.body()
            body.feed(chunk)
    finally:
        stream.release()  # back to the pool if read whole, else the connection is closed


READ_CHUNK = 64 * 1024


def send_request(session: FastHttpSession, request: HttpRequest, name: str, *,
                 timeout_s: float | None = None,
                 max_body_bytes: int | None = None) -> HttpResponse:
    """Send a driver's request through Locust's gevent client; never raises for the network
    or for what the supplier sends.

    The whole request (connecting, sending, waiting, reading the body) ends within
    ``timeout_s`` (default: the session's network timeout): a ``gevent.Timeout`` covers it
    all, not each read. The body is streamed and capped at ``max_body_bytes`` (default:
    the cap given to :func:`harden`, else 1 MiB). Redirects are never followed. As in
    the trial's transport, an answer whose body did not come whole keeps its status with
    ``transport_error`` set and an empty body."""
    if not getattr(session, "trialbench_hardened", False):
        harden(session)
    limit_s = timeout_s if timeout_s is not None else _network_timeout(session)
    cap = max_body_bytes if max_body_bytes is not None else getattr(
        session, "trialbench_max_body_bytes", MAX_BODY_BYTES)
    start = time.perf_counter()

    def elapsed_ms() -> float:
        return (time.perf_counter() - start) * 1000

    def timed_out() -> bool:
        return limit_s is not None and elapsed_ms() >= limit_s * 1000 * 0.99

    headers_out = {**NO_COMPRESSION, **dict(request.headers)}
    deadline = gevent.Timeout(limit_s) if limit_s is not None else None
    if deadline is not None:
        deadline.start()
    try:
        with session.request(request.method, request.url, name=name,
                             data=cast(Any, request.body or None), headers=headers_out,
                             catch_response=True, allow_redirects=False, stream=True,
                             max_redirects=0) as reply:
            status = int(reply.status_code or 0)
            if status == 0:
                error = getattr(reply, "error", None)
                reply.failure(f"no answer: {type(error).__name__}")
                original = getattr(error, "original", None)
                kind = "timeout" if timed_out() or isinstance(
                    error, gevent.Timeout | TimeoutError) or isinstance(
                    original, gevent.Timeout | TimeoutError) \
                    else f"connect_error:{type(error).__name__}"
                return HttpResponse(0, {}, b"", elapsed_ms(), kind)
            headers = {str(k).lower(): str(v) for k, v in (reply.headers or {}).items()}
            problem: str | None = None
            try:
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
            if 200 <= status < 300 and problem is None:
                reply.success()
            else:
                reply.failure(problem or f"HTTP {status}")
            return HttpResponse(status, headers, body, elapsed_ms(), problem, time.time())
    except gevent.Timeout as fired:
        if fired is not deadline:
            raise
        return HttpResponse(0, {}, b"", elapsed_ms(), "timeout")
    except Exception as exc:  # a transport bug must be data, not a dead greenlet
        kind = "timeout" if timed_out() else f"connect_error:{type(exc).__name__}"
        return HttpResponse(0, {}, b"", elapsed_ms(), kind)
    finally:
        if deadline is not None:
            deadline.cancel()


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


def drive(session: FastHttpSession, steps: Steps[T], *, label: str,
          news: gevent.event.Event | None = None, first: HttpResponse | None = None,
          max_body_bytes: int | None = None) -> T:
    """Run ``steps`` to its end in this greenlet; its return value.

    ``first`` is the answer to the step already taken (a burst slot sends an order's first
    POST itself, then hands the rest of the order here). A ``Wait(news=True)`` ends early
    when ``news`` is set (the lifecycle's ``wake``). ``max_body_bytes`` as in
    :func:`send_request`."""
    try:
        step = steps.send(first) if first is not None else next(steps)
        while True:
            if isinstance(step, Send):
                step = steps.send(send_request(session, step.request,
                                               f"{label} {step.purpose}",
                                               max_body_bytes=max_body_bytes))
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
