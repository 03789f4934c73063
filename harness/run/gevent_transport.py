"""The burst executor's I/O: Locust's gevent client, and the loop that drives a lifecycle.

Imports Locust (gevent): only the burst modules import this.

:func:`send_request` sends a driver's request through a ``FastHttpSession`` (so Locust's
own statistics and web UI see it, named ``"<supplier> <purpose>"``), never follows a
redirect, and never raises for the network: no answer is status 0 with
``transport_error`` set. :func:`drive` runs one lifecycle generator
(:mod:`harness.run.lifecycle`) in the calling greenlet.
"""

from __future__ import annotations

import time
from typing import Any, TypeVar, cast

import gevent
import gevent.event
from geventhttpclient.client import HTTPClientPool
from locust.contrib.fasthttp import FastHttpSession

from harness.drivers.base import HttpRequest, HttpResponse
from harness.run.async_transport import set_quickack
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
    """Make ``session``'s sockets acknowledge at once, as the trial's httpx client does,
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


def send_request(session: FastHttpSession, request: HttpRequest, name: str) -> HttpResponse:
    """Send a driver's request through Locust's gevent client; never raises for the network."""
    start = time.perf_counter()
    try:
        with session.request(request.method, request.url, name=name,
                             data=cast(Any, request.body or None), headers=dict(request.headers),
                             catch_response=True, allow_redirects=False) as reply:
            status = int(reply.status_code or 0)
            if status == 0:
                error = getattr(reply, "error", None)
                reply.failure(f"no answer: {type(error).__name__}")
                kind = "timeout" if isinstance(error, gevent.Timeout | TimeoutError) \
                    else f"connect_error:{type(error).__name__}"
                return HttpResponse(0, {}, b"", (time.perf_counter() - start) * 1000, kind)
            body = reply.content or b""
            headers = {str(k).lower(): str(v) for k, v in (reply.headers or {}).items()}
            if 200 <= status < 300:
                reply.success()
            else:
                reply.failure(f"HTTP {status}")
            return HttpResponse(status, headers, body, (time.perf_counter() - start) * 1000)
    except Exception as exc:  # a transport bug must be data, not a dead greenlet
        return HttpResponse(0, {}, b"", (time.perf_counter() - start) * 1000,
                            f"connect_error:{type(exc).__name__}")


def drive(session: FastHttpSession, steps: Steps[T], *, label: str,
          news: gevent.event.Event | None = None, first: HttpResponse | None = None) -> T:
    """Run ``steps`` to its end in this greenlet; its return value.

    ``first`` is the answer to the step already taken (a burst slot sends an order's first
    POST itself, then hands the rest of the order here). A ``Wait(news=True)`` ends early
    when ``news`` is set (the lifecycle's ``wake``)."""
    try:
        step = steps.send(first) if first is not None else next(steps)
        while True:
            if isinstance(step, Send):
                step = steps.send(send_request(session, step.request,
                                               f"{label} {step.purpose}"))
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
